"""Teardown removes exactly one environment's resources, and only when asked."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from mahaops.aws.plan import Plan
from mahaops.aws.provision import provision
from mahaops.aws.teardown import teardown
from mahaops.settings import SettingsError

from .conftest import environment, tagged

QUIET = Console(file=io.StringIO())


@pytest.fixture
def two_envs(aws, write_group_data, ssh_public_key):
    directory = write_group_data(
        {
            "qa": environment(ssh_public_key),
            "other": environment(
                ssh_public_key, vpc_cidr="10.21.0.0/16", roles={"app": {"count": 1}}
            ),
            "prod": environment(ssh_public_key, protected=True),
        }
    )
    for env in ("qa", "other"):
        provision(env, session=aws, group_data=directory, console=QUIET)
    return directory


def test_teardown_leaves_nothing_tagged_for_the_environment(aws, two_envs):
    teardown("qa", yes=True, session=aws, group_data=two_envs, console=QUIET)
    assert tagged(aws, "qa") == []
    cf = aws.client("cloudfront", region_name="us-east-1")
    names = [k["Name"] for k in cf.list_public_keys()["PublicKeyList"].get("Items") or []]
    assert not any(n.startswith("maha-qa-") for n in names)
    assert (
        aws.client("ssm").get_parameters_by_path(Path="/maha/qa/", Recursive=True)["Parameters"]
        == []
    )


def test_teardown_leaves_other_environments_alone(aws, two_envs):
    before = sorted(tagged(aws, "other"))
    teardown("qa", yes=True, session=aws, group_data=two_envs, console=QUIET)
    assert sorted(tagged(aws, "other")) == before and before
    rerun = provision("other", session=aws, group_data=two_envs, console=QUIET).plan
    assert [c for c in rerun if c.action != "no change"] == []


def test_declined_confirmation_deletes_nothing(aws, two_envs):
    asked: list[Plan] = []

    def decline(plan: Plan) -> bool:
        asked.append(plan)
        return False

    removed = teardown(
        "qa",
        confirm=decline,
        session=aws,
        group_data=two_envs,
        console=QUIET,
    )
    assert asked and asked[0].changes and removed.changes == []
    assert tagged(aws, "qa")


def test_protected_environment_is_refused_before_any_call(aws, two_envs, calls):
    with pytest.raises(SettingsError, match=r"prod\.protected: teardown refused"):
        teardown("prod", yes=True, session=aws, group_data=two_envs, console=QUIET)
    assert calls.all() == []


def test_listings_read_every_page_not_only_the_first():
    # An account with many security groups or key groups answers in pages: what is on the
    # second page is found (and deleted, or reused) too.
    import boto3
    from botocore.stub import Stubber

    from mahaops.aws.cloudfront import key_groups
    from mahaops.aws.teardown import _all

    ec2 = boto3.client("ec2", region_name="eu-west-1")
    with Stubber(ec2) as stub:
        stub.add_response(
            "describe_security_groups",
            {"SecurityGroups": [{"GroupId": "sg-1"}], "NextToken": "t2"},
            {"Filters": []},
        )
        stub.add_response(
            "describe_security_groups",
            {"SecurityGroups": [{"GroupId": "sg-2"}]},
            {"Filters": [], "NextToken": "t2"},
        )
        groups = _all(ec2, "describe_security_groups", "SecurityGroups", Filters=[])
    assert [g["GroupId"] for g in groups] == ["sg-1", "sg-2"]

    cf = boto3.client("cloudfront", region_name="us-east-1")

    def group(name: str) -> dict:
        return {
            "KeyGroup": {
                "Id": name,
                "LastModifiedTime": "2026-01-01T00:00:00Z",
                "KeyGroupConfig": {"Name": name, "Items": ["K"]},
            }
        }

    with Stubber(cf) as stub:
        stub.add_response(
            "list_key_groups",
            {
                "KeyGroupList": {
                    "MaxItems": 1,
                    "Quantity": 1,
                    "Items": [group("a")],
                    "NextMarker": "m",
                }
            },
            {},
        )
        stub.add_response(
            "list_key_groups",
            {"KeyGroupList": {"MaxItems": 1, "Quantity": 1, "Items": [group("maha-qa-uploads")]}},
            {"Marker": "m"},
        )
        names = [g["KeyGroup"]["KeyGroupConfig"]["Name"] for g in key_groups(cf)]
    assert names == ["a", "maha-qa-uploads"]
