"""Route 53 records of an environment whose ``hosted_zone_id`` is given.

With a zone, provisioning writes what an operator would otherwise add by hand: the
CNAME records ACM asks for to validate a requested certificate (kept: ACM renews through
them), and alias records (A and AAAA) naming the ALB for ``domain`` and the distribution
for ``cdn_domain``. Without a zone the validation records are printed (mahaops/aws/acm.py)
and the names are the operator's to point.

The zone is checked before anything is made: it must exist, be public, and hold every
name the environment serves.
"""

from __future__ import annotations

from typing import Any

from mahaops.aws.plan import Context, pending
from mahaops.settings import SettingsError

SOURCE = "group_data/aws.py"
CLOUDFRONT_ZONE = "Z2FDTNDATAQYW2"  # the hosted zone of every CloudFront alias target
ALIAS_TYPES = ("A", "AAAA")  # the ALB and CloudFront answer on both


def _route53(ctx: Context) -> Any:
    return ctx.clients._client("route53", "us-east-1")  # a global service


def fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def _key(ctx: Context) -> str:
    return f"aws_environments.{ctx.env}.hosted_zone_id"


def check_zone(ctx: Context) -> None:
    """Refuse, before any change, a zone that is missing, private, or not the names' own."""
    zone_id = ctx.spec.hosted_zone_id
    if zone_id is None:
        return
    r53 = _route53(ctx)
    try:
        zone = r53.get_hosted_zone(Id=zone_id)["HostedZone"]
    except r53.exceptions.NoSuchHostedZone:
        raise SettingsError(SOURCE, _key(ctx), f"no Route 53 hosted zone {zone_id}") from None
    if zone.get("Config", {}).get("PrivateZone"):
        raise SettingsError(
            SOURCE, _key(ctx), f"{zone_id} is a private zone: ACM and browsers need a public one"
        )
    suffix = fqdn(zone["Name"])
    for name in (ctx.spec.domain, ctx.spec.cdn_domain):
        if name and not ("." + fqdn(name)).endswith("." + suffix):
            raise SettingsError(SOURCE, _key(ctx), f"{name} is not in the zone {suffix}")
    ctx.ids["dns:zone"] = zone["Id"].split("/")[-1]


def _existing(ctx: Context, name: str, rtype: str) -> dict[str, Any] | None:
    page = _route53(ctx).list_resource_record_sets(
        HostedZoneId=ctx.ids["dns:zone"], StartRecordName=name, StartRecordType=rtype, MaxItems="1"
    )
    for record in page["ResourceRecordSets"]:
        if fqdn(record["Name"]) == fqdn(name) and record["Type"] == rtype:
            return dict(record)
    return None


def _same(have: dict[str, Any] | None, want: dict[str, Any]) -> bool:
    if have is None:
        return False
    if "AliasTarget" in want:
        a, b = have.get("AliasTarget") or {}, want["AliasTarget"]
        return a.get("HostedZoneId") == b["HostedZoneId"] and fqdn(
            a.get("DNSName", "")
        ).removeprefix("dualstack.") == fqdn(b["DNSName"]).removeprefix("dualstack.")
    values = {r["Value"] for r in have.get("ResourceRecords") or []}
    return values == {r["Value"] for r in want["ResourceRecords"]}


def _upsert(ctx: Context, records: list[dict[str, Any]], detail: str) -> None:
    """Each record created or corrected in the zone, in one change batch."""
    changes = []
    for record in records:
        have = _existing(ctx, record["Name"], record["Type"])
        name = f"{record['Name'].rstrip('.')} {record['Type']}"
        if _same(have, record):
            ctx.plan.record("Route 53 record", name, "no change", detail)
            continue
        ctx.plan.record("Route 53 record", name, "create" if have is None else "update", detail)
        changes.append({"Action": "UPSERT", "ResourceRecordSet": record})
    if changes and not ctx.dry:
        r53 = _route53(ctx)
        change = r53.change_resource_record_sets(
            HostedZoneId=ctx.ids["dns:zone"],
            ChangeBatch={"Comment": f"{ctx.project} {ctx.env}", "Changes": changes},
        )["ChangeInfo"]
        r53.get_waiter("resource_record_sets_changed").wait(
            Id=change["Id"], WaiterConfig={"Delay": 10, "MaxAttempts": 60}
        )


