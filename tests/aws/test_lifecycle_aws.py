"""``invoke scale``/``replace``/``remove`` on AWS (moto): the count a scale sets is kept where
``invoke provision`` reads it, provision keeps the instances' names, and the lifecycle's
plan and launches are provisioning's own."""

from __future__ import annotations

from typing import Any

import boto3
import pytest

from mahaops.aws import shape
from mahaops.hosts import HostSpec
from mahaops.lifecycle import LifecycleError
from mahaops.lifecycle import plan as planning
from mahaops.lifecycle.aws import JOINING_TAG, AwsLifecycle

from .conftest import REGION


def _names(aws: boto3.Session, role: str) -> list[str]:
    filters: list[Any] = [
        {"Name": "tag:Environment", "Values": ["qa"]},
        {"Name": "tag:Role", "Values": [role]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ]
    reservations = aws.client("ec2").describe_instances(Filters=filters)["Reservations"]
    return sorted(
        {t["Key"]: t["Value"] for t in i["Tags"]}["Name"]
        for r in reservations
        for i in r["Instances"]
    )


def test_a_count_set_by_scale_overrides_group_data_and_provision_keeps_it(aws, provision_qa):
    provision_qa()  # group_data: 2 app servers
    shape.set_desired_count(aws.client("ssm"), "maha", "qa", "app", 3)

    result = provision_qa()

    assert _names(aws, "app") == ["maha-qa-app-1", "maha-qa-app-2", "maha-qa-app-3"]
    kept = [c for c in result.plan if c.kind == "Desired count"]
    assert [(c.name, c.action) for c in kept] == [("/maha/qa/shape/app", "no change")]
    assert "3 app instance(s), set by invoke scale (group_data/aws.py says 2)" in kept[0].detail
    again = provision_qa()  # a second provision changes nothing: the scale holds
    assert not [c for c in again.plan if c.kind == "EC2 instance" and c.action != "no change"]


def test_provision_keeps_the_name_a_replacement_was_given(aws, provision_qa):
    provision_qa(roles={"app": {"count": 3}, "db": {"count": 1}, "cache": {"count": 1}})
    ec2 = aws.client("ec2")
    filters = [{"Name": "tag:Name", "Values": ["maha-qa-app-1"]}]
    first = ec2.describe_instances(Filters=filters)["Reservations"][0]["Instances"][0]
    ec2.terminate_instances(InstanceIds=[first["InstanceId"]])  # app-3 replaced app-1

    result = provision_qa(roles={"app": {"count": 2}, "db": {"count": 1}, "cache": {"count": 1}})

    assert _names(aws, "app") == ["maha-qa-app-2", "maha-qa-app-3"]
    assert not [c for c in result.plan if c.kind == "EC2 instance" and c.action != "no change"]


def _life(aws: boto3.Session, group_data, dry: bool = False) -> AwsLifecycle:
    return AwsLifecycle("qa", say=lambda _: None, dry=dry, session=aws, group_data=group_data)


def test_scale_plans_with_the_instances_names_and_refuses_a_platform_without_its_core(
    aws, provision_qa, write_group_data
):
    group_data = write_group_data()
    provision_qa(group_data=group_data)
    life = _life(aws, group_data)

    existing = life.existing()
    assert sorted(h.name for h in existing if h.role == "app") == ["app-1", "app-2"]
    up = life.named(planning.scale("app", 3, existing))
    assert up.create == ["maha-qa-app-3"]
    down = life.named(planning.scale("app", 1, existing))
    assert down.remove == ["maha-qa-app-2"]
    life.check(up)
    with pytest.raises(ValueError, match="at least one app host"):
        life.check(life.named(planning.scale("app", 0, existing)))
    with pytest.raises(LifecycleError, match="db hosts are not scaled"):
        life.check(life.named(planning.remove(life.host_name("maha-qa-db-1"), existing)))


def test_persisting_a_count_writes_it_and_a_dry_run_only_says_so(
    aws, provision_qa, write_group_data
):
    group_data = write_group_data()
    provision_qa(group_data=group_data)

    _life(boto3.Session(region_name=REGION), group_data, dry=True).persist("worker", 0)
    assert shape.desired_counts(aws.client("ssm"), "maha", "qa") == {}
    life = _life(aws, group_data)
    life.persist("worker", 0)
    assert shape.desired_counts(aws.client("ssm"), "maha", "qa") == {"worker": 0}
    assert life.outcome.rows[0].action == "count kept"


def test_a_scaled_out_instance_is_launched_as_provisioning_launches_and_marked_joining(
    aws, provision_qa, write_group_data, monkeypatch
):
    group_data = write_group_data()
    provision_qa(group_data=group_data)
    life = _life(aws, group_data)
    monkeypatch.setattr(  # moto's instances have no sshd
        AwsLifecycle, "_wait_for_ssh", lambda self, name: HostSpec(name, ("aws",), {})
    )

    life._bring_up(life.named(planning.scale("app", 3, life.existing())))

    ec2 = aws.client("ec2")
    filters = [{"Name": "tag:Name", "Values": ["maha-qa-app-3"]}]
    new = ec2.describe_instances(Filters=filters)["Reservations"][0]["Instances"][0]
    old = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["maha-qa-app-1"]}])[
        "Reservations"
    ][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in new["Tags"]}
    assert tags[JOINING_TAG] == "yes"
    assert {k: tags[k] for k in ("Project", "Environment", "Role")} == {
        "Project": "maha",
        "Environment": "qa",
        "Role": "app",
    }
    assert new["MetadataOptions"]["HttpTokens"] == "required"
    assert [g["GroupId"] for g in new["SecurityGroups"]] == [
        g["GroupId"] for g in old["SecurityGroups"]
    ]
    assert new["IamInstanceProfile"]["Arn"] == old["IamInstanceProfile"]["Arn"]
    assert life.joining("app") == ["maha-qa-app-3"]
    life._mark("maha-qa-app-3", False)
    assert life.joining("app") == []


