"""ACM certificates for ``domain`` (the ALB's, in the environment's region) and
``cdn_domain`` (CloudFront's, always in us-east-1), requested when no ARN is given.

A requested certificate is validated by DNS: the CNAME records ACM asks for are written to
``hosted_zone_id`` when it is given (mahaops/aws/dns.py), or else printed for the operator
to create where the domain's zone lives; provisioning then waits until
ACM has seen them and issued the certificate, since neither an HTTPS listener nor a
distribution accepts a certificate still pending. Certificates are tagged like
everything else and found again by domain and tags.
"""

from __future__ import annotations

import time
from typing import Any

from mahaops.aws import dns
from mahaops.aws.plan import PENDING, Context, ProvisionError

CLOUDFRONT_REGION = "us-east-1"
_LIVE = ["PENDING_VALIDATION", "ISSUED"]


def ensure_certificates(ctx: Context) -> None:
    """``ctx.ids["certificate"]`` and ``["cdn_certificate"]``: given ARNs, or requested."""
    spec = ctx.spec
    if spec.domain:
        ctx.ids["certificate"] = spec.certificate_arn or ensure_certificate(
            ctx, spec.domain, ctx.clients.region, "lb"
        )
    if spec.cdn_domain:
        ctx.ids["cdn_certificate"] = spec.cdn_certificate_arn or ensure_certificate(
            ctx, spec.cdn_domain, CLOUDFRONT_REGION, "cdn"
        )


def _acm(ctx: Context, region: str) -> Any:
    return ctx.clients._client("acm", region)


def find_certificate(ctx: Context, domain: str, region: str) -> dict[str, Any] | None:
    acm = _acm(ctx, region)
    pages = acm.get_paginator("list_certificates").paginate(CertificateStatuses=_LIVE)
    for page in pages:
        for summary in page["CertificateSummaryList"]:
            if summary["DomainName"] != domain:
                continue
            tags = acm.list_tags_for_certificate(CertificateArn=summary["CertificateArn"])
            if ctx.owns(tags.get("Tags")):
                return dict(summary)
    return None


def ensure_certificate(ctx: Context, domain: str, region: str, role: str) -> str:
    acm = _acm(ctx, region)
    name = f"{domain} ({region})"
    found = find_certificate(ctx, domain, region)
    if found is None:
        where = "made in the zone" if "dns:zone" in ctx.ids else "printed"
        ctx.plan.record("ACM certificate", name, "create", f"DNS validation: the records {where}")
        if ctx.dry:
            return PENDING
        arn = str(
            acm.request_certificate(
                DomainName=domain,
                ValidationMethod="DNS",
                IdempotencyToken=f"{ctx.env}{role}"[:32].replace("-", ""),
                Tags=ctx.tags(role, domain),
            )["CertificateArn"]
        )
    else:
        arn = str(found["CertificateArn"])
    status = acm.describe_certificate(CertificateArn=arn)["Certificate"]["Status"]
    if found is not None:
        if status == "ISSUED":
            ctx.plan.record("ACM certificate", name, "no change", arn)
        else:
            ctx.plan.record("ACM certificate", name, "update", f"{status.lower()}: {arn}")
    if "dns:zone" in ctx.ids:  # kept in the zone, also once issued: ACM renews through them
        dns.ensure_validation_records(ctx, validation_records(acm, arn), domain)
    elif not ctx.dry and not (status == "ISSUED" and found is not None):
        # Printed for a new certificate even if issued at once: ACM renews it through the
        # same record, so it must stay in the zone.
        for record in validation_records(acm, arn):
            ctx.console.print(
                f"DNS validation for {domain}: {record['Name']} {record['Type']} {record['Value']}",
                highlight=False,
            )
    if ctx.dry or status == "ISSUED":
        return arn
    ctx.step(f"waiting for ACM to issue the certificate for {domain} (DNS validation)")
    acm.get_waiter("certificate_validated").wait(
        CertificateArn=arn, WaiterConfig={"Delay": 30, "MaxAttempts": 120}
    )
    return arn


def validation_records(acm: Any, arn: str, attempts: int = 10) -> list[dict[str, str]]:
    """The CNAME records ACM asks for; they appear a few seconds after the request."""
    for _ in range(attempts):
        options = acm.describe_certificate(CertificateArn=arn)["Certificate"].get(
            "DomainValidationOptions", []
        )
        records = [o["ResourceRecord"] for o in options if o.get("ResourceRecord")]
        if records and len(records) == len(options):
            return records
        time.sleep(3)
    raise ProvisionError(f"ACM gave no DNS validation record for {arn}")
