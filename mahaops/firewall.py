"""Which ports each role opens, and to whom: the single source of truth for ports.

The base role renders every host's nftables ruleset from these declarations, so a
port is reachable only when a role on that host declares it, and only from the
sources it names: the admin networks, anyone, or the private addresses of the
hosts in given inventory groups. The AWS security groups are derived from the same
declarations (``mahaops/aws/security.py``). Port numbers and their defaults are the
settings models'; none is repeated here.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mahaops.settings import from_data
from mahaops.settings.app import NginxSettings
from mahaops.settings.base import BaseSettings
from mahaops.settings.cache import RedisClientSettings
from mahaops.settings.db import PostgresBackupOffhostSettings, PostgresClientSettings
from mahaops.settings.lb import LbSettings
from mahaops.settings.log import LogServerSettings, LogShippingSettings
from mahaops.settings.mail import MailClientSettings
from mahaops.settings.storage import StorageClientSettings

ANYONE = "anyone"
ADMINS = "admins"
ALL_HOSTS = "all"
CLIENTS = ("app_servers", "workers")  # who uses the data tier


@dataclass(frozen=True)
class Opening:
    port: int
    proto: str  # tcp | udp
    sources: tuple[str, ...]  # ANYONE, ADMINS, ALL_HOSTS, inventory group names or CIDRs
    comment: str
    tunnel: bool = False
    """An admin's tool: where a security group guards the host (AWS) it stays closed
    there, and admins reach it through an SSH tunnel (``invoke logs.ui``)."""


def _db(data: Mapping[str, Any]) -> list[Opening]:
    port = from_data(PostgresClientSettings, data).postgresql_port
    return [Opening(port, "tcp", CLIENTS, "PostgreSQL")]


def _cache(data: Mapping[str, Any]) -> list[Opening]:
    redis = from_data(RedisClientSettings, data)
    return [
        Opening(redis.redis_port, "tcp", CLIENTS, "Redis"),
        Opening(redis.redis_queue_port, "tcp", CLIENTS, "Redis job queue"),
    ]


def _app(data: Mapping[str, Any]) -> list[Opening]:
    nginx = from_data(NginxSettings, data)
    # On AWS the load balancer is no inventory host: its subnets come as trusted proxies.
    proxies = tuple(_network(cidr) for cidr in nginx.nginx_real_ip_from)
    return [
        Opening(nginx.nginx_listen_port, "tcp", ("load_balancers", *proxies), "nginx (from the LB)")
    ]


def _network(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr, strict=False))


def is_network(source: str) -> bool:
    """A source that is a network itself (a CIDR), not a name."""
    return "/" in source


def _lb(data: Mapping[str, Any]) -> list[Opening]:
    lb = from_data(LbSettings, data)
    return [
        Opening(lb.lb_http_port, "tcp", (ANYONE,), "HTTP"),
        Opening(lb.lb_https_port, "tcp", (ANYONE,), "HTTPS"),
    ]


def _log(data: Mapping[str, Any]) -> list[Opening]:
    shipping = from_data(LogShippingSettings, data)
    openings = [Opening(shipping.log_syslog_tcp_port, "tcp", (ALL_HOSTS,), "syslog")]
    if shipping.log_backend == "graylog":  # the rsyslog receiver has no GELF nor web interface
        gelf = shipping.log_gelf_port
        server = from_data(LogServerSettings, data)
        openings += [
            Opening(gelf, "tcp", (ALL_HOSTS,), "GELF"),
            Opening(gelf, "udp", (ALL_HOSTS,), "GELF"),
        ]
        # On loopback (the default) the web interface is reached through an SSH tunnel only:
        # nothing to open. On the private address, only the networks named for it.
        if server.graylog_http_bind == "private" and server.graylog_admin_cidrs:
            sources = tuple(_network(c) for c in server.graylog_admin_cidrs)
            openings.append(Opening(server.graylog_http_port, "tcp", sources, "Graylog web"))
    if from_data(PostgresBackupOffhostSettings, data).postgresql_backup_offhost:
        # The db hosts put their dumps to the backup store (a forced command, no shell).
        ssh = from_data(BaseSettings, data).base_ssh_port
        openings.append(Opening(ssh, "tcp", ("db_servers",), "SSH (the backup store)"))
    return openings


def _mail(data: Mapping[str, Any]) -> list[Opening]:
    port = from_data(MailClientSettings, data).mail_smtp_port
    return [Opening(port, "tcp", ("workers",), "SMTP (the mail sink)")]


def _storage(data: Mapping[str, Any]) -> list[Opening]:
    port = from_data(StorageClientSettings, data).storage_port
    # Browsers reach the S3 API at its port published on 127.0.0.1 (presigned uploads and
    # downloads): docker-proxy connects from the Docker network's gateway, admitted alone.
    gateway = str(data.get("docker_gateway") or "")
    published = (f"{gateway}/32",) if gateway and ":" not in gateway else ()
    return [Opening(port, "tcp", (*CLIENTS, *published), "S3 API (the storage)")]


_BY_ROLE: dict[str, Callable[[Mapping[str, Any]], list[Opening]]] = {
    "db": _db,
    "cache": _cache,
    "app": _app,
    "lb": _lb,
    "log": _log,
    "mail": _mail,
    "storage": _storage,
}


def role_openings(role: str, data: Mapping[str, Any]) -> list[Opening]:
    """What ``role`` itself opens (none for base or worker), its settings in ``data``."""
    declare = _BY_ROLE.get(role)
    return declare(data) if declare else []


def host_openings(data: Mapping[str, Any]) -> list[Opening]:
    """What every host opens, whatever its roles: SSH and the extra ports."""
    base = from_data(BaseSettings, data)
    return [
        Opening(base.base_ssh_port, "tcp", (ADMINS,), "SSH"),
        *(Opening(p, "tcp", (ANYONE,), "extra") for p in base.base_firewall_extra_ports),
    ]


def declared(roles: Iterable[str], data: Mapping[str, Any]) -> list[Opening]:
    """The openings of a host with ``roles`` (role names), its settings in ``data``."""
    return [*host_openings(data), *(o for role in roles for o in role_openings(role, data))]


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
            elif is_network(source):
                addresses.append(source)
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
