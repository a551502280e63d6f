"""``provision``: converge one environment, step by step, into a plan.

The order is the order of dependencies: network, security groups, key pair,
buckets, IAM, instances, load balancer, CloudFront, DNS aliases, then the bucket policies
that name the distribution. Everything is checked (settings, SSH key file)
before the first API call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from rich.console import Console

from mahaops.aws import acm, cloudfront, dns, ec2, elb, iam, network, s3, security
from mahaops.aws.config import load_environment
from mahaops.aws.plan import Plan, context_of, pending
from mahaops.settings import DEFAULT_GROUP_DATA


@dataclass
class Result:
    plan: Plan
    outputs: dict[str, Any]  # what an operator wants next: endpoints, buckets


def provision(
    env: str,
    *,
    dry: bool = False,
    session: boto3.Session | None = None,
    group_data: Path = DEFAULT_GROUP_DATA,
    console: Console | None = None,
    yes: bool = False,
    confirm: Callable[[str], bool] = lambda what: False,
) -> Result:
    """Converge AWS to ``env``'s description; with ``dry``, only say what would change.

    Stopping or terminating a db host happens only after ``confirm(what)`` (or ``yes``).
    """
    loaded = load_environment(env, group_data)
    openings = security.declared_openings(loaded, group_data)
    public_key = ec2.read_public_key(env, loaded.spec)
    ec2.require_ssm_agent(env, loaded.spec)
    ctx = context_of(loaded, session, dry=dry, console=console)
    ctx.confirm = (lambda what: True) if yes else confirm
    dns.check_zone(ctx)  # read only: a wrong zone is refused before anything is made
    network.ensure_network(ctx)
    security.ensure_security_groups(ctx, openings)
    key_name = ec2.ensure_key_pair(ctx, public_key)
    s3.ensure_buckets(ctx)
    iam.ensure_iam(ctx)
    ec2.ensure_instances(ctx, key_name)
    acm.ensure_certificates(ctx)
    elb.ensure_load_balancing(ctx)
    distribution = cloudfront.ensure_cdn(ctx)
    dns.ensure_aliases(ctx)
    for purpose in s3.BUCKETS:
        readers = None if pending(distribution) or purpose == "backups" else distribution
        s3.ensure_bucket_policy(ctx, purpose, readers)  # backups: no reader but the db role
    outputs = {
        "load balancer": ctx.ids.get("lb:dns"),
        "CloudFront": ctx.ids.get("cdn:domain"),
        "uploads bucket": ctx.ids.get("bucket:uploads"),
        "static bucket": ctx.ids.get("bucket:static"),
        "backup bucket": ctx.ids.get("bucket:backups"),
    }
    return Result(ctx.plan, outputs)
