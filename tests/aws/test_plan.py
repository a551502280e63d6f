"""Provisioning is idempotent and planned: a rerun changes nothing, a dry run mutates nothing."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.awsrequest import AWSResponse, HTTPHeaders

from mahaops.aws.secrets import SsmSecretStore
from mahaops.aws.session import CLIENT_CONFIG

from .conftest import REGION


def test_second_provision_makes_no_mutating_call(provision_qa, calls):
    provision_qa()
    calls.reset()
    result = provision_qa()
    assert calls.mutating() == []
    assert {c.action for c in result.plan} == {"no change"}, result.plan.summary()
    assert calls.all(), "the rerun still looked everything up"


def test_dry_run_on_an_empty_account_plans_creates_and_calls_nothing_mutating(
    aws, provision_qa, calls
):
    result = provision_qa(dry=True)
    assert calls.mutating() == []
    actions = {c.kind: c.action for c in result.plan}
    assert (
        actions["VPC"] == actions["EC2 instance"] == actions["CloudFront distribution"] == "create"
    )
    assert (
        aws.client("ec2").describe_vpcs(Filters=[{"Name": "tag:Environment", "Values": ["qa"]}])[
            "Vpcs"
        ]
        == []
    )


def test_dry_run_after_a_change_plans_only_that_change(provision_qa, calls):
    provision_qa()
    calls.reset()
    result = provision_qa(dry=True, alb_idle_timeout=900)
    assert calls.mutating() == []
    changed = [(c.kind, c.action, c.detail) for c in result.plan if c.action != "no change"]
    assert changed == [("Load balancer", "update", "idle_timeout.timeout_seconds")]


def test_plan_table_shows_each_resource_and_action(provision_qa):
    from rich.console import Console

    result = provision_qa(dry=True)
    console = Console(record=True, width=200)
    console.print(result.plan.table("Plan: qa"))
    text = console.export_text()
    assert "maha-qa-vpc" in text and "create" in text and "EC2 instance" in text


def _response(status: int, body: dict) -> AWSResponse:
    class Raw:
        def stream(self, **_):
            yield json.dumps(body).encode()

    return AWSResponse("https://ssm.eu-west-1.amazonaws.com/", status, HTTPHeaders(), Raw())


def test_throttled_calls_are_retried(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("time.sleep", lambda _: None)  # botocore's backoff, skipped
    client = boto3.Session(region_name=REGION).client("ssm", config=CLIENT_CONFIG)
    answers = [
        _response(400, {"__type": "ThrottlingException", "message": "Rate exceeded"}),
        _response(400, {"__type": "ThrottlingException", "message": "Rate exceeded"}),
        _response(
            200,
            {
                "Parameter": {
                    "Name": "/maha/qa/api_token",
                    "Value": "value-after-throttling",
                    "Type": "SecureString",
                }
            },
        ),
    ]
    sent = []

    def send(**kwargs):
        sent.append(kwargs["request"].url)
        return answers.pop(0)

    client.meta.events.register_first("before-send.ssm.GetParameter", send)
    store = SsmSecretStore("qa", client=client, project="maha")
    assert store.get("api_token") == "value-after-throttling"
    assert len(sent) == 3


def test_a_call_on_a_resource_aws_does_not_see_yet_is_retried_for_about_two_minutes(
    aws, monkeypatch: pytest.MonkeyPatch
):
    # Just after CreateSecurityGroup, AWS may answer InvalidGroup.NotFound for seconds:
    # the session retries calls that build on a resource, with growing delays, for about
    # two minutes, then gives up with AWS's answer. (moto never sees this group at all.)
    from botocore.exceptions import ClientError

    from mahaops.aws.session import instrument

    waits: list[float] = []
    monkeypatch.setattr("time.sleep", waits.append)
    ec2 = instrument(boto3.Session(region_name=REGION)).client("ec2")
    with pytest.raises(ClientError, match=r"InvalidGroup\.NotFound"):
        ec2.authorize_security_group_ingress(
            GroupId="sg-0123456789abcdef0",
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": 22,
                    "ToPort": 22,
                    "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
                }
            ],
        )
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 20.0, 20.0, 20.0, 20.0]
    assert 100 <= sum(waits) <= 150


def test_an_existence_check_is_never_retried(aws, monkeypatch: pytest.MonkeyPatch):
    from botocore.exceptions import ClientError

    from mahaops.aws.session import instrument

    monkeypatch.setattr("time.sleep", lambda _: pytest.fail("a read must not wait"))
    ec2 = instrument(boto3.Session(region_name=REGION)).client("ec2")
    with pytest.raises(ClientError, match=r"InvalidGroup\.NotFound"):
        ec2.describe_security_groups(GroupIds=["sg-0123456789abcdef0"])
