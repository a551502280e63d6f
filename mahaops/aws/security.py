"""Security groups: least privilege between the platform's roles, from the firewall's word.

Each role's group admits what the role's hosts declare in ``mahaops/firewall.py`` (the
same declarations, read with the same settings, that render every host's nftables
rules), so a port open on a host and in its security group cannot disagree. Sources
translate as: anyone -> anywhere; admins -> the environment's ``admin_cidrs``, for SSH
only (admin tools such as Graylog's web interface go through an SSH tunnel); a group ->
that role's security group; all hosts -> every EC2 role's group. The ``lb`` group is
the ALB's: it takes what the load balancer role declares (80/443 from anywhere) and
talks only to the ports app servers open to load balancers. Rules are compared as
sets: missing ones are authorised, extra ones revoked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from mahaops.aws.config import Environment
from mahaops.aws.plan import PENDING, Context, pending, tags_of
from mahaops.firewall import (
    ADMINS,
    ALL_HOSTS,
    ANYONE,
    Opening,
    host_openings,
    is_network,
    role_openings,
)
from mahaops.roles import ROLE_BY_GROUP, ROLE_BY_NAME
from mahaops.settings import GroupData, SettingsError, from_data
from mahaops.settings.app import NginxSettings
from mahaops.settings.aws import EC2_ROLES, AwsEnvironment

SG_ROLES: tuple[str, ...] = ("lb", *EC2_ROLES)
"""One group per role; ``lb`` is the ALB's."""

ANYWHERE = ("0.0.0.0/0", "::/0")

UNDECLARED_LOG_INPUTS: tuple[tuple[str, int], ...] = (("tcp", 514),)
"""Plain syslog's port, in the log group since the first provisioning though no role
listens on it (shippers send to ``log_syslog_tcp_port``). tests/aws pins it; the one rule
not derived from mahaops/firewall.py."""


class Rule(NamedTuple):
    protocol: str  # "tcp", "udp" or "-1" (all)
    port: int  # -1 with protocol "-1"
    source: str  # a CIDR, or "sg:<role>" resolved to the role's group id


def declared_openings(loaded: Environment, group_data: Path) -> dict[str, list[Opening]]:
    """Role -> what it opens on AWS, read from group_data as the hosts will read it.

    Checked before any AWS call: the target group sends to ``app_port``, which must be the
    port the app servers' nginx listens on and opens to load balancers.
    """
    files = GroupData(group_data)
    openings: dict[str, list[Opening]] = {}
    for role in SG_ROLES:
        data = files.merged(("aws", ROLE_BY_NAME[role].group))
        own = role_openings(role, data)
        openings[role] = own if role == "lb" else [*host_openings(data), *own]  # ALB: no sshd
        if role == "app":
            nginx = from_data(NginxSettings, data).nginx_listen_port
            if nginx != loaded.spec.app_port:
                raise SettingsError(
                    "group_data/aws.py",
                    f"aws_environments.{loaded.name}.app_port",
                    f"is {loaded.spec.app_port} but the app servers' nginx_listen_port is "
                    f"{nginx}: the load balancer's target port must be nginx's",
                )
    return openings


def _sources(opening: Opening, spec: AwsEnvironment) -> list[str]:
    result: list[str] = []
    for source in opening.sources:
        if source == ANYONE:
            result += ANYWHERE
        elif source == ADMINS:
            result += [] if opening.tunnel else spec.admin_cidrs
        elif source == ALL_HOSTS:
            result += [f"sg:{role}" for role in EC2_ROLES]
        elif is_network(source):
            result.append(source)
        else:
            result.append(f"sg:{ROLE_BY_GROUP[source].name}")
    return result


def desired_rules(
    spec: AwsEnvironment, openings: Mapping[str, list[Opening]]
) -> dict[str, tuple[set[Rule], set[Rule]]]:
    """Role -> (ingress, egress) rules, sources still named by role."""
    everywhere_out = {Rule("-1", -1, "0.0.0.0/0")}  # hosts fetch packages and reach AWS APIs
    rules: dict[str, tuple[set[Rule], set[Rule]]] = {}
    for role, declared in openings.items():
        ingress = {Rule(o.proto, o.port, s) for o in declared for s in _sources(o, spec)}
        rules[role] = (ingress, set(everywhere_out))
    lb_targets = {
        Rule(o.proto, o.port, f"sg:{role}")
        for role, declared in openings.items()
        for o in declared
        if "load_balancers" in o.sources
    }
    rules["lb"] = (rules["lb"][0], lb_targets)
    platform = [f"sg:{r}" for r in EC2_ROLES]
    rules["log"][0].update(Rule(p, port, s) for p, port in UNDECLARED_LOG_INPUTS for s in platform)
    return rules


def ensure_security_groups(ctx: Context, openings: Mapping[str, list[Opening]]) -> None:
    """Converge each role's security group to ``openings`` (from :func:`declared_openings`)."""
    ctx.step("security groups")
    vpc = ctx.ids["vpc"]
    existing = _existing_groups(ctx, vpc)
    for role in SG_ROLES:
        ctx.ids[f"sg:{role}"] = _ensure_group(ctx, vpc, role, existing.get(role))
    for role, (ingress, egress) in desired_rules(ctx.spec, openings).items():
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
