"""Settings of the base role, applied to every host (group_data/all.py and overlays)."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from mahaops.settings.models import Record, Settings, group_settings

_SIZE = re.compile(r"^\d+[KMGT]?$")
_USERNAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{value!r} is not a CIDR network (e.g. 203.0.113.0/24)") from None
    return value


def _journald_size(value: str) -> str:
    if not _SIZE.match(value):
        raise ValueError(f"{value!r} is not a size (e.g. 200M, 1G)")
    return value


def _username(value: str) -> str:
    if not _USERNAME.match(value):
        raise ValueError(f"{value!r} is not a valid Unix user name")
    return value


def _some_cidr(value: list[str]) -> list[str]:
    if not value:
        raise ValueError(
            "[] would drop SSH from every address at the next base run and lock every"
            " later deploy out; list the operators' networks (e.g. ['203.0.113.0/24'])"
        )
    return value


Cidr = Annotated[str, AfterValidator(_cidr)]
UserName = Annotated[str, AfterValidator(_username)]


class AdminUser(Record):
    """A person who administers the hosts: a sudo user let in by SSH key only."""

    name: UserName
    public_keys: list[str] = Field(min_length=1)
    sudo: bool = True


@group_settings("all", "local", "aws")
class BaseSettings(Settings):
    # -- platform --------------------------------------------------------------------------
    apt_proxy: str | None = None  # e.g. "http://apt-cache:3142"; None = hosts fetch directly
    platform_name: str = "maha"  # names users, paths and log tags

    # -- users and SSH ---------------------------------------------------------------------
    base_deploy_user: UserName = "maha"  # the account deploys log in as (key only, sudo)
    # Public keys that log in as the deploy user, added to what it has; on AWS the
    # inventory sets the environment's ssh_public_key, handed over at first contact.
    base_deploy_user_keys: list[str] = []
    base_admin_users: list[AdminUser] = []  # people with sudo; keys only
    base_removed_users: list[UserName] = []  # former admins whose accounts are removed
    base_admin_cidrs: Annotated[list[Cidr], AfterValidator(_some_cidr)] = [
        "0.0.0.0/0",
        "::/0",
    ]  # sources allowed to reach SSH; never empty: the firewall would lock the deploys out
    base_ssh_port: int = Field(22, ge=1, le=65535)  # sshd listen port
    base_ssh_max_auth_tries: int = Field(3, ge=1, le=10)  # dev-sec baseline: 2-3
    base_ssh_login_grace_time: int = Field(30, ge=5, le=600)  # seconds to authenticate
    base_ssh_client_alive_interval: int = Field(300, ge=0)  # seconds between keepalives
    base_ssh_allow_tcp_forwarding: bool = False  # keep off: no tunnels through app hosts
    base_ssh_allow_agent_forwarding: bool = False
    base_ssh_group: UserName = "ssh-users"  # only members may log in (AllowGroups)

    # -- time, locale, logs ----------------------------------------------------------------
    base_timezone: str = "Etc/UTC"  # tz database name
    base_ntp_servers: list[str] = ["0.debian.pool.ntp.org", "1.debian.pool.ntp.org"]
    base_journald_system_max_use: Annotated[str, AfterValidator(_journald_size)] = "500M"
    base_journald_max_retention: str = "1month"  # journald MaxRetentionSec

    # -- packages and upgrades -------------------------------------------------------------
    base_packages: list[str] = ["ca-certificates", "curl", "less", "vim-tiny", "htop"]
    base_apt_timeout: int = Field(600, ge=30, le=7200)  # seconds one apt command may run
    base_apt_fetch_timeout: int = Field(30, ge=5, le=600)  # seconds apt waits on a connection
    base_apt_retries: int = Field(3, ge=0, le=10)  # times apt retries a failed download
    base_unattended_upgrades: bool = True  # security updates, applied daily
    base_unattended_reboot: bool = False  # reboot automatically when an upgrade needs it
    base_unattended_reboot_time: str = "03:30"

    # -- kernel and firewall ---------------------------------------------------------------
    base_sysctl_hardening: bool = True  # skipped on containers, as dev-sec does
    base_sysctl_extra: dict[str, str | int] = {}  # more kernel settings, key -> value
    base_firewall: bool = True  # nftables, default-deny inbound
    base_firewall_extra_ports: list[int] = []  # more TCP ports open to everyone
    base_firewall_policy: Literal["drop", "reject"] = "drop"  # for refused inbound packets
