"""The ALB: app servers behind it, WebSocket-friendly, HTTPS when a domain is set."""

from __future__ import annotations

import itertools

import boto3
import pytest
from botocore.stub import Stubber

from mahaops.aws.elb import wait_healthy, wait_in_service
from mahaops.aws.plan import ProvisionError

from .conftest import REGION


@pytest.fixture
def certificate(aws) -> str:
    acm = aws.client("acm")
    return acm.request_certificate(DomainName="maha.example.org", ValidationMethod="DNS")[
        "CertificateArn"
    ]


def _lb(aws):
    elb = aws.client("elbv2")
    lb = elb.describe_load_balancers(Names=["maha-qa"])["LoadBalancers"][0]
    attrs = {
        a["Key"]: a["Value"]
        for a in elb.describe_load_balancer_attributes(LoadBalancerArn=lb["LoadBalancerArn"])[
            "Attributes"
        ]
    }
    listeners = {
        item["Port"]: item
        for item in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    }
    return elb, lb, attrs, listeners


def test_alb_is_public_with_a_websocket_idle_timeout(aws, provision_qa):
    provision_qa()
    _, lb, attrs, _ = _lb(aws)
    assert lb["Scheme"] == "internet-facing" and lb["Type"] == "application"
    assert attrs["idle_timeout.timeout_seconds"] == "3600"
    subnets = aws.client("ec2").describe_subnets(
        SubnetIds=[z["SubnetId"] for z in lb["AvailabilityZones"]]
    )["Subnets"]
    assert {next(t["Value"] for t in s["Tags"] if t["Key"] == "Name") for s in subnets} == {
        "maha-qa-public-a",
        "maha-qa-public-b",
    }


def test_target_group_holds_exactly_the_app_servers(aws, provision_qa):
    provision_qa()
    elb = aws.client("elbv2")
    tg = elb.describe_target_groups(Names=["maha-qa-app"])["TargetGroups"][0]
    assert tg["HealthCheckPath"] == "/health"
    attrs = {
        a["Key"]: a["Value"]
        for a in elb.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])[
            "Attributes"
        ]
    }
    assert attrs["deregistration_delay.timeout_seconds"] == "30"
    targets = {
        d["Target"]["Id"]
        for d in elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])[
            "TargetHealthDescriptions"
        ]
    }
    apps = aws.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:Role", "Values": ["app"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    assert targets == {i["InstanceId"] for r in apps for i in r["Instances"]}


def test_without_a_domain_port_80_forwards_to_the_app(aws, provision_qa):
    provision_qa()
    _, _, _, listeners = _lb(aws)
    assert set(listeners) == {80}
    assert listeners[80]["DefaultActions"][0]["Type"] == "forward"


def test_with_a_domain_http_redirects_and_https_uses_the_certificate(
    aws, provision_qa, certificate
):
    provision_qa(domain="maha.example.org", certificate_arn=certificate)
    _, _, _, listeners = _lb(aws)
    assert set(listeners) == {80, 443}
    redirect = listeners[80]["DefaultActions"][0]
    assert redirect["Type"] == "redirect" and redirect["RedirectConfig"]["Protocol"] == "HTTPS"
    assert listeners[443]["Protocol"] == "HTTPS"
    assert listeners[443]["Certificates"][0]["CertificateArn"] == certificate
    assert listeners[443]["DefaultActions"][0]["Type"] == "forward"


def test_removing_the_domain_removes_the_https_listener(aws, provision_qa, certificate):
    provision_qa(domain="maha.example.org", certificate_arn=certificate)
    result = provision_qa()
    assert [(c.name, c.action) for c in result.plan if c.kind == "Listener"] == [
        ("maha-qa :80", "update"),
        ("maha-qa :443", "delete"),
    ]


TG = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/maha-qa-app/0123456789abcdef"


def _health(state, reason=None):
    health = {"State": state, **({"Reason": reason} if reason else {})}
    return {
        "TargetHealthDescriptions": [
            {"Target": {"Id": "i-0123456789abcdef0", "Port": 80}, "TargetHealth": health}
        ]
    }


def test_a_target_that_never_turns_healthy_fails_with_a_clear_timeout():
    elb = boto3.Session(region_name=REGION).client("elbv2")
    clock = itertools.count(0, 15)
    with Stubber(elb) as stub:
        for _ in range(5):
            stub.add_response(
                "describe_target_health",
                _health("unhealthy", "Target.FailedHealthChecks"),
                {"TargetGroupArn": TG},
            )
        with pytest.raises(ProvisionError) as caught:
            wait_healthy(
                elb, TG, timeout=60, interval=15, sleep=lambda _: None, clock=lambda: next(clock)
            )
    message = str(caught.value)
    assert "maha-qa-app" in message and "not healthy after 60 s" in message
    assert "i-0123456789abcdef0 unhealthy (Target.FailedHealthChecks)" in message


