"""``teardown``: remove everything carrying an environment's tags, in reverse dependency order.

Only resources tagged ``Project=<platform>`` and ``Environment=<env>`` are
touched (CloudFront's untaggable OAC, keys and key group by their
``maha-<env>-`` names). A protected environment is refused before any call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from rich.console import Console

from mahaops.aws import acm, cloudfront, dns, s3
from mahaops.aws.config import load_environment
from mahaops.aws.ec2 import LIVE_STATES, data_volumes
from mahaops.aws.plan import Context, Plan, context_of, tags_of
from mahaops.aws.secrets import SsmSecretStore
from mahaops.settings import DEFAULT_GROUP_DATA, SettingsError


@dataclass(frozen=True)
class Doomed:
    kind: str
    name: str
    delete: Callable[[], None]


def teardown(
    env: str,
    *,
    confirm: Callable[[Plan], bool] = lambda plan: False,
    yes: bool = False,
    session: boto3.Session | None = None,
    group_data: Path = DEFAULT_GROUP_DATA,
    console: Console | None = None,
) -> Plan:
    """Delete ``env``'s resources after ``confirm(plan)`` (or ``yes``); returns what was removed."""
    loaded = load_environment(env, group_data)
    if loaded.spec.protected:
        raise SettingsError(
            "group_data/aws.py", "aws_environments", f"{env}.protected: teardown refused"
        )
    ctx = context_of(loaded, session, console=console)
    ctx.step(f"finding what carries Environment={env}")
    doomed = find_doomed(ctx)
    plan = Plan()
    for item in doomed:
        plan.record(item.kind, item.name, "delete")
    if not doomed or not (yes or confirm(plan)):
        return Plan() if doomed else plan
    for item in doomed:
        ctx.step(f"deleting {item.kind.lower()} {item.name}")
        item.delete()
    return plan


def find_doomed(ctx: Context) -> list[Doomed]:
    """Everything of the environment, in the order it can be deleted."""
    return [
        *_dns(ctx),
        *_cdn(ctx),
        *_load_balancing(ctx),
        *_certificates(ctx),
        *_instances(ctx),
        *_data_volumes(ctx),
        *_iam(ctx),
        *_key_pairs(ctx),
        *_security_groups(ctx),
        *_network(ctx),
        *_buckets(ctx),
        *_secrets(ctx),
    ]


