"""The Application Load Balancer: public entry point spreading traffic over the app servers.

With a domain, port 80 redirects to HTTPS and port 443 terminates TLS with
the ACM certificate; without one, port 80 forwards straight to the app
servers. The idle timeout is long (``alb_idle_timeout``, 1 h by default) so
WebSocket connections stay open.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mahaops.aws.plan import PENDING, Context, ProvisionError, pending

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"  # TLS 1.2+ with TLS 1.3


def _absent(call: Callable[..., Any], code: str, **kwargs: Any) -> Any:
    try:
        return call(**kwargs)
    except ClientError as exc:
        if exc.response["Error"]["Code"] == code:
            return None
        raise


def ensure_load_balancing(ctx: Context) -> None:
    ctx.step("load balancer, target group, listeners")
    lb_arn = ensure_load_balancer(ctx)
    tg_arn = ensure_target_group(ctx)
    ensure_targets(ctx, tg_arn)
    ensure_listeners(ctx, lb_arn, tg_arn)


# -- the load balancer -------------------------------------------------------------------------


def lb_attributes(ctx: Context) -> dict[str, str]:
    return {
        "idle_timeout.timeout_seconds": str(ctx.spec.alb_idle_timeout),
        "deletion_protection.enabled": str(ctx.spec.protected).lower(),
        "routing.http.drop_invalid_header_fields.enabled": "true",  # request smuggling guard
    }


def ensure_load_balancer(ctx: Context) -> str:
    elb, name = ctx.clients.elbv2, ctx.name()
    found = _absent(elb.describe_load_balancers, "LoadBalancerNotFound", Names=[name])
    wanted_attrs = lb_attributes(ctx)
    if not found:
        ctx.plan.record("Load balancer", name, "create", "internet-facing ALB, public subnets")
        if ctx.dry:
            ctx.ids["lb:dns"] = PENDING
            return PENDING
        lb = elb.create_load_balancer(
            Name=name,
            Subnets=ctx.ids["subnets:public"],
            SecurityGroups=[ctx.ids["sg:lb"]],
            Scheme="internet-facing",
            Type="application",
            Tags=ctx.tags("lb", name),
        )["LoadBalancers"][0]
        arn = lb["LoadBalancerArn"]
        elb.get_waiter("load_balancer_available").wait(LoadBalancerArns=[arn])
        _set_attributes(ctx, arn, wanted_attrs)
        ctx.ids["lb:dns"], ctx.ids["lb:zone"] = lb["DNSName"], lb["CanonicalHostedZoneId"]
        return str(arn)
    lb = found["LoadBalancers"][0]
    arn = lb["LoadBalancerArn"]
    _check_owned(ctx, arn, f"load balancer {name}")
    ctx.ids["lb:dns"], ctx.ids["lb:zone"] = lb["DNSName"], lb["CanonicalHostedZoneId"]
    drift = []
    if set(lb.get("SecurityGroups", [])) != {ctx.ids["sg:lb"]}:
        drift.append("security group")
    current = {
        a["Key"]: a["Value"]
        for a in elb.describe_load_balancer_attributes(LoadBalancerArn=arn)["Attributes"]
    }
    changed = {k: v for k, v in wanted_attrs.items() if current.get(k) != v}
    drift += sorted(changed)
    ctx.plan.record("Load balancer", name, "update" if drift else "no change", ", ".join(drift))
    if ctx.dry or not drift:
        return str(arn)
    if "security group" in drift:
        elb.set_security_groups(LoadBalancerArn=arn, SecurityGroups=[ctx.ids["sg:lb"]])
    if changed:
        _set_attributes(ctx, arn, changed)
    return str(arn)


def _set_attributes(ctx: Context, arn: str, attrs: dict[str, str]) -> None:
    ctx.clients.elbv2.modify_load_balancer_attributes(
        LoadBalancerArn=arn, Attributes=[{"Key": k, "Value": v} for k, v in attrs.items()]
    )


def _check_owned(ctx: Context, arn: str, what: str) -> None:
    descriptions = ctx.clients.elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"]
    if not descriptions or not ctx.owns(descriptions[0].get("Tags")):
        raise ProvisionError(f"{what} exists but is not tagged for {ctx.env}")


# -- the target group --------------------------------------------------------------------------


def tg_attributes(ctx: Context) -> dict[str, str]:
    return {
        "deregistration_delay.timeout_seconds": str(ctx.spec.deregistration_delay),
        # Socket.IO's polling fallback needs each client to stay on one server.
        "stickiness.enabled": "true",
        "stickiness.type": "lb_cookie",
    }


def ensure_target_group(ctx: Context) -> str:
    elb, name, spec = ctx.clients.elbv2, ctx.name("app"), ctx.spec
    found = _absent(elb.describe_target_groups, "TargetGroupNotFound", Names=[name])
    wanted = tg_attributes(ctx)
    if not found:
        ctx.plan.record(
            "Target group", name, "create", f"HTTP {spec.app_port}, health {spec.health_check_path}"
        )
        if ctx.dry:
            return PENDING
        tg = elb.create_target_group(
            Name=name,
            Protocol="HTTP",
            Port=spec.app_port,
            VpcId=ctx.ids["vpc"],
            TargetType="instance",
            HealthCheckProtocol="HTTP",
            HealthCheckPath=spec.health_check_path,
            HealthCheckIntervalSeconds=15,
            HealthyThresholdCount=2,
            UnhealthyThresholdCount=3,
            Matcher={"HttpCode": "200"},
            Tags=ctx.tags("app", name),
        )["TargetGroups"][0]
        arn = tg["TargetGroupArn"]
        elb.modify_target_group_attributes(
            TargetGroupArn=arn, Attributes=[{"Key": k, "Value": v} for k, v in wanted.items()]
        )
        return str(arn)
    tg = found["TargetGroups"][0]
    arn = tg["TargetGroupArn"]
    _check_owned(ctx, arn, f"target group {name}")
    if tg["Port"] != spec.app_port:
        raise ProvisionError(
            f"target group {name} uses port {tg['Port']}, not app_port {spec.app_port}: "
            "a target group's port cannot change; delete it (and its listeners) first"
        )
    attrs = elb.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    current = {a["Key"]: a["Value"] for a in attrs}
    changed = {k: v for k, v in wanted.items() if current.get(k) != v}
    drift = sorted(changed)
    if tg.get("HealthCheckPath") != spec.health_check_path:
        drift.append("health check path")
    ctx.plan.record("Target group", name, "update" if drift else "no change", ", ".join(drift))
    if ctx.dry or not drift:
        return str(arn)
    if changed:
        elb.modify_target_group_attributes(
            TargetGroupArn=arn, Attributes=[{"Key": k, "Value": v} for k, v in changed.items()]
        )
    if "health check path" in drift:
        elb.modify_target_group(TargetGroupArn=arn, HealthCheckPath=spec.health_check_path)
    return str(arn)


def ensure_targets(ctx: Context, tg_arn: str) -> None:
    """The app servers, and only they, are registered; a stopped one is not (AWS refuses
    it): it is registered by the run after it was started again."""
    stopped = ctx.ids.get("stopped", set())
    wanted = {i for i in ctx.ids.get("instances:app", []) if not pending(i) and i not in stopped}
    name = f"{ctx.name('app')} targets"
    registered: set[str] = set()
    if not pending(tg_arn):
        health = ctx.clients.elbv2.describe_target_health(TargetGroupArn=tg_arn)
        registered = {d["Target"]["Id"] for d in health["TargetHealthDescriptions"]}
    new_instances = len(ctx.ids.get("instances:app", [])) - len(wanted)
    add, drop = sorted(wanted - registered), sorted(registered - wanted)
    if not add and not drop and not new_instances:
        ctx.plan.record("Targets", name, "no change", f"{len(registered)} app server(s)")
        return
    parts = [f"register {i}" for i in add] + [f"deregister {i}" for i in drop]
    parts += [f"register {new_instances} new app server(s)"] if new_instances else []
    ctx.plan.record("Targets", name, "update", ", ".join(parts))
    if ctx.dry:
        return
    if add:
        ctx.clients.elbv2.register_targets(TargetGroupArn=tg_arn, Targets=[{"Id": i} for i in add])
    if drop:
        ctx.clients.elbv2.deregister_targets(
            TargetGroupArn=tg_arn, Targets=[{"Id": i} for i in drop]
        )


def wait_healthy(
    elbv2: Any,
    tg_arn: str,
    *,
    instance_ids: Sequence[str] = (),
    timeout: float = 600,
    interval: float = 15,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Wait until every registered target (or those of ``instance_ids``) is healthy; after
    ``timeout`` s, say which are not.

    Run after the app is deployed (a fresh instance has nothing listening yet)::

        wait_healthy(clients.elbv2, tg_arn, timeout=300)
    """
    deadline = clock() + timeout
    while True:
        which: dict[str, Any] = (
            {"Targets": [{"Id": i} for i in instance_ids]} if instance_ids else {}
        )
        descriptions = elbv2.describe_target_health(TargetGroupArn=tg_arn, **which)[
            "TargetHealthDescriptions"
        ]
        unhealthy = [d for d in descriptions if d["TargetHealth"]["State"] != "healthy"]
        if descriptions and not unhealthy:
            return
        if clock() >= deadline:
            raise ProvisionError(
                f"target group {tg_arn.rsplit('/', 2)[-2]}: not healthy after {timeout:.0f} s: "
                + (", ".join(_health_text(d) for d in unhealthy) or "no targets registered")
            )
        sleep(interval)


