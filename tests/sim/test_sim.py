"""The AWS stand-in (docs/sim.md): EC2 instances on its moto server become real hosts.

One server for the package (tests/sim/conftest.py, which also orders the tests that
share its sim environment), in a MAHA_HOME of its own; instances are launched through
the same boto3 session provisioning uses (profile ``maha-sim``), and the hosts are
reached over SSH at their public addresses with the key pair, as on AWS.
"""

from __future__ import annotations

import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import docker
import pytest

from mahaops import PROJECT_ROOT, tls
from mahaops.aws.inventory import hosts as inventory_hosts
from mahaops.aws.session import make_session
from mahaops.secrets import LocalSecretStore
from mahaops.settings import DEFAULT_GROUP_DATA
from mahaops.sim import LABEL_ENV, SIM_PROFILE, SimError, server, sim_home
from mahaops.sim.alb import listeners
from mahaops.sim.hosts import container_name
from mahaops.sim.networks import kernel_routes

REGION = "eu-west-1"
DEBIAN_AMI = "ami-0d3b12a2f3c4e5d60"  # mahaops/sim/debian-amis.json
T = TypeVar("T")


def _until(check: Callable[[], T | None], what: str, timeout: float = 120.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture(scope="module")
def ec2(sim: server.Server) -> Any:
    return make_session(REGION, SIM_PROFILE).client("ec2")


@pytest.fixture(scope="module")
def subnet(ec2: Any) -> str:
    # Beside the sim environment's own subnets (10.213.0.0/20 and the next three /20s).
    vpc = ec2.create_vpc(CidrBlock="10.213.0.0/16")["Vpc"]["VpcId"]
    return str(ec2.create_subnet(VpcId=vpc, CidrBlock="10.213.128.0/24")["Subnet"]["SubnetId"])


@pytest.fixture(scope="module")
def key_pair(ec2: Any, homes: Path) -> Path:
    private = homes / "home/.ssh/maha-sim"
    ec2.import_key_pair(
        KeyName="maha-test", PublicKeyMaterial=private.with_suffix(".pub").read_bytes()
    )
    return private


def _launch(ec2: Any, subnet: str, name: str, user_data: str = "") -> dict[str, Any]:
    reservation = ec2.run_instances(
        ImageId=DEBIAN_AMI,
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        KeyName="maha-test",
        UserData=user_data,
        NetworkInterfaces=[
            {"DeviceIndex": 0, "SubnetId": subnet, "AssociatePublicIpAddress": True}
        ],
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": name}]}],
    )
    return dict(reservation["Instances"][0])


def _ssh(key: Path, address: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", f"admin@{address}", command,
        ],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def _container(instance_id: str) -> Any:
    try:
        return docker.from_env().containers.get(container_name(instance_id))
    except docker.errors.NotFound:
        return None


def test_a_running_instance_becomes_a_host_admin_reaches_with_the_key_pair(
    ec2: Any, subnet: str, key_pair: Path
) -> None:
    user_data = '#!/bin/sh\necho "user data ran as $(id -un)" > /var/tmp/first-boot\n'
    instance = _launch(ec2, subnet, "sim-test-web", user_data)
    public, private = instance["PublicIpAddress"], instance["PrivateIpAddress"]

    def first_boot_file() -> subprocess.CompletedProcess[str] | None:
        result = _ssh(key_pair, public, "cat /var/tmp/first-boot")
        return result if result.returncode == 0 else None

    done = _until(first_boot_file, f"SSH as admin to {public} and the UserData's file")
    assert done.stdout.strip() == "user data ran as root"
    inside = _ssh(key_pair, public, "hostname; hostname -I; sudo -n id -u; id maha || true")
    lines = inside.stdout.split("\n")
    assert lines[0] == "sim-test-web"
    assert private in lines[1].split()  # at the address EC2 gave it
    assert lines[2] == "0"  # admin has sudo without a password, as on Debian's AMIs
    assert "no such user" in inside.stderr  # no deploy user yet: the base role makes it
    refused = subprocess.run(
        ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null", "-o", "IdentitiesOnly=yes",
         "-i", "/dev/null", f"admin@{public}", "true"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert refused.returncode == 255  # without the key pair's key: no way in


def test_stopped_and_terminated_instances_stop_and_lose_their_hosts(
    ec2: Any, subnet: str, key_pair: Path
) -> None:
    instance = _launch(ec2, subnet, "sim-test-leaving")
    instance_id = instance["InstanceId"]
    _until(lambda: (c := _container(instance_id)) and c.status == "running", "the host")

    ec2.stop_instances(InstanceIds=[instance_id])
    _until(lambda: (c := _container(instance_id)) and c.status == "exited", "the host stopped")
    ec2.terminate_instances(InstanceIds=[instance_id])
    _until(lambda: _container(instance_id) is None, "the host removed", timeout=60)
    assert _ssh(key_pair, instance["PublicIpAddress"], "true").returncode == 255


def _sim_hosts(sparse: bool = False) -> list[Any]:
    """The sim environment's host containers; ``sparse``: listed without inspecting each
    (no labels then), which cannot fail for one removed between the list and the inspect."""
    return list(
        docker.from_env().containers.list(
            all=True, sparse=sparse, filters={"label": [f"{LABEL_ENV}=sim"]}
        )
    )


def test_provisioning_the_sim_environment_makes_its_hosts(
    provisioned: subprocess.CompletedProcess[str],
) -> None:
    """The operator's path, unchanged: invoke provision (the package's `provisioned`, which
    test_sim_lifecycle.py goes on to deploy) and the AWS inventory."""
    assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr

    # provision waited for instance_running, which the stand-in says once a host booted.
    hosts = _sim_hosts()
    assert sorted(c.labels["maha.sim.name"] for c in hosts) == [
        f"maha-sim-{role}-1" for role in ("app", "cache", "db", "log", "worker")
    ]
    assert all(c.status == "running" for c in hosts)
    found = inventory_hosts("sim")
    assert len(found) == 5
    db = next(h for h in found if "db_servers" in h.groups)
    assert db.data["ssh_user"] == "admin"
    login = _ssh(Path(db.data["ssh_key"]), db.data["ssh_hostname"], "hostname")
    assert login.stdout.strip() == "maha-sim-db-1", login.stderr


def test_teardown_removes_the_sim_environment_and_its_hosts(
    provisioned: subprocess.CompletedProcess[str],
) -> None:
    """invoke teardown, on the environment the package's other tests used (provisioned,
    then trimmed, deployed and scaled by test_sim_lifecycle.py): it runs after all of them
    (tests/sim/conftest.py)."""
    assert _sim_hosts(), "no sim environment to tear down"
    torn_down = _invoke("teardown", "--env", "sim", "--yes")
    assert torn_down.returncode == 0, torn_down.stdout + torn_down.stderr
    # Polled while teardown removes them: sparse, or a host gone mid-listing fails the poll.
    _until(lambda: not _sim_hosts(sparse=True), "the sim environment's hosts removed", timeout=60)
    _until(
        lambda: not docker.from_env().networks.list(filters={"label": [f"{LABEL_ENV}=sim"]}),
        "its subnets' networks removed",
        timeout=30,
    )
    session = make_session(REGION, SIM_PROFILE)
    sim_ec2: Any = session.client("ec2")
    tagged = [{"Name": "tag:Environment", "Values": ["sim"]}]
    assert not sim_ec2.describe_vpcs(Filters=tagged)["Vpcs"]
    assert not sim_ec2.describe_instances(
        Filters=[*tagged, {"Name": "instance-state-name", "Values": ["pending", "running"]}]
    )["Reservations"]
    balancers = session.client("elbv2").describe_load_balancers()["LoadBalancers"]
    assert not [b for b in balancers if b["LoadBalancerName"].startswith("maha-sim")]
    buckets = session.client("s3").list_buckets()["Buckets"]
    assert not [b["Name"] for b in buckets if b["Name"].startswith("maha-sim-")]


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _https_get(port: int, path: str, ca: str) -> tuple[int, str]:
    context = ssl.create_default_context(cadata=ca)
    url = f"https://localhost:{port}{path}"
    with urllib.request.urlopen(url, timeout=10, context=context) as response:
        return response.status, response.read().decode()


def test_the_load_balancer_forwards_to_healthy_targets_and_reports_their_health(
    ec2: Any, subnet: str, key_pair: Path, tmp_path: Path
) -> None:
    elbv2 = make_session(REGION, SIM_PROFILE).client("elbv2")
    vpc = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
    other = ec2.create_subnet(
        VpcId=vpc, CidrBlock="10.213.129.0/24", AvailabilityZone=f"{REGION}b"
    )["Subnet"]["SubnetId"]
    group = elbv2.create_target_group(
        Name="sim-test", Protocol="HTTP", Port=8080, VpcId=vpc, TargetType="instance",
        HealthCheckPath="/health", HealthCheckIntervalSeconds=5, HealthCheckTimeoutSeconds=2,
        HealthyThresholdCount=2, UnhealthyThresholdCount=2,
    )["TargetGroups"][0]["TargetGroupArn"]  # fmt: skip
    balancer = elbv2.create_load_balancer(Name="sim-test", Subnets=[subnet, other])[
        "LoadBalancers"
    ][0]
    elbv2.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP", Port=80,
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
    )  # fmt: skip
    # HTTPS ends at the listener with its ACM certificate (imported here: a requested one
    # waits for DNS validation), then plain HTTP to the target as on the ALB.
    store = LocalSecretStore("simtls", path=tmp_path / "secrets.json")
    ca_cert, _ = tls.ca(store)
    issued = tls.server_certificate(store, "alb", ["localhost"], 30, 7)
    certificate = make_session(REGION, SIM_PROFILE).client("acm").import_certificate(
        Certificate=issued.cert.encode(), PrivateKey=issued.key.encode(),
        CertificateChain=ca_cert.encode(),
    )["CertificateArn"]  # fmt: skip
    elbv2.create_listener(
        LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTPS", Port=443,
        Certificates=[{"CertificateArn": certificate}],
        DefaultActions=[{"Type": "forward", "TargetGroupArn": group}],
    )  # fmt: skip
    web = "#!/bin/sh\nmkdir -p /srv/www && echo ok > /srv/www/health && cd /srv/www\n"
    instance = _launch(ec2, subnet, "sim-test-app", web + "exec python3 -m http.server 8080\n")
    instance_id, public = instance["InstanceId"], instance["PublicIpAddress"]
    ec2.get_waiter("instance_running").wait(
        InstanceIds=[instance_id], WaiterConfig={"Delay": 2, "MaxAttempts": 60}
    )

    def health() -> str:
        found = elbv2.describe_target_health(TargetGroupArn=group, Targets=[{"Id": instance_id}])
        return str(found["TargetHealthDescriptions"][0]["TargetHealth"]["State"])

    elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": instance_id}])
    _until(lambda: health() == "healthy", "the target healthy", timeout=90)
    port = listeners(sim_home())[f"{balancer['DNSName']}:80"]
    assert _get(port, "/health") == (200, "ok\n")
    secure = listeners(sim_home())[f"{balancer['DNSName']}:443"]
    _until(
        lambda: _https_get(secure, "/health", ca_cert) == (200, "ok\n"),
        "HTTPS through the listener, trusting the certificate's CA",
        timeout=10,
    )
    with pytest.raises(urllib.error.URLError):  # and nobody else's
        _https_get(secure, "/health", tls.ca(LocalSecretStore("other", tmp_path / "o.json"))[0])

    stopped = _ssh(key_pair, public, "sudo systemctl stop sim-user-data")
    assert stopped.returncode == 0, stopped.stderr
    _until(lambda: health() == "unhealthy", "the target unhealthy", timeout=60)
    assert _get(port, "/health")[0] == 503  # no healthy target left

    elbv2.deregister_targets(TargetGroupArn=group, Targets=[{"Id": instance_id}])
    _until(lambda: health() == "draining", "the target draining", timeout=10)
    ec2.terminate_instances(InstanceIds=[instance_id])


def _invoke(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), *args],
        cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _group_data_with(tmp_path: Path, old: str, new: str) -> Path:
    copy = tmp_path / "group_data"
    shutil.copytree(DEFAULT_GROUP_DATA, copy)
    text = (copy / "aws.py").read_text()
    assert old in text
    (copy / "aws.py").write_text(text.replace(old, new))
    return copy


def test_a_sim_vpc_overlapping_a_network_of_this_machine_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAHA_HOME", str(tmp_path / "maha-home"))
    taken = kernel_routes()[0][0]  # a network this machine routes (a bridge, the LAN)
    group_data = _group_data_with(tmp_path, '"10.213.0.0/16"', f'"{taken}"')

    with pytest.raises(SimError) as refused:
        server.start(group_data)

    message = str(refused.value)
    assert f"group_data/aws.py: aws_environments.sim.vpc_cidr: {taken} overlaps" in message
    assert server.read_state() is None  # no server was started


def test_a_server_that_died_is_said_lost_not_replaced_by_an_empty_one(
    sim: server.Server,
) -> None:
    """Last (tests/sim/conftest.py): it kills the package's server."""
    os.kill(sim.pid, signal.SIGKILL)
    _until(lambda: server.running() is None, "the server gone", timeout=10)

    with pytest.raises(SimError, match="moto keeps them in memory only"):
        server.ensure_server()
    with pytest.raises(SimError, match="is gone"):
        make_session(REGION, SIM_PROFILE)  # provisioning and the inventory hear it too
    assert server.stop() == sim  # `invoke sim.down` acknowledges it
    assert server.read_state() is None
