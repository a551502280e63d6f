"""Instances per role: Debian 12 looked up, encrypted gp3, IMDSv2, tagged, never duplicated."""

from __future__ import annotations

import io

import boto3
from botocore.stub import Stubber
from rich.console import Console

from mahaops.aws.config import load_environment
from mahaops.aws.ec2 import find_debian_ami
from mahaops.aws.plan import Context
from mahaops.aws.session import Clients

from .conftest import DEBIAN_NEWEST, REGION


def _instances(aws, role=None):
    filters = [
        {"Name": "tag:Environment", "Values": ["qa"]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    if role:
        filters.append({"Name": "tag:Role", "Values": [role]})
    reservations = aws.client("ec2").describe_instances(Filters=filters)["Reservations"]
    return [i for r in reservations for i in r["Instances"]]


def _tags(resource):
    return {t["Key"]: t["Value"] for t in resource["Tags"]}


def test_each_role_gets_its_count_of_tagged_debian_instances(aws, provision_qa):
    provision_qa()
    instances = _instances(aws)
    names = sorted(_tags(i)["Name"] for i in instances)
    assert names == [
        "maha-qa-app-1",
        "maha-qa-app-2",
        "maha-qa-cache-1",
        "maha-qa-db-1",
        "maha-qa-log-1",
        "maha-qa-worker-1",
    ]
    for instance in instances:
        tags = _tags(instance)
        assert tags["Project"] == "maha" and tags["Environment"] == "qa"
        assert tags["Name"].startswith(f"maha-qa-{tags['Role']}-")
        assert instance["ImageId"] == DEBIAN_NEWEST  # the newest of Debian's two images
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert instance["KeyName"] == "maha-qa"


def test_root_volumes_are_encrypted_gp3_of_the_described_size(aws, provision_qa):
    provision_qa(roles={"db": {"count": 1, "disk_gb": 80}})
    db = _instances(aws, "db")[0]
    volume_id = db["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    volume = aws.client("ec2").describe_volumes(VolumeIds=[volume_id])["Volumes"][0]
    assert (volume["VolumeType"], volume["Encrypted"], volume["Size"]) == ("gp3", True, 80)


def _root_size(aws, role):
    instance = _instances(aws, role)[0]
    volume_id = instance["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    return instance["InstanceId"], aws.client("ec2").describe_volumes(VolumeIds=[volume_id])[
        "Volumes"
    ][0]["Size"]


def test_a_larger_disk_grows_the_root_volume_in_place_and_a_smaller_one_is_refused(
    aws, provision_qa
):
    provision_qa(roles={"db": {"count": 1, "disk_gb": 50}})
    before, _ = _root_size(aws, "db")

    grown = provision_qa(roles={"db": {"count": 1, "disk_gb": 80}})
    change = next(c for c in grown.plan if c.kind == "EBS root volume" and "db" in c.name)
    assert (change.action, change.detail) == ("update", "50 GB → 80 GB, online")
    assert _root_size(aws, "db") == (before, 80)  # the same instance, its volume grown

    shrunk = provision_qa(roles={"db": {"count": 1, "disk_gb": 40}})
    change = next(c for c in shrunk.plan if c.kind == "EBS root volume" and "db" in c.name)
    assert change.action == "no change" and "cannot shrink" in change.detail
    assert _root_size(aws, "db") == (before, 80)
    assert not provision_qa(roles={"db": {"count": 1, "disk_gb": 80}}).plan.changed


def test_only_app_servers_and_workers_wear_the_uploads_role(aws, provision_qa):
    provision_qa()
    for instance in _instances(aws):
        role = _tags(instance)["Role"]
        profile = instance.get("IamInstanceProfile", {}).get("Arn", "")
        assert profile.endswith("/maha-qa-app") == (role in ("app", "worker"))
    policy = aws.client("iam").get_role_policy(RoleName="maha-qa-app", PolicyName="uploads")[
        "PolicyDocument"
    ]
    resources = {
        r
        for s in policy["Statement"]
        for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"])
    }
    assert resources == {
        "arn:aws:s3:::maha-qa-uploads-123456789012",
        "arn:aws:s3:::maha-qa-uploads-123456789012/*",
    }


def test_lowering_a_count_terminates_the_highest_numbered(aws, provision_qa):
    provision_qa()
    result = provision_qa(roles={"app": {"count": 1}})
    deleted = [c.name for c in result.plan if c.action == "delete"]
    assert deleted == ["maha-qa-app-2"]
    assert [_tags(i)["Name"] for i in _instances(aws, "app")] == ["maha-qa-app-1"]


def test_changing_an_instance_type_resizes_in_place(aws, provision_qa):
    provision_qa()
    before = _instances(aws, "cache")[0]["InstanceId"]
    result = provision_qa(roles={"cache": {"count": 1, "instance_type": "t3.large"}})
    change = next(
        c for c in result.plan if c.kind == "EC2 instance" and c.name == "maha-qa-cache-1"
    )
    assert change.action == "update" and "t3.large" in change.detail
    after = _instances(aws, "cache")[0]
    assert (after["InstanceId"], after["InstanceType"]) == (before, "t3.large")


def test_a_pinned_ami_is_used_as_is(aws, provision_qa):
    provision_qa(ami_id="ami-0a1b2c3d4e5f60718")
    assert {i["ImageId"] for i in _instances(aws)} == {"ami-0a1b2c3d4e5f60718"}


def test_debians_ssm_parameter_is_asked_first(write_group_data):
    loaded = load_environment("qa", write_group_data())
    session = boto3.Session(region_name=REGION)
    clients = Clients(session)
    ctx = Context("qa", loaded.spec, loaded.settings, clients, console=Console(file=io.StringIO()))
    with Stubber(clients.ssm) as ssm, Stubber(clients.ec2) as ec2:
        ssm.add_response(
            "get_parameter",
            {
                "Parameter": {
                    "Name": loaded.settings.aws_ami_ssm_parameter,
                    "Value": "ami-0123456789abcdef0",
                }
            },
            {"Name": "/aws/service/debian/release/12/latest/amd64"},
        )
        ec2.add_response(
            "describe_images",
            {
                "Images": [
                    {
                        "ImageId": "ami-0123456789abcdef0",
                        "Name": "debian-12-amd64-x",
                        "RootDeviceName": "/dev/xvda",
                    }
                ]
            },
            {"ImageIds": ["ami-0123456789abcdef0"]},
        )
        assert find_debian_ami(ctx) == ("ami-0123456789abcdef0", "/dev/xvda")
        ssm.assert_no_pending_responses()


def test_ssm_access_without_an_agent_to_install_is_refused_before_any_call(provision_qa, calls):
    import pytest

    from mahaops.settings import SettingsError

    with pytest.raises(SettingsError) as caught:
        provision_qa(access="ssm", admin_cidrs=[])
    assert calls.all() == []
    assert "qa.access" in caught.value.message and "SSM agent" in caught.value.message


def test_ssm_hosts_install_the_pinned_agent_checksum_first(aws, provision_qa, monkeypatch):
    import base64
    import subprocess

    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # AmazonSSMManagedInstanceCore
    sha = "ab" * 32
    provision_qa(access="ssm", admin_cidrs=[], ssm_agent_version="3.3.1142.0", ssm_agent_sha256=sha)
    instance = _instances(aws, "cache")[0]
    raw = aws.client("ec2").describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="userData"
    )["UserData"]["Value"]
    script = base64.b64decode(raw).decode()
    url = (
        "https://s3.eu-west-1.amazonaws.com/amazon-ssm-eu-west-1/3.3.1142.0"
        "/debian_amd64/amazon-ssm-agent.deb"
    )
    assert url in script
    lines = script.splitlines()
    check = next(i for i, line in enumerate(lines) if "sha256sum -c" in line)
    install = next(i for i, line in enumerate(lines) if line.startswith("dpkg -i"))
    assert sha in lines[check] and check < install and lines[2] == "set -eu"
    subprocess.run(["sh", "-n"], input=script, text=True, check=True)
