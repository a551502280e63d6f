"""PostgreSQL's data outlives its instance: its own encrypted volume, kept on termination and
attached again to the replacement; db hosts resist stray terminate calls, and provisioning
asks before it stops or terminates one."""

from __future__ import annotations

import io
from typing import Any

import pytest
from botocore.exceptions import ClientError
from rich.console import Console

from mahaops.aws.ec2 import DATA_DEVICE
from mahaops.aws.inventory import hosts
from mahaops.aws.plan import ProvisionError
from mahaops.aws.provision import provision


def _db(aws: Any) -> dict[str, Any]:
    filters = [
        {"Name": "tag:Environment", "Values": ["qa"]},
        {"Name": "tag:Role", "Values": ["db"]},
        {"Name": "instance-state-name", "Values": ["running", "stopped"]},
    ]
    reservations = aws.client("ec2").describe_instances(Filters=filters)["Reservations"]
    (instance,) = [i for r in reservations for i in r["Instances"]]
    return instance


def _data_volume(aws: Any) -> dict[str, Any]:
    volumes = aws.client("ec2").describe_volumes(
        Filters=[{"Name": "tag:Name", "Values": ["maha-qa-db-1-data"]}]
    )["Volumes"]
    assert len(volumes) == 1, volumes
    return volumes[0]


def _provision(aws: Any, group_data: Any, **kw: Any) -> Any:
    quiet = Console(file=io.StringIO())
    return provision("qa", session=aws, group_data=group_data, console=quiet, **kw)


def test_db_data_lives_on_its_own_encrypted_volume_kept_on_termination(
    aws, provision_qa, write_group_data
):
    provision_qa(db_data_gb=120)
    db = _db(aws)
    volume = _data_volume(aws)
    assert (volume["Encrypted"], volume["VolumeType"], volume["Size"]) == (True, "gp3", 120)
    (attachment,) = volume["Attachments"]
    assert attachment["InstanceId"] == db["InstanceId"]
    assert attachment["Device"] == DATA_DEVICE
    (mapping,) = [m for m in _db(aws)["BlockDeviceMappings"] if m["DeviceName"] == DATA_DEVICE]
    assert mapping["Ebs"]["DeleteOnTermination"] is False
    tags = {t["Key"]: t["Value"] for t in volume["Tags"]}
    assert (tags["Environment"], tags["Role"]) == ("qa", "db")
    # The db role mounts it: the inventory tells the host which volume holds its data.
    (db_host,) = [
        h
        for h in hosts("qa", session=aws, group_data=write_group_data())
        if h.name.endswith("db-1")
    ]
    assert db_host.data["ebs_data_volume_id"] == volume["VolumeId"]


def test_db_hosts_carry_termination_protection_and_existing_ones_get_it(aws, provision_qa):
    provision_qa()
    ec2 = aws.client("ec2")
    db_id = _db(aws)["InstanceId"]

    def protected() -> bool:
        answer = ec2.describe_instance_attribute(
            InstanceId=db_id, Attribute="disableApiTermination"
        )
        return bool(answer["DisableApiTermination"]["Value"])

    assert protected()
    with pytest.raises(ClientError, match="OperationNotPermitted"):
        ec2.terminate_instances(InstanceIds=[db_id])
    ec2.modify_instance_attribute(InstanceId=db_id, DisableApiTermination={"Value": False})
    plan = provision_qa().plan
    assert protected(), "a db host made before (or changed by hand) is protected again"
    assert ("maha-qa-db-1", "update", "termination protection on") in {
        (c.name, c.action, c.detail) for c in plan
    }


def _lose_db(aws: Any) -> tuple[dict[str, Any], str]:
    """The db instance terminated by hand (its protection lifted first): the instance as it
    was, and its data volume's id."""
    old = _db(aws)
    volume_id = _data_volume(aws)["VolumeId"]
    ec2 = aws.client("ec2")
    ec2.modify_instance_attribute(
        InstanceId=old["InstanceId"], DisableApiTermination={"Value": False}
    )
    ec2.terminate_instances(InstanceIds=[old["InstanceId"]])
    return old, str(volume_id)


def test_a_replacement_db_instance_gets_the_kept_data_volume_again(
    aws, provision_qa, write_group_data
):
    provision_qa()
    old, volume_id = _lose_db(aws)

    result = provision_qa()

    new = _db(aws)
    assert new["InstanceId"] != old["InstanceId"]
    volume = _data_volume(aws)
    assert volume["VolumeId"] == volume_id, "the same volume, not a new empty one"
    assert [a["InstanceId"] for a in volume["Attachments"]] == [new["InstanceId"]]
    assert new["Placement"]["AvailabilityZone"] == volume["AvailabilityZone"]
    rows = {(c.kind, c.name): c.action for c in result.plan}
    assert rows[("EBS data volume", "maha-qa-db-1-data")] == "update"


def test_a_db_instance_lost_after_a_replace_comes_back_under_its_volumes_name(aws, provision_qa):
    # `invoke replace` moved the data to maha-qa-db-2 (the volume renamed with it); that
    # instance is then lost. Provisioning brings back db-2, not a db-1 on a new empty volume.
    provision_qa()
    _old, volume_id = _lose_db(aws)
    name = [{"Key": "Name", "Value": "maha-qa-db-2-data"}]
    aws.client("ec2").create_tags(Resources=[volume_id], Tags=name)

    result = provision_qa()

    new = _db(aws)
    assert {t["Key"]: t["Value"] for t in new["Tags"]}["Name"] == "maha-qa-db-2"
    volumes = aws.client("ec2").describe_volumes(
        Filters=[{"Name": "tag:Purpose", "Values": ["data"]}]
    )["Volumes"]
    assert [v["VolumeId"] for v in volumes] == [volume_id], "no new empty volume"
    assert [a["InstanceId"] for a in volumes[0]["Attachments"]] == [new["InstanceId"]]
    rows = {(c.kind, c.name): c.action for c in result.plan}
    assert rows[("EBS data volume", "maha-qa-db-2-data")] == "update"


def test_provision_asks_before_terminating_a_db_host_and_stops_on_no(aws, write_group_data):
    _provision(aws, write_group_data())
    db = _db(aws)
    fewer = write_group_data(roles={"db": {"count": 1, "instance_type": "t3.large"}})
    asked: list[str] = []

    def no(what: str) -> bool:
        asked.append(what)
        return False

    with pytest.raises(ProvisionError, match="not confirmed: stop db host maha-qa-db-1"):
        _provision(aws, fewer, confirm=no)
    assert len(asked) == 1
    assert _db(aws)["InstanceType"] == db["InstanceType"]
    assert _db(aws)["State"]["Name"] == "running"

    _provision(aws, fewer, yes=True)
    assert _db(aws)["InstanceType"] == "t3.large"


def test_a_dry_run_shows_the_db_termination_without_asking(aws, provision_qa, write_group_data):
    provision_qa(roles={"db": {"count": 2}})
    plan = provision_qa(dry=True, roles={"db": {"count": 1}}).plan
    rows = {(c.kind, c.name): (c.action, c.detail) for c in plan}
    action, detail = rows[("EC2 instance", "maha-qa-db-2")]
    assert action == "delete" and "data volume is kept" in detail
