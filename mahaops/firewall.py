"""Which ports each role opens, and to whom: the host firewall's single source of truth.

The base role renders every host's nftables ruleset from these declarations, so a
port is reachable only when a role on that host declares it, and only from the
sources it names: the admin networks, anyone, or the private addresses of the
hosts in given inventory groups. The AWS security groups mirror the same intent.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ANYONE = "anyone"
ADMINS = "admins"
ALL_HOSTS = "all"


@dataclass(frozen=True)
class Opening:
    port: int
    proto: str  # tcp | udp
    sources: tuple[str, ...]  # ANYONE, ADMINS, ALL_HOSTS or inventory group names
    comment: str


def declared(roles: Iterable[str], data: Mapping[str, Any]) -> list[Opening]:
    """The openings of a host with ``roles`` (role names), its settings in ``data``."""
    openings = [Opening(int(data.get("base_ssh_port", 22)), "tcp", (ADMINS,), "SSH")]
    openings += [
        Opening(int(p), "tcp", (ANYONE,), "extra")
        for p in data.get("base_firewall_extra_ports", [])
    ]
    clients = ("app_servers", "workers")
    for role in roles:
        if role == "db":
            port = int(data.get("postgresql_port", 5432))
            openings.append(Opening(port, "tcp", clients, "PostgreSQL"))
        elif role == "cache":
            port = int(data.get("redis_port", 6379))
            openings.append(Opening(port, "tcp", clients, "Redis"))
        elif role == "app":
            port = int(data.get("nginx_listen_port", 80))
            openings.append(Opening(port, "tcp", ("load_balancers",), "nginx (from the LB)"))
        elif role == "lb":
            openings.append(Opening(int(data.get("lb_http_port", 80)), "tcp", (ANYONE,), "HTTP"))
            openings.append(Opening(int(data.get("lb_https_port", 443)), "tcp", (ANYONE,), "HTTPS"))
        elif role == "log":
            syslog = int(data.get("log_syslog_tcp_port", 1514))
            openings.append(Opening(syslog, "tcp", (ALL_HOSTS,), "syslog"))
            if data.get("log_backend", "graylog") == "graylog":  # the rsyslog receiver has no GELF
                gelf = int(data.get("log_gelf_port", 12201))
                openings.append(Opening(gelf, "tcp", (ALL_HOSTS,), "GELF"))
                openings.append(Opening(gelf, "udp", (ALL_HOSTS,), "GELF"))
                ui = int(data.get("graylog_http_port", 9000))
                openings.append(Opening(ui, "tcp", (ADMINS,), "Graylog web interface"))
    return openings


@dataclass(frozen=True)
class Rule:
    port: int
    proto: str
    family: str  # ip | ip6 | "" (any source)
    addresses: tuple[str, ...]
    comment: str


def rules(
    openings: Iterable[Opening],
    admin_cidrs: Iterable[str],
    group_addresses: Mapping[str, Iterable[str]],
) -> list[Rule]:
    """nftables rules for ``openings``, with group sources resolved to addresses."""
    result: list[Rule] = []
    admin = list(admin_cidrs)
    for opening in openings:
        if ANYONE in opening.sources:
            result.append(Rule(opening.port, opening.proto, "", (), opening.comment))
            continue
        addresses: list[str] = []
        for source in opening.sources:
            if source == ADMINS:
                addresses += admin
            else:
                addresses += list(group_addresses.get(source, ()))
        networks = sorted({str(ipaddress.ip_network(a, strict=False)) for a in addresses})
        if any(n in ("0.0.0.0/0",) for n in networks) and any(n == "::/0" for n in networks):
            result.append(Rule(opening.port, opening.proto, "", (), opening.comment))
            continue
        for family, version in (("ip", 4), ("ip6", 6)):
            subset = tuple(n for n in networks if ipaddress.ip_network(n).version == version)
            if subset:
                result.append(Rule(opening.port, opening.proto, family, subset, opening.comment))
    return result