def ensure_validation_records(ctx: Context, records: list[dict[str, str]], domain: str) -> bool:
    """ACM's CNAMEs written to the zone; False when there is no zone (they are printed)."""
    if "dns:zone" not in ctx.ids:
        return False
    wanted = [
        {
            "Name": fqdn(r["Name"]),
            "Type": r["Type"],
            "TTL": 300,
            "ResourceRecords": [{"Value": r["Value"]}],
        }
        for r in records
    ]
    _upsert(ctx, wanted, f"ACM validation of {domain}")
    return True


def _alias(name: str, rtype: str, target: str, zone: str) -> dict[str, Any]:
    return {
        "Name": fqdn(name),
        "Type": rtype,
        "AliasTarget": {"HostedZoneId": zone, "DNSName": target, "EvaluateTargetHealth": False},
    }


def aliases(ctx: Context) -> list[tuple[dict[str, Any], str]]:
    """The alias records this environment wants, each with what it names."""
    wanted: list[tuple[dict[str, Any], str]] = []
    spec = ctx.spec
    lb_dns, lb_zone = ctx.ids.get("lb:dns"), ctx.ids.get("lb:zone")
    if spec.domain and lb_dns and not pending(lb_dns) and lb_zone:
        wanted += [(_alias(spec.domain, t, lb_dns, lb_zone), "the ALB") for t in ALIAS_TYPES]
    cdn = ctx.ids.get("cdn:domain")
    if spec.cdn_domain and cdn and not pending(cdn):
        wanted += [
            (_alias(spec.cdn_domain, t, cdn, CLOUDFRONT_ZONE), "the distribution")
            for t in ALIAS_TYPES
        ]
    return wanted


def ensure_aliases(ctx: Context) -> None:
    """``domain`` → the ALB and ``cdn_domain`` → the distribution, where a zone is given."""
    if "dns:zone" not in ctx.ids:
        return
    wanted = aliases(ctx)
    # A dry run before the ALB or distribution exists has no target to name yet.
    for name, what, target in (
        (ctx.spec.domain, "the ALB", ctx.ids.get("lb:dns")),
        (ctx.spec.cdn_domain, "the distribution", ctx.ids.get("cdn:domain")),
    ):
        if name and (target is None or pending(target)):
            for rtype in ALIAS_TYPES:
                ctx.plan.record("Route 53 record", f"{name} {rtype}", "create", f"alias: {what}")
    for record, what in wanted:
        _upsert(ctx, [record], f"alias: {what}")


def owned_records(
    ctx: Context, zone_id: str, targets: set[str], validation: set[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Records in the zone that name one of ``targets`` (alias DNS names) or are one of the
    ``validation`` (name, value) CNAMEs: what teardown removes, and nothing else."""
    r53 = _route53(ctx)
    found = []
    for page in r53.get_paginator("list_resource_record_sets").paginate(HostedZoneId=zone_id):
        for record in page["ResourceRecordSets"]:
            alias = record.get("AliasTarget")
            names_ours = bool(alias) and (
                fqdn(alias["DNSName"]).removeprefix("dualstack.") in targets
            )
            validates_ours = record["Type"] == "CNAME" and any(
                (fqdn(record["Name"]), v["Value"]) in validation
                for v in record.get("ResourceRecords") or []
            )
            if names_ours or validates_ours:
                found.append(record)
    return found


def delete_records(ctx: Context, zone_id: str, records: list[dict[str, Any]]) -> None:
    if records:
        _route53(ctx).change_resource_record_sets(
            HostedZoneId=zone_id,
            ChangeBatch={
                "Changes": [{"Action": "DELETE", "ResourceRecordSet": r} for r in records]
            },
        )