def test_waiting_ends_as_soon_as_targets_are_healthy():
    elb = boto3.Session(region_name=REGION).client("elbv2")
    with Stubber(elb) as stub:
        stub.add_response("describe_target_health", _health("initial"), {"TargetGroupArn": TG})
        stub.add_response("describe_target_health", _health("healthy"), {"TargetGroupArn": TG})
        wait_healthy(elb, TG, timeout=60, interval=1, sleep=lambda _: None)
        stub.assert_no_pending_responses()


def _app_ids(aws) -> list[str]:
    reservations = aws.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:Role", "Values": ["app"]},
            {"Name": "tag:Environment", "Values": ["qa"]},
        ]
    )["Reservations"]
    return sorted(i["InstanceId"] for r in reservations for i in r["Instances"])


def test_a_rolling_step_waits_for_its_app_server_to_be_back_in_service(
    aws, provision_qa, write_group_data
):
    provision_qa()
    group_data = write_group_data()
    app_ids = _app_ids(aws)
    assert len(app_ids) == 2
    wait_in_service("qa", app_ids[:1], session=aws, group_data=group_data, sleep=lambda _: None)

    # An instance the load balancer does not send to (not registered) never comes back.
    elb = aws.client("elbv2")
    tg = elb.describe_target_groups(Names=["maha-qa-app"])["TargetGroups"][0]["TargetGroupArn"]
    elb.deregister_targets(TargetGroupArn=tg, Targets=[{"Id": app_ids[1]}])
    clock = iter(range(0, 1000, 30))
    with pytest.raises(ProvisionError) as caught:
        wait_in_service(
            "qa",
            app_ids[1:],
            session=aws,
            group_data=group_data,
            timeout=60,
            sleep=lambda _: None,
            clock=lambda: next(clock),
        )
    assert f"{app_ids[1]}" in str(caught.value) and "not healthy after 60 s" in str(caught.value)


def _apps_by_name(aws, states=("running",)):
    reservations = aws.client("ec2").describe_instances(
        Filters=[
            {"Name": "tag:Role", "Values": ["app"]},
            {"Name": "instance-state-name", "Values": list(states)},
        ]
    )["Reservations"]
    return {
        next(t["Value"] for t in i["Tags"] if t["Key"] == "Name"): i["InstanceId"]
        for r in reservations
        for i in r["Instances"]
    }


def _targets(aws):
    elb = aws.client("elbv2")
    arn = elb.describe_target_groups(Names=["maha-qa-app"])["TargetGroups"][0]["TargetGroupArn"]
    health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {d["Target"]["Id"] for d in health}


def _order(calls, *wanted):
    """Index of each call's first occurrence after the previous one; fails when one is missing."""
    seen, start = [], 0
    log = calls.all()
    for call in wanted:
        index = log.index(call, start)
        seen.append(index)
        start = index + 1
    return seen


def test_scale_in_deregisters_and_waits_for_draining_before_terminating(aws, provision_qa, calls):
    provision_qa()
    leaving = _apps_by_name(aws)["maha-qa-app-2"]
    calls.reset()

    provision_qa(roles={"app": {"count": 1}})

    # deregister, the waiter's DescribeTargetHealth until "unused", and only then terminate
    _order(
        calls,
        "elbv2 DeregisterTargets",
        "elbv2 DescribeTargetHealth",
        "ec2 TerminateInstances",
    )
    assert leaving not in _targets(aws)
    assert "maha-qa-app-2" not in _apps_by_name(aws)


def test_resizing_an_app_server_drains_it_before_the_stop_and_registers_it_after(
    aws, provision_qa, calls
):
    provision_qa()
    resized = _apps_by_name(aws)["maha-qa-app-1"]
    calls.reset()

    provision_qa(roles={"app": {"count": 2, "instance_type": "t3.large"}})

    _order(
        calls,
        "elbv2 DeregisterTargets",
        "elbv2 DescribeTargetHealth",
        "ec2 StopInstances",
        "ec2 StartInstances",
        "elbv2 RegisterTargets",
    )
    assert resized in _targets(aws)


def test_a_stopped_app_server_is_never_registered_as_a_target(aws, provision_qa):
    provision_qa()
    stopped = _apps_by_name(aws)["maha-qa-app-2"]
    aws.client("ec2").stop_instances(InstanceIds=[stopped])
    elb = aws.client("elbv2")
    arn = elb.describe_target_groups(Names=["maha-qa-app"])["TargetGroups"][0]["TargetGroupArn"]
    elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": stopped}])

    plan = provision_qa().plan

    assert stopped not in _targets(aws)  # real AWS refuses a stopped instance as a target
    rows = {c.kind: (c.action, c.detail) for c in plan if c.kind == "Targets"}
    assert stopped not in rows["Targets"][1]
