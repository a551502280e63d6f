"""The network spans two zones, and security groups let through only what each role needs."""

from __future__ import annotations

from mahaops.aws.security import flatten

from .conftest import REGION
from .test_inventory import SSM_AGENT


def _by_name(items, key="Tags"):
    return {next(t["Value"] for t in i[key] if t["Key"] == "Name"): i for i in items}


def test_vpc_has_public_and_private_subnets_in_two_zones(aws, provision_qa):
    provision_qa()
    ec2 = aws.client("ec2")
    vpc = ec2.describe_vpcs(Filters=[{"Name": "tag:Environment", "Values": ["qa"]}])["Vpcs"][0]
    subnets = _by_name(
        ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc["VpcId"]]}])["Subnets"]
    )
    assert set(subnets) == {
        "maha-qa-public-a",
        "maha-qa-public-b",
        "maha-qa-private-a",
        "maha-qa-private-b",
    }
    assert {s["AvailabilityZone"] for s in subnets.values()} == {f"{REGION}a", f"{REGION}b"}
    in_vpc = [{"Name": "vpc-id", "Values": [vpc["VpcId"]]}]
    tables = _by_name(
        t for t in ec2.describe_route_tables(Filters=in_vpc)["RouteTables"] if t.get("Tags")
    )
    public_default = [
        r
        for r in tables["maha-qa-public-routes"]["Routes"]
        if r.get("DestinationCidrBlock") == "0.0.0.0/0"
    ]
    private_default = [
        r
        for r in tables["maha-qa-private-routes"]["Routes"]
        if r.get("DestinationCidrBlock") == "0.0.0.0/0"
    ]
    assert public_default[0]["GatewayId"].startswith("igw-")
    # access="public": every host has its own address, so no NAT gateway is paid for
    assert private_default == []
    assert not ec2.describe_nat_gateways(Filters=[{"Name": "tag:Environment", "Values": ["qa"]}])[
        "NatGateways"
    ]


def test_private_hosts_route_out_through_a_nat_gateway(aws, provision_qa):
    provision_qa(access="bastion", bastion="admin@bastion.example.org")
    ec2 = aws.client("ec2")
    tables = _by_name(
        t
        for t in ec2.describe_route_tables(Filters=[{"Name": "tag:Environment", "Values": ["qa"]}])[
            "RouteTables"
        ]
    )
    (default,) = [
        r
        for r in tables["maha-qa-private-routes"]["Routes"]
        if r.get("DestinationCidrBlock") == "0.0.0.0/0"
    ]
    assert default["NatGatewayId"].startswith("nat-")  # private hosts reach out only via NAT


def test_existing_vpc_is_used_not_created(aws, provision_qa):
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.99.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(
            VpcId=vpc, CidrBlock=f"10.99.{i}.0/24", AvailabilityZone=f"{REGION}{'ab'[i % 2]}"
        )["Subnet"]["SubnetId"]
        for i in range(4)
    ]
    result = provision_qa(vpc_id=vpc, public_subnet_ids=subnets[:2], private_subnet_ids=subnets[2:])
    assert len(ec2.describe_vpcs()["Vpcs"]) == 2  # the default VPC and the given one
    assert not any(c.kind in ("Subnet", "NAT gateway") for c in result.plan)
    lb = aws.client("elbv2").describe_load_balancers(Names=["maha-qa"])["LoadBalancers"][0]
    assert lb["VpcId"] == vpc


def _groups(aws):
    ec2 = aws.client("ec2")
    groups = ec2.describe_security_groups(Filters=[{"Name": "tag:Environment", "Values": ["qa"]}])[
        "SecurityGroups"
    ]
    by_role = {next(t["Value"] for t in g["Tags"] if t["Key"] == "Role"): g for g in groups}
    ids = {role: g["GroupId"] for role, g in by_role.items()}
    return by_role, ids


def _sources(group, port, protocol="tcp"):
    return {
        r.source
        for r in flatten(group["IpPermissions"])
        if r.port == port and r.protocol == protocol
    }


def test_security_groups_allow_only_what_each_role_needs(aws, provision_qa):
    provision_qa()
    groups, ids = _groups(aws)
    assert _sources(groups["lb"], 443) == {"0.0.0.0/0", "::/0"}
    assert _sources(groups["lb"], 80) == {"0.0.0.0/0", "::/0"}
    assert _sources(groups["app"], 80) == {ids["lb"]}
    assert _sources(groups["db"], 5432) == {ids["app"], ids["worker"]}
    assert _sources(groups["cache"], 6379) == {ids["app"], ids["worker"]}
    assert _sources(groups["cache"], 6380) == {ids["app"], ids["worker"]}  # the job queue
    platform = {ids[r] for r in ("app", "db", "cache", "log", "worker")}
    for protocol, port in (("tcp", 514), ("tcp", 12201), ("udp", 12201), ("tcp", 1514)):
        assert _sources(groups["log"], port, protocol) == platform
    for role in ("app", "db", "cache", "log", "worker"):
        assert _sources(groups[role], 22) == {"203.0.113.0/24"}
        ports = {r.port for r in flatten(groups[role]["IpPermissions"])}
        assert ports <= {22, 80, 5432, 6379, 6380, 514, 12201, 1514}
    assert {(r.port, r.source) for r in flatten(groups["lb"]["IpPermissionsEgress"])} == {
        (80, ids["app"])
    }


def test_a_rule_added_by_hand_is_revoked(aws, provision_qa):
    provision_qa()
    groups, ids = _groups(aws)
    aws.client("ec2").authorize_security_group_ingress(
        GroupId=ids["db"],
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 5432,
                "ToPort": 5432,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            }
        ],
    )
    result = provision_qa()
    change = next(c for c in result.plan if c.name == "maha-qa-db")
    assert change.action == "update" and "-in tcp/5432 0.0.0.0/0" in change.detail
    groups, _ = _groups(aws)
    assert "0.0.0.0/0" not in _sources(groups["db"], 5432)


def test_no_admin_cidrs_means_no_ssh_from_anywhere(aws, provision_qa, monkeypatch):
    monkeypatch.setenv("MOTO_IAM_LOAD_MANAGED_POLICIES", "true")  # for AmazonSSMManagedInstanceCore
    provision_qa(admin_cidrs=[], access="ssm", **SSM_AGENT)
    groups, _ = _groups(aws)
    assert all(not _sources(g, 22) for g in groups.values())
