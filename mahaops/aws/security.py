"""Security groups: least privilege between the platform's roles.

The load balancer takes 80/443 from anywhere and talks only to the app
servers' port; app servers take HTTP only from the load balancer; PostgreSQL
and Redis only from app servers and workers; the log inputs only from the
platform's own groups; SSH only from ``admin_cidrs``. Rules are compared as
sets: missing ones are authorised, extra ones revoked.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from mahaops.aws.plan import PENDING, Context, pending, tags_of
from mahaops.settings.aws import EC2_ROLES

SG_ROLES: tuple[str, ...] = ("lb", *EC2_ROLES)
"""One group per role; ``lb`` is the ALB's."""

ANYWHERE = ("0.0.0.0/0", "::/0")
LOG_INPUTS: tuple[tuple[str, int], ...] = (
    ("tcp", 514),
    ("tcp", 12201),
    ("udp", 12201),
    ("tcp", 1514),
)
"""syslog, GELF (TCP and UDP) and the log shipper's input."""


class Rule(NamedTuple):
    protocol: str  # "tcp", "udp" or "-1" (all)
    port: int  # -1 with protocol "-1"
    source: str  # a CIDR, or "sg:<role>" resolved to the role's group id


def desired_rules(ctx: Context) -> dict[str, tuple[set[Rule], set[Rule]]]:
    """Role -> (ingress, egress) rules, sources still named by role."""
    spec = ctx.spec
    ssh = {Rule("tcp", 22, cidr) for cidr in spec.admin_cidrs}
    everywhere_out = {Rule("-1", -1, "0.0.0.0/0")}  # hosts fetch packages and reach AWS APIs
    platform = [f"sg:{r}" for r in EC2_ROLES]
    rules: dict[str, tuple[set[Rule], set[Rule]]] = {
        "lb": (
            {Rule("tcp", port, src) for port in (80, 443) for src in ANYWHERE},
            {Rule("tcp", spec.app_port, "sg:app")},
        ),
        "app": (ssh | {Rule("tcp", spec.app_port, "sg:lb")}, everywhere_out),
        "worker": (set(ssh), everywhere_out),
        "db": (ssh | {Rule("tcp", 5432, f"sg:{r}") for r in ("app", "worker")}, everywhere_out),
        "cache": (ssh | {Rule("tcp", 6379, f"sg:{r}") for r in ("app", "worker")}, everywhere_out),
        "log": (
            ssh | {Rule(proto, port, src) for proto, port in LOG_INPUTS for src in platform},
            everywhere_out,
        ),
    }
    return rules


def ensure_security_groups(ctx: Context) -> None:
    ctx.step("security groups")
    vpc = ctx.ids["vpc"]
    existing = _existing_groups(ctx, vpc)
    for role in SG_ROLES:
        ctx.ids[f"sg:{role}"] = _ensure_group(ctx, vpc, role, existing.get(role))
    for role, (ingress, egress) in desired_rules(ctx).items():
        group = existing.get(role)
        _ensure_rules(ctx, role, group, _resolve(ctx, ingress), _resolve(ctx, egress))


def _existing_groups(ctx: Context, vpc: str) -> dict[str, dict[str, Any]]:
    if pending(vpc):
        return {}
    filters = [*ctx.filters(), {"Name": "vpc-id", "Values": [vpc]}]
    groups = ctx.clients.ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    return {tags_of(g).get("Role", ""): g for g in groups}


def _ensure_group(ctx: Context, vpc: str, role: str, group: dict[str, Any] | None) -> str:
    if group is not None:
        return str(group["GroupId"])
    if ctx.dry:
        return PENDING
    name = ctx.name(role)
    group_id = ctx.clients.ec2.create_security_group(
        GroupName=name,
        Description=f"{name}: {role} role",
        VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": ctx.tags(role, name)}],
    )["GroupId"]
    return str(group_id)


def _resolve(ctx: Context, rules: set[Rule]) -> set[Rule]:
    return {
        r._replace(source=ctx.ids[r.source]) if r.source.startswith("sg:") else r for r in rules
    }


def _ensure_rules(
    ctx: Context, role: str, group: dict[str, Any] | None, ingress: set[Rule], egress: set[Rule]
) -> None:
    name = ctx.name(role)
    if group is None:
        ctx.plan.record("Security group", name, "create", f"{len(ingress)} inbound rules")
        current_in: set[Rule] = set()
        # A new group allows all egress by default; that rule is reconciled like any other.
        current_out = {Rule("-1", -1, "0.0.0.0/0")}
    else:
        current_in = flatten(group.get("IpPermissions", []))
        current_out = flatten(group.get("IpPermissionsEgress", []))
    changes = _diff_text(ingress, current_in, "in") + _diff_text(egress, current_out, "out")
    if group is not None:
        ctx.plan.record(
            "Security group",
            name,
            "update" if changes else "no change",
            ", ".join(changes) or group["GroupId"],
        )
    if ctx.dry or not changes:
        return
    ec2, group_id = ctx.clients.ec2, ctx.ids[f"sg:{role}"]
    if add := ingress - current_in:
        ec2.authorize_security_group_ingress(GroupId=group_id, IpPermissions=permissions(add))
    if drop := current_in - ingress:
        ec2.revoke_security_group_ingress(GroupId=group_id, IpPermissions=permissions(drop))
    if add := egress - current_out:
        ec2.authorize_security_group_egress(GroupId=group_id, IpPermissions=permissions(add))
    if drop := current_out - egress:
        ec2.revoke_security_group_egress(GroupId=group_id, IpPermissions=permissions(drop))


def _diff_text(want: set[Rule], have: set[Rule], direction: str) -> list[str]:
    added = [f"+{direction} {r.protocol}/{r.port} {r.source}" for r in sorted(want - have)]
    removed = [f"-{direction} {r.protocol}/{r.port} {r.source}" for r in sorted(have - want)]
    return added + removed


def flatten(permissions_: list[dict[str, Any]]) -> set[Rule]:
    """AWS IpPermissions as one Rule per (protocol, port, source)."""
    rules: set[Rule] = set()
    for p in permissions_:
        protocol = str(p["IpProtocol"])
        port = -1 if protocol == "-1" else int(p.get("FromPort", -1))
        sources = (
            [r["CidrIp"] for r in p.get("IpRanges", [])]
            + [r["CidrIpv6"] for r in p.get("Ipv6Ranges", [])]
            + [g["GroupId"] for g in p.get("UserIdGroupPairs", [])]
        )
        rules.update(Rule(protocol, port, source) for source in sources)
    return rules


def permissions(rules: set[Rule]) -> list[dict[str, Any]]:
    """Rules as AWS IpPermissions, one permission per rule."""
    result = []
    for rule in sorted(rules):
        perm: dict[str, Any] = {"IpProtocol": rule.protocol}
        if rule.protocol != "-1":
            perm.update(FromPort=rule.port, ToPort=rule.port)
        if rule.source.startswith("sg-"):
            perm["UserIdGroupPairs"] = [{"GroupId": rule.source}]
        elif ":" in rule.source:
            perm["Ipv6Ranges"] = [{"CidrIpv6": rule.source}]
        else:
            perm["IpRanges"] = [{"CidrIp": rule.source}]
        result.append(perm)
    return result