def _health_text(description: dict[str, Any]) -> str:
    health = description["TargetHealth"]
    reason = health.get("Reason") or health.get("Description") or ""
    return f"{description['Target']['Id']} {health['State']}" + (f" ({reason})" if reason else "")


# -- the listeners -----------------------------------------------------------------------------


def desired_listeners(ctx: Context, tg_arn: str) -> dict[int, dict[str, Any]]:
    forward = [{"Type": "forward", "TargetGroupArn": tg_arn}]
    certificate = ctx.ids.get("certificate", ctx.spec.certificate_arn)
    if not certificate:
        return {80: {"Protocol": "HTTP", "DefaultActions": forward}}
    redirect = {
        "Type": "redirect",
        "RedirectConfig": {"Protocol": "HTTPS", "Port": "443", "StatusCode": "HTTP_301"},
    }
    return {
        80: {"Protocol": "HTTP", "DefaultActions": [redirect]},
        443: {
            "Protocol": "HTTPS",
            "DefaultActions": forward,
            "Certificates": [{"CertificateArn": certificate}],
            "SslPolicy": TLS_POLICY,
        },
    }


def _listener_key(listener: dict[str, Any]) -> tuple[Any, ...]:
    """What matters of a listener, in a form both AWS's answer and ours reduce to."""
    actions = []
    for action in listener.get("DefaultActions", []):
        redirect = action.get("RedirectConfig") or {}
        actions.append(
            (
                action["Type"],
                action.get("TargetGroupArn"),
                redirect.get("Protocol"),
                redirect.get("Port"),
                redirect.get("StatusCode"),
            )
        )
    certificates = tuple(c["CertificateArn"] for c in listener.get("Certificates") or [])
    https = listener["Protocol"] == "HTTPS"  # a TLS policy means nothing on plain HTTP
    return (listener["Protocol"], tuple(actions), certificates, https and listener.get("SslPolicy"))


