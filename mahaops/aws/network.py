"""The network: a VPC with public and private subnets over two zones (or an existing VPC).

Public subnets hold the ALB and the NAT gateway and route to the internet
gateway; private subnets hold the instances (unless ``access="public"``) and
route out through the NAT gateway, so hosts can fetch packages but nobody can
reach them from outside.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from mahaops.aws.plan import PENDING, Context, ProvisionError, pending

_TIERS = ("public", "private")


def ensure_network(ctx: Context) -> None:
    """VPC, internet gateway, four subnets, NAT gateway and route tables, in that order."""
    spec = ctx.spec
    if spec.vpc_id:
        ctx.plan.record("VPC", spec.vpc_id, "no change", "existing VPC, not managed here")
        ctx.ids.update(
            {
                "vpc": spec.vpc_id,
                "subnets:public": list(spec.public_subnet_ids),
                "subnets:private": list(spec.private_subnet_ids),
            }
        )
        return
    ctx.step("network: VPC, subnets, gateways, routes")
    vpc = ensure_vpc(ctx)
    igw = ensure_internet_gateway(ctx, vpc)
    blocks = subnet_blocks(spec.vpc_cidr)
    for t, tier in enumerate(_TIERS):
        ids = [ensure_subnet(ctx, vpc, tier, z, blocks[t * 2 + z]) for z in range(2)]
        ctx.ids[f"subnets:{tier}"] = ids
    # Only private hosts route out through a NAT gateway (billed by the hour): with
    # access="public" every host has its own public address and none is made.
    needed = spec.nat_gateway and spec.access != "public"
    nat = ensure_nat_gateway(ctx, ctx.ids["subnets:public"][0]) if needed else None
    ensure_route_table(ctx, vpc, "public", {"GatewayId": igw})
    ensure_route_table(ctx, vpc, "private", {"NatGatewayId": nat} if nat else None)


def subnet_blocks(vpc_cidr: str) -> list[str]:
    """Four equal subnets at the start of the VPC: public a, public b, private a, private b."""
    network = ipaddress.ip_network(vpc_cidr, strict=False)
    new_prefix = min(network.prefixlen + 4, 28)
    if new_prefix - network.prefixlen < 2:
        raise ProvisionError(
            f"vpc_cidr {vpc_cidr} is too small for four subnets (use /24 or larger)"
        )
    return [
        str(block)
        for block, _ in zip(network.subnets(new_prefix=new_prefix), range(4), strict=False)
    ]


def _find(ctx: Context, describe: Any, key: str, name: str, *extra: dict[str, Any]) -> list[Any]:
    filters = [*ctx.filters(Name=name), *extra]
    # Checked again here: not every API (or emulator) honours every tag filter.
    return [r for r in describe(Filters=filters)[key] if ctx.owns(r.get("Tags"))]


def _spec(ctx: Context, resource_type: str, name: str, role: str = "network") -> list[Any]:
    return [{"ResourceType": resource_type, "Tags": ctx.tags(role, name)}]


def ensure_vpc(ctx: Context) -> str:
    ec2, name = ctx.clients.ec2, ctx.name("vpc")
    found = _find(ctx, ec2.describe_vpcs, "Vpcs", name)
    if found:
        vpc = found[0]
        if vpc["CidrBlock"] != ctx.spec.vpc_cidr:
            raise ProvisionError(
                f"VPC {name} ({vpc['VpcId']}) has {vpc['CidrBlock']}, not vpc_cidr "
                f"{ctx.spec.vpc_cidr}: a VPC's range cannot change; tear the environment down first"
            )
        ctx.plan.record("VPC", name, "no change", vpc["VpcId"])
        ctx.ids["vpc"] = vpc["VpcId"]
        return str(vpc["VpcId"])
    ctx.plan.record("VPC", name, "create", ctx.spec.vpc_cidr)
    if ctx.dry:
        ctx.ids["vpc"] = PENDING
        return PENDING
    vpc_id = ec2.create_vpc(CidrBlock=ctx.spec.vpc_cidr, TagSpecifications=_spec(ctx, "vpc", name))[
        "Vpc"
    ]["VpcId"]
    ec2.get_waiter("vpc_available").wait(VpcIds=[vpc_id])
    # Instances need DNS names inside the VPC (SSM, package mirrors, the ALB).
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsSupport={"Value": True})
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    ctx.ids["vpc"] = vpc_id
    return str(vpc_id)


def ensure_internet_gateway(ctx: Context, vpc: str) -> str:
    ec2, name = ctx.clients.ec2, ctx.name("igw")
    found = _find(ctx, ec2.describe_internet_gateways, "InternetGateways", name)
    if found:
        igw = found[0]
        attached = [a["VpcId"] for a in igw.get("Attachments", [])]
        if vpc in attached:
            ctx.plan.record("Internet gateway", name, "no change", igw["InternetGatewayId"])
            return str(igw["InternetGatewayId"])
        ctx.plan.record("Internet gateway", name, "update", f"attach to {vpc}")
        if not ctx.dry:
            ec2.attach_internet_gateway(InternetGatewayId=igw["InternetGatewayId"], VpcId=vpc)
        return str(igw["InternetGatewayId"])
    ctx.plan.record("Internet gateway", name, "create")
    if ctx.dry:
        return PENDING
    igw_id = ec2.create_internet_gateway(TagSpecifications=_spec(ctx, "internet-gateway", name))[
        "InternetGateway"
    ]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc)
    return str(igw_id)


def ensure_subnet(ctx: Context, vpc: str, tier: str, zone_index: int, cidr: str) -> str:
    ec2 = ctx.clients.ec2
    zone = ctx.spec.zones[zone_index]
    name = ctx.name(tier, zone[-1])
    found = [] if pending(vpc) else _find(ctx, ec2.describe_subnets, "Subnets", name)
    if found:
        subnet = found[0]
        if subnet["CidrBlock"] != cidr or subnet["AvailabilityZone"] != zone:
            raise ProvisionError(
                f"subnet {name} is {subnet['CidrBlock']} in {subnet['AvailabilityZone']}, "
                f"not {cidr} in {zone}: subnets cannot move; tear the environment down first"
            )
        ctx.plan.record("Subnet", name, "no change", subnet["SubnetId"])
        return str(subnet["SubnetId"])
    ctx.plan.record("Subnet", name, "create", f"{cidr} in {zone}")
    if ctx.dry:
        return PENDING
    subnet_id = ec2.create_subnet(
        VpcId=vpc,
        CidrBlock=cidr,
        AvailabilityZone=zone,
        TagSpecifications=_spec(ctx, "subnet", name),
    )["Subnet"]["SubnetId"]
    return str(subnet_id)


def ensure_nat_gateway(ctx: Context, subnet: str) -> str:
    ec2, name = ctx.clients.ec2, ctx.name("nat")
    live = {"Name": "state", "Values": ["pending", "available"]}
    found = (
        [] if pending(subnet) else _find(ctx, ec2.describe_nat_gateways, "NatGateways", name, live)
    )
    if found:
        ctx.plan.record("NAT gateway", name, "no change", found[0]["NatGatewayId"])
        return str(found[0]["NatGatewayId"])
    allocation = ensure_elastic_ip(ctx, ctx.name("nat-ip"))
    ctx.plan.record("NAT gateway", name, "create", "in the first public subnet")
    if ctx.dry:
        return PENDING
    nat_id = ec2.create_nat_gateway(
        SubnetId=subnet, AllocationId=allocation, TagSpecifications=_spec(ctx, "natgateway", name)
    )["NatGateway"]["NatGatewayId"]
    ctx.step(f"waiting for NAT gateway {nat_id}")
    ec2.get_waiter("nat_gateway_available").wait(NatGatewayIds=[nat_id])
    return str(nat_id)


def ensure_elastic_ip(ctx: Context, name: str) -> str:
    ec2 = ctx.clients.ec2
    found = _find(ctx, ec2.describe_addresses, "Addresses", name)
    if found:
        ctx.plan.record("Elastic IP", name, "no change", found[0]["PublicIp"])
        return str(found[0]["AllocationId"])
    ctx.plan.record("Elastic IP", name, "create", "for the NAT gateway")
    if ctx.dry:
        return PENDING
    return str(
        ec2.allocate_address(Domain="vpc", TagSpecifications=_spec(ctx, "elastic-ip", name))[
            "AllocationId"
        ]
    )


def ensure_route_table(ctx: Context, vpc: str, tier: str, target: dict[str, str] | None) -> None:
    """A tier's route table: the default route to ``target``, associated with the tier's subnets."""
    ec2, name = ctx.clients.ec2, ctx.name(tier, "routes")
    subnets: list[str] = ctx.ids[f"subnets:{tier}"]
    found = [] if pending(vpc) else _find(ctx, ec2.describe_route_tables, "RouteTables", name)
    if not found:
        ctx.plan.record("Route table", name, "create", _route_text(target))
        if ctx.dry:
            return
        table_id = ec2.create_route_table(
            VpcId=vpc, TagSpecifications=_spec(ctx, "route-table", name)
        )["RouteTable"]["RouteTableId"]
        if target:
            ec2.create_route(RouteTableId=table_id, DestinationCidrBlock="0.0.0.0/0", **target)
        for subnet in subnets:
            ec2.associate_route_table(RouteTableId=table_id, SubnetId=subnet)
        return
    table = found[0]
    table_id = table["RouteTableId"]
    default = next(
        (r for r in table["Routes"] if r.get("DestinationCidrBlock") == "0.0.0.0/0"), None
    )
    route_ok = _route_matches(default, target)
    associated = {a.get("SubnetId") for a in table.get("Associations", [])}
    missing = [s for s in subnets if s not in associated]
    if route_ok and not missing:
        ctx.plan.record("Route table", name, "no change", table_id)
        return
    detail = ", ".join(
        ([] if route_ok else [f"default route → {_route_text(target)}"])
        + [f"associate {s}" for s in missing]
    )
    ctx.plan.record("Route table", name, "update", detail)
    if ctx.dry:
        return
    if not route_ok:
        if default is not None:
            ec2.delete_route(RouteTableId=table_id, DestinationCidrBlock="0.0.0.0/0")
        if target and not pending(list(target.values())):
            ec2.create_route(RouteTableId=table_id, DestinationCidrBlock="0.0.0.0/0", **target)
    for subnet in missing:
        ec2.associate_route_table(RouteTableId=table_id, SubnetId=subnet)


def _route_matches(route: dict[str, Any] | None, target: dict[str, str] | None) -> bool:
    if target is None:
        return route is None
    if route is None:
        return False
    return all(route.get(k) == v for k, v in target.items())


def _route_text(target: dict[str, str] | None) -> str:
    if not target:
        return "no default route"
    value = next(iter(target.values()))
    return f"0.0.0.0/0 via {value}"
