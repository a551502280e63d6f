"""Hosts as data: which hosts an environment has, their groups, and how to reach them.

The local inventory reads Docker labels (``maha.project``, ``maha.env``, ``maha.role``);
the AWS inventory reads EC2 tags (``Project``, ``Environment``, ``Role``). No state file:
the running containers and instances are the truth.

This module is below both inventories: they build :class:`HostSpec` and import it from
here, and :func:`discover` reaches them by name (see ``_PROVIDERS``), so no import cycle
forms and docker/boto3 load only for the kind of environment in use.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
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


# Inventory kind -> (module, function(env) -> HostSpecs). Named rather than imported: the
# providers depend on this module, never the reverse.
_PROVIDERS: dict[str, tuple[str, str]] = {
    "local": ("mahaops.local.hosts", "inventory_hosts"),
    "aws": ("mahaops.aws.inventory", "hosts"),
}


def aws_environment_names(group_data_files: Mapping[str, Mapping[str, Any]]) -> set[str]:
    environments = group_data_files.get("aws", {}).get("aws_environments", {})
    return set(environments)


def kind_of(env: str, group_data_files: Mapping[str, Mapping[str, Any]]) -> str:
    """``aws`` for environments described in group_data/aws.py, else ``local`` (Docker)."""
    return "aws" if env in aws_environment_names(group_data_files) else "local"


def discover(kind: str, env: str) -> list[HostSpec]:
    """The running hosts of ``env``, an environment of ``kind`` (``local`` or ``aws``)."""
    module, function = _PROVIDERS[kind]
    return list(getattr(importlib.import_module(module), function)(env))


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
