"""First contact with a fresh instance, on a real test-bed host shaped like Debian's AMI:
its only login is ``admin`` with the operator's key. The base role hands the host over to
the deploy user before its hardened sshd refuses ``admin``; settings that would lock every
later run out are refused before the host is touched."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops.hosts import HostSpec
from mahaops.local import keys
from mahaops.local.hosts import LocalHost
from mahaops.runner import run_deploy
from tests.checks import base as checks
from tests.conftest import Testbed

pytestmark = pytest.mark.testbed

FINGERPRINTS = "md5sum /etc/ssh/sshd_config; getent passwd maha || echo no-maha"


def _ami_like(testbed: Testbed, name: str) -> LocalHost:
    """A host as Debian's AMI boots: ``admin`` with the EC2 key pair, no deploy user."""
    host = testbed.host("base", name=name)
    key = keys.public_key(testbed.env)
    testbed.exec(
        host,
        "useradd --create-home --shell /bin/bash admin"
        " && install -d -m 700 -o admin -g admin /home/admin/.ssh"
        f" && printf '%s\\n' '{key}' > /home/admin/.ssh/authorized_keys"
        " && chown admin: /home/admin/.ssh/authorized_keys"
        " && echo 'admin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users"
        " && userdel --remove maha && rm -f /etc/sudoers.d/90-maha",
    )
    return host


def _as(host: LocalHost, user: str, **data: object) -> HostSpec:
    spec = host.spec()
    return HostSpec(spec.name, spec.groups, {**spec.data, "ssh_user": user, **data})


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    """A moto server on 127.0.0.1: the hand-over's EC2 tag is written from the runner."""
    import socket

    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def test_first_contact_as_admin_hands_over_and_the_next_run_logs_in_as_the_deploy_user(
    testbed: Testbed, moto_endpoint: str
) -> None:
    import boto3

    from .conftest import DEBIAN_NEWEST, FAKE_AWS_ENV

    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="eu-west-1")
    instance_id = ec2.run_instances(ImageId=DEBIAN_NEWEST, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    host = _ami_like(testbed, "ami-1")
    operator_key = keys.public_key(testbed.env)
    first_contact = _as(
        host,
        "admin",
        base_deploy_user_keys=[operator_key],
        instance_id=instance_id,
        aws_env="staging",  # group_data/aws.py's own: its region and profile
    )

    first = run_deploy(
        testbed.env,
        roles=["base"],
        hosts=[first_contact],
        extra_env={**FAKE_AWS_ENV, "AWS_ENDPOINT_URL": moto_endpoint, "NO_PROXY": "127.0.0.1"},
    )
    assert first.ok, first.output
    assert any("sshd admits maha" in op.name for op in first.changed), [
        op.name for op in first.changed
    ]
    # recorded on the instance, where the inventory reads whom to log in as next time
    described = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    tags = {t["Key"]: t["Value"] for t in described["Instances"][0].get("Tags", [])}
    assert tags.get("DeployUser") == "maha"

    key = str(keys.deploy_key(testbed.env))
    assert checks.login_refused(host, "admin", key_filename=key), "admin is no longer admitted"
    second = run_deploy(testbed.env, roles=["base"], hosts=[_as(host, "maha")])
    assert second.ok, second.output
    assert not second.changed, [op.name for op in second.changed]


def test_first_contact_without_the_operators_key_is_refused_before_the_host_changes(
    testbed: Testbed,
) -> None:
    host = _ami_like(testbed, "ami-2")
    before = testbed.exec(host, FINGERPRINTS)

    result = run_deploy(testbed.env, roles=["base"], hosts=[_as(host, "admin")])

    assert not result.ok
    assert "base_deploy_user_keys is empty" in result.output, result.output
    assert testbed.exec(host, FINGERPRINTS) == before
    assert not checks.login_refused(
        host, "admin", key_filename=str(keys.deploy_key(testbed.env))
    ), "admin still gets in"


def test_an_empty_admin_cidrs_is_refused_naming_file_and_key_before_the_host_changes(
    testbed: Testbed, tmp_path: Path
) -> None:
    host = _ami_like(testbed, "ami-3")
    before = testbed.exec(host, FINGERPRINTS)
    group_data = tmp_path / "group_data"
    shutil.copytree(PROJECT_ROOT / "group_data", group_data)
    with (group_data / "local.py").open("a") as f:
        f.write("\nbase_admin_cidrs = []\n")
    operator_key = keys.public_key(testbed.env)

    result = run_deploy(
        testbed.env,
        roles=["base"],
        group_data=group_data,
        hosts=[_as(host, "admin", base_deploy_user_keys=[operator_key])],
    )

    assert not result.ok
    assert "local.py" in result.output and "base_admin_cidrs" in result.output, result.output
    assert "lock" in result.output
    assert testbed.exec(host, FINGERPRINTS) == before


def test_a_db_data_volume_on_a_container_host_is_left_alone(testbed: Testbed) -> None:
    # The AWS stand-in's instances are containers: moto attaches the data volume, but no
    # block device exists, so the db role says so and goes on (a real instance mounts it).
    host = testbed.host("db", name="sim-db-1")
    spec = host.spec()
    data = {**spec.data, "ebs_data_volume_id": "vol-0123456789abcdef0"}
    plan = run_deploy(
        testbed.env, roles=["db"], dry=True, hosts=[HostSpec(spec.name, spec.groups, data)]
    )
    assert plan.ok, plan.output
    (mount,) = [op for op in plan.operations if "EBS volume" in op.name]
    assert mount.status == "unchanged", mount
