"""With ``hosted_zone_id``, provisioning writes the records an operator would add by hand:
ACM's validation CNAMEs and aliases naming the ALB and the distribution. A zone that
cannot hold the names is refused before anything is made; teardown removes only what
the environment wrote."""

from __future__ import annotations

import io

import boto3
import pytest
from rich.console import Console

from mahaops.aws.provision import provision
from mahaops.aws.teardown import teardown
from mahaops.settings import SettingsError

from .conftest import REGION


@pytest.fixture(autouse=True)
def _acm_validates_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", 0)  # AWS: minutes, once DNS is set
    monkeypatch.setattr("time.sleep", lambda _: None)


def _zone(aws: boto3.Session, name: str = "example.org", private: bool = False) -> str:
    r53 = aws.client("route53")
    kwargs = {"HostedZoneConfig": {"PrivateZone": True, "Comment": ""}} if private else {}
    if private:
        vpc = aws.client("ec2").create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
        kwargs["VPC"] = {"VPCRegion": REGION, "VPCId": vpc}
    zone = r53.create_hosted_zone(Name=name, CallerReference=name + str(private), **kwargs)
    return str(zone["HostedZone"]["Id"].split("/")[-1])


def _records(aws: boto3.Session, zone: str) -> dict[tuple[str, str], dict]:
    pages = aws.client("route53").get_paginator("list_resource_record_sets")
    return {
        (r["Name"], r["Type"]): r
        for page in pages.paginate(HostedZoneId=zone)
        for r in page["ResourceRecordSets"]
        if r["Type"] not in ("NS", "SOA")
    }


def _run(aws, group_data, **kw):
    out = io.StringIO()
    result = provision("qa", session=aws, group_data=group_data, console=Console(file=out), **kw)
    return result, out.getvalue()


def test_the_zone_gets_validation_records_and_aliases_to_the_alb_and_distribution(
    aws, write_group_data, calls
):
    zone = _zone(aws)
    group_data = write_group_data(
        domain="maha.example.org", cdn_domain="cdn.example.org", hosted_zone_id=zone
    )

    result, printed = _run(aws, group_data)

    records = _records(aws, zone)
    lb = aws.client("elbv2").describe_load_balancers(Names=["maha-qa"])["LoadBalancers"][0]
    for rtype in ("A", "AAAA"):
        alias = records[("maha.example.org.", rtype)]["AliasTarget"]
        assert alias["HostedZoneId"] == lb["CanonicalHostedZoneId"]
        assert alias["DNSName"].rstrip(".") == lb["DNSName"].lower()
        cdn = records[("cdn.example.org.", rtype)]["AliasTarget"]
        assert cdn["HostedZoneId"] == "Z2FDTNDATAQYW2"
        assert cdn["DNSName"].rstrip(".") == result.outputs["CloudFront"]
    acm = {region: aws.client("acm", region_name=region) for region in {REGION, "us-east-1"}}
    for region, domain in ((REGION, "maha.example.org"), ("us-east-1", "cdn.example.org")):
        (summary,) = [
            c
            for c in acm[region].list_certificates()["CertificateSummaryList"]
            if c["DomainName"] == domain
        ]
        described = acm[region].describe_certificate(CertificateArn=summary["CertificateArn"])
        for option in described["Certificate"]["DomainValidationOptions"]:
            wanted = option["ResourceRecord"]
            have = records[(wanted["Name"].rstrip(".") + ".", "CNAME")]
            assert [v["Value"] for v in have["ResourceRecords"]] == [wanted["Value"]]
    assert "DNS validation for" not in printed, "written to the zone, not left to the operator"

    calls.reset()
    again, _ = _run(aws, group_data)
    assert not [c for c in calls.mutating() if c.startswith("route53")]
    rows = {c.action for c in again.plan if c.kind == "Route 53 record"}
    assert rows == {"no change"}


def test_a_record_changed_by_hand_is_put_back(aws, write_group_data):
    zone = _zone(aws)
    group_data = write_group_data(domain="maha.example.org", hosted_zone_id=zone)
    _run(aws, group_data)
    aws.client("route53").change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "DELETE",
                    "ResourceRecordSet": _records(aws, zone)[("maha.example.org.", "A")],
                },
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": "maha.example.org.",
                        "Type": "A",
                        "TTL": 60,
                        "ResourceRecords": [{"Value": "192.0.2.1"}],
                    },
                },
            ]
        },
    )

    result, _ = _run(aws, group_data)

    assert ("Route 53 record", "maha.example.org A", "update") in {
        (c.kind, c.name, c.action) for c in result.plan
    }
    assert "AliasTarget" in _records(aws, zone)[("maha.example.org.", "A")]


def test_a_dry_run_shows_the_records_and_writes_none(aws, provision_qa, calls):
    zone = _zone(aws)

    result = provision_qa(dry=True, domain="maha.example.org", hosted_zone_id=zone)

    assert calls.mutating() == []
    rows = {(c.name, c.action) for c in result.plan if c.kind == "Route 53 record"}
    assert rows == {("maha.example.org A", "create"), ("maha.example.org AAAA", "create")}
    assert _records(aws, zone) == {}


@pytest.mark.parametrize(
    ("zone_of", "message"),
    [
        (lambda aws: "Z0000000000MISSING", "no Route 53 hosted zone"),
        (lambda aws: _zone(aws, "other.net"), "maha.example.org is not in the zone other.net."),
        (lambda aws: _zone(aws, private=True), "private zone"),
    ],
    ids=["missing", "another domain", "private"],
)
def test_a_zone_that_cannot_hold_the_names_is_refused_before_any_change(
    aws, write_group_data, calls, zone_of, message
):
    group_data = write_group_data(domain="maha.example.org", hosted_zone_id=zone_of(aws))
    calls.reset()

    with pytest.raises(SettingsError) as refused:
        _run(aws, group_data)

    assert refused.value.source == "group_data/aws.py"
    assert refused.value.key == "aws_environments.qa.hosted_zone_id"
    assert message in refused.value.message
    assert calls.mutating() == []


def test_teardown_removes_the_records_it_wrote_and_no_other(aws, write_group_data):
    zone = _zone(aws)
    group_data = write_group_data(
        domain="maha.example.org", cdn_domain="cdn.example.org", hosted_zone_id=zone
    )
    _run(aws, group_data)
    kept = {
        "Name": "www.example.org.",
        "Type": "CNAME",
        "TTL": 300,
        "ResourceRecords": [{"Value": "elsewhere.example.net"}],
    }
    aws.client("route53").change_resource_record_sets(
        HostedZoneId=zone,
        ChangeBatch={"Changes": [{"Action": "CREATE", "ResourceRecordSet": kept}]},
    )

    plan = teardown(
        "qa", yes=True, session=aws, group_data=group_data, console=Console(file=io.StringIO())
    )

    assert {c.name for c in plan if c.kind == "Route 53 record"} >= {
        "maha.example.org A",
        "cdn.example.org AAAA",
    }
    assert list(_records(aws, zone)) == [("www.example.org.", "CNAME")]