def test_teardown_removes_the_kept_counts_with_the_environment(aws, provision_qa, write_group_data):
    import io

    from rich.console import Console

    from mahaops.aws.teardown import teardown

    group_data = write_group_data()
    provision_qa(group_data=group_data)
    shape.set_desired_count(aws.client("ssm"), "maha", "qa", "app", 3)

    teardown(
        "qa", yes=True, session=aws, group_data=group_data, console=Console(file=io.StringIO())
    )

    assert shape.desired_counts(aws.client("ssm"), "maha", "qa") == {}


def test_removing_a_lost_instance_drains_nothing_and_its_peers_forget_it(
    aws, provision_qa, write_group_data, monkeypatch
):
    from mahaops.aws import ec2 as aws_ec2

    group_data = write_group_data()
    provision_qa(group_data=group_data)
    ec2 = aws.client("ec2")
    filters: list[Any] = [{"Name": "tag:Name", "Values": ["maha-qa-app-2"]}]
    lost = ec2.describe_instances(Filters=filters)["Reservations"][0]["Instances"][0]
    ec2.stop_instances(InstanceIds=[lost["InstanceId"]])  # its host is gone
    converged: list[tuple[str, list[str]]] = []

    def converge_peers(self, what, changed, peers, without=(), dry=False, extra=()):
        converged.append((what, sorted(without)))
        return ["maha-qa-db-1"]

    def drain(ctx, instance_id):
        raise AssertionError(f"{instance_id} is lost: nothing to drain")

    monkeypatch.setattr(AwsLifecycle, "converge_peers", converge_peers)
    monkeypatch.setattr(aws_ec2, "drain", drain)
    life = _life(aws, group_data)
    changes = life.named(planning.remove(life.host_name("app-2"), life.existing()))
    assert changes.lost == ["maha-qa-app-2"]

    life.remove(changes)

    assert converged == [("Peers without it", ["maha-qa-app-2"])]
    state = ec2.describe_instances(InstanceIds=[lost["InstanceId"]])["Reservations"][0]
    assert state["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")
    assert [(r.host, r.action, r.detail) for r in life.outcome.rows] == [
        ("maha-qa-app-2", "removed", "lost: not drained")
    ]
