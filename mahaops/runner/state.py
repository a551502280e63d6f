"""Hosts, their checked settings and the operator's limit, made into pyinfra's state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyinfra.api import Config, Inventory, State

from mahaops.hosts import HostSpec, discover, kind_of
from mahaops.roles import BASE, ROLE_BY_GROUP, ROLES, Role, role
from mahaops.settings import GroupData, SettingsError, all_models, from_data


class UsageError(ValueError):
    pass


def load_hosts(
    env: str, group_data: GroupData, hosts_json: Path | None
) -> tuple[str, list[HostSpec]]:
    """The environment's kind and hosts: discovered, or read from ``hosts_json`` (tests)."""
    kind = kind_of(env, group_data.files)
    if hosts_json:
        raw = json.loads(hosts_json.read_text())
        return kind, [HostSpec(h["name"], tuple(h["groups"]), h["data"]) for h in raw]
    return kind, discover(kind, env)


def check_limit(limit: Sequence[str], hosts: Sequence[HostSpec]) -> None:
    """Every name in ``limit`` is a host or a group of the environment."""
    known = {h.name for h in hosts} | {g for h in hosts for g in h.groups}
    unknown = set(limit) - known
    if unknown:
        raise UsageError(f"--limit: no host or group named {', '.join(sorted(unknown))}")


def apply_limit(state: State, limit: Sequence[str]) -> None:
    """Only the hosts named in ``limit``, or in a group it names, are connected and run."""
    if limit:
        state.limit_hosts = [
            h for h in state.inventory if h.name in limit or set(h.groups) & set(limit)
        ]


def select_roles(names: list[str]) -> list[Role]:
    if not names:
        return [BASE, *ROLES]
    wanted = {role(n).name for n in names}  # raises on an unknown role
    return [r for r in (BASE, *ROLES) if r.name in wanted]


def host_roles(spec: HostSpec) -> list[Role]:
    return [BASE, *(ROLE_BY_GROUP[g] for g in spec.groups if g in ROLE_BY_GROUP)]


def check_host_settings(spec: HostSpec, data: dict[str, Any]) -> None:
    for model in all_models():
        try:
            from_data(model, data)
        except Exception as exc:
            raise SettingsError(f"host {spec.name}", "-", str(exc)) from None


def build_state(
    hosts: list[HostSpec], group_data: GroupData, overrides: dict[str, Any], dry: bool
) -> State:
    names_data = []
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for spec in hosts:
        data = group_data.merged(spec.groups, spec.data, overrides)
        check_host_settings(spec, data)
        names_data.append((spec.name, data))
        for group in spec.groups:
            groups.setdefault(group, ([], {}))[0].append(spec.name)
    inventory = Inventory((names_data, {}), **groups)
    config = Config(
        PARALLEL=max(1, len(hosts)),
        SUDO=True,
        CONNECT_TIMEOUT=15,
        DIFF=dry,
        FAIL_PERCENT=100,  # one host failing does not stop the others; the summary shows it
    )
    # Planning evaluates each operation against the host (and logs diffs) only in dry runs;
    # a real run evaluates once, while executing.
    return State(inventory, config, check_for_changes=dry)
