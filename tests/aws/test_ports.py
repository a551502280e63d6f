"""Security groups and host firewalls open the same ports: both come from mahaops/firewall.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mahaops import firewall
from mahaops.aws.security import SG_ROLES, UNDECLARED_LOG_INPUTS, flatten
from mahaops.roles import ROLE_BY_NAME
from mahaops.settings import GroupData, SettingsError

from .conftest import Calls, WriteGroupData

# Every port moved off its default: a number repeated anywhere but the settings models
# would show here as a port open on one side only.
MOVED = {
    "all.py": (
        "postgresql_port = 5433\nredis_port = 6390\nredis_queue_port = 6391\nbase_ssh_port = 2222\n"
    ),
    "app_servers.py": "nginx_listen_port = 8080\nbase_firewall_extra_ports = [8443]\n",
    "log_servers.py": "graylog_http_port = 9001\n",
}


def _moved(write_group_data: WriteGroupData, **qa: object) -> Path:
    directory = write_group_data(**qa)
    for name, text in MOVED.items():
        (directory / name).write_text(text)
    return directory


def _host_ports(role: str, directory: Path) -> set[tuple[str, int]]:
    """What a host of ``role`` (the ALB for lb) opens, by its firewall's declarations."""
    data = GroupData(directory).merged(("aws", ROLE_BY_NAME[role].group))
    openings = (
        firewall.role_openings(role, data) if role == "lb" else firewall.declared([role], data)
    )
    return {(o.proto, o.port) for o in openings if not o.tunnel}


def test_every_role_opens_the_same_ports_on_its_hosts_and_in_its_security_group(
    aws, provision_qa, write_group_data
):
    directory = _moved(write_group_data, app_port=8080)
    provision_qa(group_data=directory)
    ec2 = aws.client("ec2")
    found = ec2.describe_security_groups(Filters=[{"Name": "tag:Environment", "Values": ["qa"]}])
    groups = {
        next(t["Value"] for t in g["Tags"] if t["Key"] == "Role"): g
        for g in found["SecurityGroups"]
    }
    ids = {role: g["GroupId"] for role, g in groups.items()}
    assert set(groups) == set(SG_ROLES)
    for role in SG_ROLES:
        in_group = {(r.protocol, r.port) for r in flatten(groups[role]["IpPermissions"])}
        expected = _host_ports(role, directory)
        if role == "log":
            expected |= set(UNDECLARED_LOG_INPUTS)
        assert in_group == expected, role

    def sources(role: str, port: int) -> set[str]:
        return {r.source for r in flatten(groups[role]["IpPermissions"]) if r.port == port}

    # Group-scoped ports admit exactly the groups the firewall names.
    clients = {ids["app"], ids["worker"]}
    assert sources("db", 5433) == sources("cache", 6390) == sources("cache", 6391) == clients
    assert sources("app", 8080) == {ids["lb"]}
    assert {(r.port, r.source) for r in flatten(groups["lb"]["IpPermissionsEgress"])} == {
        (8080, ids["app"])
    }


def test_target_port_and_nginx_must_agree_before_any_call(
    provision_qa, write_group_data, calls: Calls
):
    directory = _moved(write_group_data)  # app_port stays 80, nginx listens on 8080
    with pytest.raises(SettingsError) as caught:
        provision_qa(group_data=directory)
    assert calls.all() == []
    assert caught.value.key == "aws_environments.qa.app_port"
    assert "nginx_listen_port is 8080" in caught.value.message
