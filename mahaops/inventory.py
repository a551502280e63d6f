"""Inventories as data: which hosts exist, their groups, and how to reach them.

The local inventory reads Docker labels (``maha.project``, ``maha.env``, ``maha.role``);
the AWS inventory reads EC2 tags (``Project``, ``Environment``, ``Role``). No state file:
the running containers and instances are the truth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from mahaops.roles import GROUPS


@dataclass(frozen=True)
class HostSpec:
    name: str
    groups: tuple[str, ...]  # inventory kind first ("local"/"aws"), then role groups
    data: dict[str, Any] = field(default_factory=dict)  # connection and per-host settings

    @property
    def private_address(self) -> str | None:
        value = self.data.get("private_address")
        return str(value) if value else None


def aws_environment_names(group_data_files: dict[str, dict[str, Any]]) -> set[str]:
    environments = group_data_files.get("aws", {}).get("aws_environments", {})
    return set(environments)


def kind_of(env: str, group_data_files: dict[str, dict[str, Any]]) -> str:
    """``aws`` for environments described in group_data/aws.py, else ``local`` (Docker)."""
    return "aws" if env in aws_environment_names(group_data_files) else "local"


def discover(kind: str, env: str) -> list[HostSpec]:
    if kind == "aws":
        from mahaops.aws.inventory import hosts as aws_hosts

        return list(aws_hosts(env))
    from mahaops.local.hosts import inventory_hosts

    return inventory_hosts(env)


def group_lists(hosts: list[HostSpec]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """pyinfra inventory-module form: group name -> [(host name, data)]."""
    groups: dict[str, list[tuple[str, dict[str, Any]]]] = {g: [] for g in GROUPS}
    for host in hosts:
        for group in host.groups:
            if group in groups:
                groups[group].append((host.name, dict(host.data)))
    return groups


def current_env(default: str = "local") -> str:
    return os.environ.get("MAHA_ENV", default)