def ensure_listeners(ctx: Context, lb_arn: str, tg_arn: str) -> None:
    elb = ctx.clients.elbv2
    wanted = desired_listeners(ctx, tg_arn)
    current: dict[int, dict[str, Any]] = {}
    if not pending(lb_arn):
        for listener in elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]:
            current[listener["Port"]] = listener
    for port, listener in wanted.items():
        name = f"{ctx.name()} :{port}"
        summary = _listener_text(listener)
        have = current.pop(port, None)
        if have is None:
            ctx.plan.record("Listener", name, "create", summary)
            if not ctx.dry:
                elb.create_listener(
                    LoadBalancerArn=lb_arn, Port=port, Tags=ctx.tags("lb", name), **listener
                )
        elif _listener_key(have) != _listener_key(listener):
            ctx.plan.record("Listener", name, "update", summary)
            if not ctx.dry:
                elb.modify_listener(ListenerArn=have["ListenerArn"], Port=port, **listener)
        else:
            ctx.plan.record("Listener", name, "no change", summary)
    for port, have in current.items():
        ctx.plan.record("Listener", f"{ctx.name()} :{port}", "delete", "not in the description")
        if not ctx.dry:
            elb.delete_listener(ListenerArn=have["ListenerArn"])


def _listener_text(listener: dict[str, Any]) -> str:
    action = listener["DefaultActions"][0]
    target = "redirect to HTTPS" if action["Type"] == "redirect" else "forward to app servers"
    return f"{listener['Protocol']}: {target}"


def wait_in_service(
    env: str,
    instance_ids: Sequence[str],
    *,
    session: Any = None,
    group_data: Path | None = None,
    timeout: float = 300,
    interval: float = 5,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """After a rolling step on AWS: wait until the load balancer sends traffic to these
    app servers again, so the next one only leaves once this one is back."""
    elbv2, arn = _app_target_group(env, session, group_data)
    wait_healthy(
        elbv2,
        arn,
        instance_ids=instance_ids,
        timeout=timeout,
        interval=interval,
        sleep=sleep,
        clock=clock,
    )


def _app_target_group(env: str, session: Any, group_data: Path | None) -> tuple[Any, str]:
    """The ELB client and the ARN of ``env``'s app target group (raises if none)."""
    from mahaops.aws.config import load_environment
    from mahaops.aws.session import CLIENT_CONFIG, make_session
    from mahaops.settings import DEFAULT_GROUP_DATA

    loaded = load_environment(env, group_data or DEFAULT_GROUP_DATA)
    session = session or make_session(loaded.spec.region, loaded.spec.profile)
    elbv2 = session.client("elbv2", config=CLIENT_CONFIG)
    name = f"{loaded.project}-{env}-app"
    groups = _absent(elbv2.describe_target_groups, "TargetGroupNotFound", Names=[name])
    if not groups:
        raise ProvisionError(f"no target group {name}: is {env} provisioned?")
    return elbv2, groups["TargetGroups"][0]["TargetGroupArn"]


def app_target_health(
    env: str, *, session: Any = None, group_data: Path | None = None
) -> dict[str, str]:
    """Instance id -> target state (healthy, draining, unhealthy...) in the app target group,
    for ``invoke status``."""
    elbv2, arn = _app_target_group(env, session, group_data)
    found = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in found}
