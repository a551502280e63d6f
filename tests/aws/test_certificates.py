"""A domain without a certificate ARN gets one from ACM: requested in the right region
(the ALB's; us-east-1 for CloudFront), its DNS validation records printed, waited for until
issued, used by the HTTPS listener and the distribution, found again by the next run."""

from __future__ import annotations

import io

import boto3
import pytest
from rich.console import Console

from mahaops.aws.provision import provision
from mahaops.aws.teardown import teardown

from .conftest import REGION


@pytest.fixture(autouse=True)
def _acm_validates_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import moto.settings

    monkeypatch.setattr(moto.settings, "ACM_VALIDATION_WAIT", 0)  # AWS: minutes, once DNS is set
    monkeypatch.setattr("time.sleep", lambda _: None)


def _run(aws, group_data, **kw):
    out = io.StringIO()
    result = provision("qa", session=aws, group_data=group_data, console=Console(file=out), **kw)
    return result, out.getvalue()


def _certificates(aws, region):
    acm = aws.client("acm", region_name=region)
    return {
        c["DomainName"]: c["CertificateArn"]
        for c in acm.list_certificates()["CertificateSummaryList"]
    }


def test_domains_without_a_certificate_get_one_requested_validated_and_used(
    aws, write_group_data, calls
):
    group_data = write_group_data(domain="maha.example.org", cdn_domain="cdn.example.org")

    _, printed = _run(aws, group_data)

    alb_cert = _certificates(aws, REGION)["maha.example.org"]
    cdn_cert = _certificates(aws, "us-east-1")["cdn.example.org"]  # CloudFront's region
    assert "DNS validation for maha.example.org:" in printed and "CNAME" in printed
    assert "DNS validation for cdn.example.org:" in printed
    elb = aws.client("elbv2")
    lb = elb.describe_load_balancers(Names=["maha-qa"])["LoadBalancers"][0]
    listeners = {
        item["Port"]: item
        for item in elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    }
    assert listeners[443]["Certificates"][0]["CertificateArn"] == alb_cert
    cf = aws.client("cloudfront", region_name="us-east-1")
    (summary,) = cf.list_distributions()["DistributionList"]["Items"]
    config = cf.get_distribution_config(Id=summary["Id"])["DistributionConfig"]
    assert config["ViewerCertificate"]["ACMCertificateArn"] == cdn_cert

    calls.reset()
    again, _ = _run(aws, group_data)
    assert not [c for c in calls.mutating() if c.startswith("acm")], "found again, not re-requested"
    rows = {(c.kind, c.action) for c in again.plan if c.kind == "ACM certificate"}
    assert rows == {("ACM certificate", "no change")}


def test_a_dry_run_shows_the_request_and_makes_none(aws, write_group_data, calls):
    group_data = write_group_data(domain="maha.example.org")
    result = provision(
        "qa",
        dry=True,
        session=boto3.Session(region_name=REGION),
        group_data=group_data,
        console=Console(file=io.StringIO()),
    )
    assert calls.mutating() == []
    rows = [c for c in result.plan if c.kind == "ACM certificate"]
    assert [(c.name, c.action) for c in rows] == [(f"maha.example.org ({REGION})", "create")]


def test_teardown_deletes_the_certificates_it_requested_only(aws, write_group_data):
    given = aws.client("acm").request_certificate(
        DomainName="other.example.org", ValidationMethod="DNS"
    )["CertificateArn"]
    group_data = write_group_data(domain="maha.example.org")
    _run(aws, group_data)
    teardown(
        "qa", yes=True, session=aws, group_data=group_data, console=Console(file=io.StringIO())
    )
    assert list(_certificates(aws, REGION).values()) == [given]