def _all(client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    """Every item of a list or describe call, through its paginator where botocore has one
    (an account with many groups, subnets or keys answers in pages)."""
    if client.can_paginate(operation):
        pages = client.get_paginator(operation).paginate(**kwargs)
        return [item for page in pages for item in page.get(key) or []]
    return list(getattr(client, operation)(**kwargs).get(key) or [])


def _owned(ctx: Context, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tag filters, checked again: deleting another environment's resource is never an option."""
    return [r for r in resources if ctx.owns(r.get("Tags"))]


def _retry_dependency(call: Callable[[], Any], attempts: int = 30, delay: float = 10) -> None:
    """Deleted ALBs and instances free their network interfaces a while after; wait for it."""
    for attempt in range(attempts):
        try:
            call()
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "DependencyViolation" or attempt == attempts - 1:
                raise
            time.sleep(delay)


# -- Route 53 ----------------------------------------------------------------------------------


def _dns(ctx: Context) -> list[Doomed]:
    """The zone's records naming this environment's ALB or distribution, and the validation
    records of the certificates it requested; never a record it did not make."""
    zone_id = ctx.spec.hosted_zone_id
    if zone_id is None:
        return []
    targets = set()
    elb = ctx.clients.elbv2
    for lb in (
        elb.get_paginator("describe_load_balancers").paginate().build_full_result()["LoadBalancers"]
    ):
        if _elb_owned(ctx, lb["LoadBalancerArn"]):
            targets.add(dns.fqdn(lb["DNSName"]))
    distribution = cloudfront.find_distribution(ctx)
    if distribution:
        targets.add(dns.fqdn(distribution["DomainName"]))
    validation = set()
    for region in sorted({ctx.clients.region, acm.CLOUDFRONT_REGION}):
        client = ctx.clients._client("acm", region)
        for summary in _all(client, "list_certificates", "CertificateSummaryList"):
            arn = summary["CertificateArn"]
            if ctx.owns(client.list_tags_for_certificate(CertificateArn=arn).get("Tags")):
                described = client.describe_certificate(CertificateArn=arn)["Certificate"]
                for option in described.get("DomainValidationOptions", []):
                    if record := option.get("ResourceRecord"):
                        validation.add((dns.fqdn(record["Name"]), record["Value"]))
    return [
        Doomed(
            "Route 53 record",
            f"{record['Name'].rstrip('.')} {record['Type']}",
            partial(dns.delete_records, ctx, zone_id, [record]),
        )
        for record in dns.owned_records(ctx, zone_id, targets, validation)
    ]


# -- CloudFront --------------------------------------------------------------------------------


def _cdn(ctx: Context) -> list[Doomed]:
    cf = ctx.clients.cloudfront
    doomed = []
    distribution = cloudfront.find_distribution(ctx)
    if distribution:
        doomed.append(
            Doomed(
                "CloudFront distribution",
                distribution["DomainName"],
                lambda: _delete_distribution(ctx, distribution["Id"]),
            )
        )
    groups = cloudfront.key_groups(cf)
    for group in (g["KeyGroup"] for g in groups):
        if group["KeyGroupConfig"]["Name"] == ctx.name("uploads"):
            doomed.append(
                Doomed(
                    "CloudFront key group",
                    group["KeyGroupConfig"]["Name"],
                    _by_etag(cf.get_key_group, cf.delete_key_group, group["Id"]),
                )
            )
    for key in cloudfront._signing_keys(ctx):
        doomed.append(
            Doomed(
                "CloudFront public key",
                key["Name"],
                _by_etag(cf.get_public_key, cf.delete_public_key, key["Id"]),
            )
        )
    controls = [
        item
        for page in cf.get_paginator("list_origin_access_controls").paginate()
        for item in page["OriginAccessControlList"].get("Items") or []
    ]
    for oac in controls:
        if oac["Name"] == ctx.name("s3"):
            doomed.append(
                Doomed(
                    "Origin access control",
                    oac["Name"],
                    _by_etag(
                        cf.get_origin_access_control, cf.delete_origin_access_control, oac["Id"]
                    ),
                )
            )
    return doomed


def _by_etag(
    get: Callable[..., Any], delete: Callable[..., Any], item_id: str
) -> Callable[[], None]:
    def run() -> None:
        delete(Id=item_id, IfMatch=get(Id=item_id)["ETag"])

    return run


def _delete_distribution(ctx: Context, dist_id: str) -> None:
    """CloudFront deletes only a disabled, deployed distribution (this takes minutes on AWS)."""
    cf = ctx.clients.cloudfront
    current = cf.get_distribution_config(Id=dist_id)
    config = current["DistributionConfig"]
    etag = current["ETag"]
    if config["Enabled"]:
        config["Enabled"] = False
        etag = cf.update_distribution(Id=dist_id, IfMatch=etag, DistributionConfig=config)["ETag"]
    ctx.step("waiting for the disabled distribution to deploy")
    cf.get_waiter("distribution_deployed").wait(
        Id=dist_id, WaiterConfig={"Delay": 30, "MaxAttempts": 60}
    )
    cf.delete_distribution(Id=dist_id, IfMatch=cf.get_distribution(Id=dist_id)["ETag"])


# -- load balancing ----------------------------------------------------------------------------


def _load_balancing(ctx: Context) -> list[Doomed]:
    elb = ctx.clients.elbv2
    doomed = []
    for lb in (
        elb.get_paginator("describe_load_balancers").paginate().build_full_result()["LoadBalancers"]
    ):
        if _elb_owned(ctx, lb["LoadBalancerArn"]):
            arn = lb["LoadBalancerArn"]
            doomed.append(
                Doomed("Load balancer", lb["LoadBalancerName"], partial(_delete_lb, ctx, arn))
            )
    for tg in (
        elb.get_paginator("describe_target_groups").paginate().build_full_result()["TargetGroups"]
    ):
        if _elb_owned(ctx, tg["TargetGroupArn"]):
            arn = tg["TargetGroupArn"]
            doomed.append(
                Doomed(
                    "Target group",
                    tg["TargetGroupName"],
                    partial(elb.delete_target_group, TargetGroupArn=arn),
                )
            )
    return doomed


def _elb_owned(ctx: Context, arn: str) -> bool:
    descriptions = ctx.clients.elbv2.describe_tags(ResourceArns=[arn])["TagDescriptions"]
    return bool(descriptions) and ctx.owns(descriptions[0].get("Tags"))


def _delete_lb(ctx: Context, arn: str) -> None:
    elb = ctx.clients.elbv2
    elb.modify_load_balancer_attributes(
        LoadBalancerArn=arn, Attributes=[{"Key": "deletion_protection.enabled", "Value": "false"}]
    )
    elb.delete_load_balancer(LoadBalancerArn=arn)  # its listeners go with it
    elb.get_waiter("load_balancers_deleted").wait(LoadBalancerArns=[arn])


# -- ACM certificates this environment requested (never one given by ARN) ---------------------


def _certificates(ctx: Context) -> list[Doomed]:
    doomed = []
    for region in sorted({ctx.clients.region, acm.CLOUDFRONT_REGION}):
        client = ctx.clients._client("acm", region)
        for summary in _all(client, "list_certificates", "CertificateSummaryList"):
            arn = summary["CertificateArn"]
            tags = client.list_tags_for_certificate(CertificateArn=arn).get("Tags")
            if not ctx.owns(tags):
                continue

            def delete(client: Any = client, arn: str = arn) -> None:
                for attempt in range(30):  # in use until the ALB or distribution is gone
                    try:
                        client.delete_certificate(CertificateArn=arn)
                        return
                    except ClientError as exc:
                        code = exc.response["Error"]["Code"]
                        if code != "ResourceInUseException" or attempt == 29:
                            raise
                        time.sleep(10)

            doomed.append(Doomed("ACM certificate", f"{summary['DomainName']} ({region})", delete))
    return doomed


# -- instances, IAM, key pairs -----------------------------------------------------------------


def _instances(ctx: Context) -> list[Doomed]:
    ec2 = ctx.clients.ec2
    filters = [*ctx.filters(), {"Name": "instance-state-name", "Values": LIVE_STATES}]
    reservations = _all(ec2, "describe_instances", "Reservations", Filters=filters)
    instances = _owned(ctx, [i for r in reservations for i in r["Instances"]])
    if not instances:
        return []
    ids = [i["InstanceId"] for i in instances]
    names = ", ".join(sorted(tags_of(i).get("Name", i["InstanceId"]) for i in instances))

    def terminate() -> None:
        for instance_id in ids:  # db hosts carry termination protection
            ec2.modify_instance_attribute(
                InstanceId=instance_id, DisableApiTermination={"Value": False}
            )
        ec2.terminate_instances(InstanceIds=ids)
        ec2.get_waiter("instance_terminated").wait(InstanceIds=ids)

    return [Doomed("EC2 instances", names, terminate)]


def _data_volumes(ctx: Context) -> list[Doomed]:
    """The db hosts' kept data volumes: only a teardown deletes them."""
    ec2 = ctx.clients.ec2
    doomed = []
    for name, volume in sorted(data_volumes(ctx).items()):
        volume_id = volume["VolumeId"]

        def delete(volume_id: str = volume_id) -> None:
            ec2.get_waiter("volume_available").wait(VolumeIds=[volume_id])
            ec2.delete_volume(VolumeId=volume_id)

        doomed.append(Doomed("EBS data volume", name, delete))
    return doomed


def _iam(ctx: Context) -> list[Doomed]:
    iam = ctx.clients.iam
    doomed = []
    for name in (ctx.name("app"), ctx.name("db"), ctx.name("node")):
        try:
            role = iam.get_role(RoleName=name)["Role"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "NoSuchEntity":
                continue
            raise
        if ctx.owns(role.get("Tags")):
            doomed.append(
                Doomed("IAM role + instance profile", name, partial(_delete_role, ctx, name))
            )
    return doomed


def _delete_role(ctx: Context, name: str) -> None:
    iam = ctx.clients.iam
    try:
        profile = iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "NoSuchEntity":
            raise
    else:
        for role in profile.get("Roles", []):
            iam.remove_role_from_instance_profile(
                InstanceProfileName=name, RoleName=role["RoleName"]
            )
        iam.delete_instance_profile(InstanceProfileName=name)
    for policy in _all(iam, "list_role_policies", "PolicyNames", RoleName=name):
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    for attached in _all(iam, "list_attached_role_policies", "AttachedPolicies", RoleName=name):
        iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    iam.delete_role(RoleName=name)


def _key_pairs(ctx: Context) -> list[Doomed]:
    ec2 = ctx.clients.ec2
    pairs = _owned(ctx, _all(ec2, "describe_key_pairs", "KeyPairs", Filters=ctx.filters()))
    return [
        Doomed("Key pair", p["KeyName"], partial(ec2.delete_key_pair, KeyName=p["KeyName"]))
        for p in pairs
    ]


# -- network -----------------------------------------------------------------------------------


def _security_groups(ctx: Context) -> list[Doomed]:
    ec2 = ctx.clients.ec2
    groups = _owned(
        ctx, _all(ec2, "describe_security_groups", "SecurityGroups", Filters=ctx.filters())
    )
    if not groups:
        return []

    def delete() -> None:
        # Groups reference each other; drop every rule first so any order then works.
        for group in groups:
            if group.get("IpPermissions"):
                ec2.revoke_security_group_ingress(
                    GroupId=group["GroupId"], IpPermissions=group["IpPermissions"]
                )
            if group.get("IpPermissionsEgress"):
                ec2.revoke_security_group_egress(
                    GroupId=group["GroupId"], IpPermissions=group["IpPermissionsEgress"]
                )
        for group in groups:
            _retry_dependency(partial(ec2.delete_security_group, GroupId=group["GroupId"]))

    names = ", ".join(sorted(g["GroupName"] for g in groups))
    return [Doomed("Security groups", names, delete)]


def _network(ctx: Context) -> list[Doomed]:
    ec2, filters = ctx.clients.ec2, ctx.filters()
    doomed = []
    live = {"Name": "state", "Values": ["pending", "available"]}
    for nat in _owned(
        ctx, _all(ec2, "describe_nat_gateways", "NatGateways", Filters=[*filters, live])
    ):
        nat_id = nat["NatGatewayId"]

        def delete_nat(nat_id: str = nat_id) -> None:
            ec2.delete_nat_gateway(NatGatewayId=nat_id)
            ec2.get_waiter("nat_gateway_deleted").wait(NatGatewayIds=[nat_id])

        doomed.append(Doomed("NAT gateway", nat_id, delete_nat))
    for address in _owned(ctx, _all(ec2, "describe_addresses", "Addresses", Filters=filters)):
        doomed.append(
            Doomed(
                "Elastic IP",
                address["PublicIp"],
                partial(ec2.release_address, AllocationId=address["AllocationId"]),
            )
        )
    for table in _owned(ctx, _all(ec2, "describe_route_tables", "RouteTables", Filters=filters)):
        doomed.append(
            Doomed(
                "Route table",
                tags_of(table).get("Name", table["RouteTableId"]),
                partial(_delete_route_table, ctx, table),
            )
        )
    for subnet in _owned(ctx, _all(ec2, "describe_subnets", "Subnets", Filters=filters)):
        doomed.append(
            Doomed(
                "Subnet",
                tags_of(subnet).get("Name", subnet["SubnetId"]),
                partial(_retry_dependency, partial(ec2.delete_subnet, SubnetId=subnet["SubnetId"])),
            )
        )
    for igw in _owned(
        ctx, _all(ec2, "describe_internet_gateways", "InternetGateways", Filters=filters)
    ):
        doomed.append(
            Doomed("Internet gateway", igw["InternetGatewayId"], partial(_delete_igw, ctx, igw))
        )
    for vpc in _owned(ctx, _all(ec2, "describe_vpcs", "Vpcs", Filters=filters)):
        doomed.append(
            Doomed(
                "VPC",
                vpc["VpcId"],
                partial(_retry_dependency, partial(ec2.delete_vpc, VpcId=vpc["VpcId"])),
            )
        )
    return doomed


def _delete_route_table(ctx: Context, table: dict[str, Any]) -> None:
    ec2 = ctx.clients.ec2
    for association in table.get("Associations", []):
        if not association.get("Main"):
            ec2.disassociate_route_table(AssociationId=association["RouteTableAssociationId"])
    ec2.delete_route_table(RouteTableId=table["RouteTableId"])


def _delete_igw(ctx: Context, igw: dict[str, Any]) -> None:
    ec2 = ctx.clients.ec2
    for attachment in igw.get("Attachments", []):
        ec2.detach_internet_gateway(
            InternetGatewayId=igw["InternetGatewayId"], VpcId=attachment["VpcId"]
        )
    ec2.delete_internet_gateway(InternetGatewayId=igw["InternetGatewayId"])


# -- data --------------------------------------------------------------------------------------


def _buckets(ctx: Context) -> list[Doomed]:
    doomed = []
    for purpose in s3.BUCKETS:
        name = s3.bucket_name(ctx, purpose)
        try:
            tags = ctx.clients.s3.get_bucket_tagging(Bucket=name)["TagSet"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("NoSuchBucket", "NoSuchTagSet", "404"):
                continue
            raise
        if ctx.owns(tags):
            doomed.append(
                Doomed(
                    "S3 bucket (and all its objects)",
                    name,
                    partial(_delete_bucket, ctx, name),
                )
            )
    return doomed


def _delete_bucket(ctx: Context, name: str) -> None:
    client = ctx.clients.s3
    for page in client.get_paginator("list_object_versions").paginate(Bucket=name):
        objects = [
            {"Key": v["Key"], "VersionId": v["VersionId"]}
            for v in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        if objects:
            client.delete_objects(Bucket=name, Delete={"Objects": objects, "Quiet": True})
    client.delete_bucket(Bucket=name)


def _secrets(ctx: Context) -> list[Doomed]:
    store = SsmSecretStore(ctx.env, client=ctx.clients.ssm, project=ctx.project)
    names = store.names()
    # The path is the environment's; the tag confirms the parameter was made for it.
    owned = [n for n in names if _parameter_tags(ctx, n).get("Environment") == ctx.env]
    if not owned:
        return []
    return [Doomed("Secrets", ", ".join(owned), lambda: _delete_parameters(ctx, owned))]


def _parameter_tags(ctx: Context, name: str) -> dict[str, str]:
    tags = ctx.clients.ssm.list_tags_for_resource(ResourceType="Parameter", ResourceId=name)[
        "TagList"
    ]
    return {t["Key"]: t["Value"] for t in tags}


def _delete_parameters(ctx: Context, names: list[str]) -> None:
    for start in range(0, len(names), 10):  # DeleteParameters takes at most 10 names
        ctx.clients.ssm.delete_parameters(Names=names[start : start + 10])
