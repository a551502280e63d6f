"""The operator's release steps: a rolling deploy of a release, and a rollback.

Both run the app and worker deploys through the deploy runner, one host at a time; what
a host does (push, unpack, migrate, switch, check) is in ``operations/release.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mahaops import PROJECT_ROOT
from mahaops.release.cache import chosen
from mahaops.release.tarball import Release

RELEASE_ROLES = ("app", "worker")
FLEET_FACT = "operations.release.ReleasesJson"


class RollbackError(Exception):
    """No rollback target can be chosen, or the one given is not on every host."""


def _members(env: str, group: str) -> list[tuple[str, str | None]]:
    """(name, EC2 instance id on AWS, else None) of the env's hosts in ``group``."""
    from mahaops.hosts import discover, kind_of
    from mahaops.settings import GroupData

    kind = kind_of(env, GroupData().files)
    hosts = sorted((h for h in discover(kind, env) if group in h.groups), key=lambda h: h.name)
    return [(h.name, h.data.get("instance_id") if kind == "aws" else None) for h in hosts]


def _steps(env: str, workers_together: bool) -> list[tuple[str, list[str], str | None]]:
    """(role, limit, instance id): each app server alone, then the workers (all at once,
    or, unless ``workers_together``, each alone too)."""
    steps: list[tuple[str, list[str], str | None]] = [
        ("app", [name], instance_id) for name, instance_id in _members(env, "app_servers")
    ]
    if workers_together:
        return [*steps, ("worker", [], None)]
    return steps + [("worker", [name], None) for name, _ in _members(env, "workers")]


def _rolled(
    env: str,
    steps: list[tuple[str, list[str], str | None]],
    settings: Mapping[str, Any],
    capture: bool,
) -> Any:
    """Run ``steps`` in order, stopping at the first that fails; one result for all."""
    from mahaops.runner import run_deploy

    result = None
    for role_name, limit, instance_id in steps:
        step = run_deploy(env, roles=[role_name], limit=limit, overrides=settings, capture=capture)
        if result is None:
            result = step
        else:
            result.operations += step.operations
            result.output += step.output
            result.returncode = step.returncode
        if step.ok and instance_id:
            step.returncode, note = _back_in_service(env, limit[0], instance_id)
            result.returncode = step.returncode
            result.output += note
            print(note, end="", flush=True)
        if not step.ok:
            break
    return result


def deploy(
    env: str,
    tarball: Path | None = None,
    capture: bool = False,
    overrides: Mapping[str, Any] | None = None,
    allow_breaking: bool = False,
) -> tuple[Release, Any]:
    """Deploy a release (``tarball``, or a build of app/): a rolling deploy.

    App servers one at a time, so the others keep serving while one restarts; the first
    whose check fails switches back by itself and stops the rollout. Workers move only
    once every app server runs the release healthily. On AWS the next app server only
    goes once the load balancer sends traffic to the previous one again.
    """
    built = chosen(tarball or "")
    settings = {**(overrides or {}), "app_release_tarball": str(built.tarball)}
    if allow_breaking:
        settings["app_allow_breaking"] = True
    return built, _rolled(env, _steps(env, workers_together=True), settings, capture)


def _back_in_service(env: str, name: str, instance_id: str) -> tuple[int, str]:
    from mahaops.aws.elb import wait_in_service
    from mahaops.aws.plan import ProvisionError

    try:
        wait_in_service(env, [instance_id])
    except ProvisionError as exc:
        return 1, f"Load balancer: {name} not back in service, rollout stopped: {exc}\n"
    return 0, f"Load balancer: {name} back in service\n"


@dataclass(frozen=True)
class HostRelease:
    """What one app server or worker says of its releases (the ``Releases`` fact)."""

    name: str
    current: str | None
    releases: tuple[str, ...]
    pending: Mapping[str, str]
    running: Mapping[str, str]
    last_release: str | None
    last_before: str | None
    last_at: int

    @classmethod
    def of(cls, name: str, fact: Mapping[str, Any]) -> HostRelease:
        return cls(
            name,
            fact.get("current"),
            tuple(fact.get("releases") or ()),
            dict(fact.get("pending") or {}),
            dict(fact.get("running") or {}),
            fact.get("last_release"),
            fact.get("last_before"),
            int(fact.get("last_at") or 0),
        )


def app_roots(env: str) -> dict[str, str]:
    """Each app server's and worker's app root (its ``app_root`` setting, as deployed)."""
    from mahaops.hosts import discover, kind_of
    from mahaops.settings import GroupData, from_data
    from mahaops.settings.app import ReleaseSettings

    data = GroupData()
    return {
        h.name: from_data(ReleaseSettings, data.merged(h.groups, h.data)).app_root
        for h in discover(kind_of(env, data.files), env)
        if {"app_servers", "workers"} & set(h.groups)
    }


def fleet(env: str, root: str | None = None) -> list[HostRelease]:
    """Every app server's and worker's releases, read with pyinfra's ``fact`` command (one
    round trip per host, side by side), under each host's own ``app_root`` (or ``root``)."""
    from mahaops.hosts import kind_of
    from mahaops.settings import GroupData

    kind = kind_of(env, GroupData().files)
    roots = {name: root or own for name, own in app_roots(env).items()}
    names = set(roots)
    facts: dict[str, Any] = {}
    for one_root in sorted(set(roots.values())):
        limits = [arg for n in sorted(names) if roots[n] == one_root for arg in ("--limit", n)]
        cmd = [
            sys.executable, "-m", "pyinfra", "-y", "--sudo", "--json", *limits,
            str(PROJECT_ROOT / "inventories" / f"{kind}.py"),
            "fact", FLEET_FACT, f"root={one_root}",
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, cwd=PROJECT_ROOT, env={**os.environ, "MAHA_ENV": env},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RollbackError(f"could not read the hosts' releases: {proc.stderr[-2000:]}")
        answers: dict[str, Any] = next(iter(json.loads(proc.stdout).values()), {})
        facts.update({name: fact for name, fact in answers.items() if fact is not None})
    missing = names - {name for name, fact in facts.items() if fact is not None}
    if missing:
        raise RollbackError(f"could not read the releases of {', '.join(sorted(missing))}")
    return [HostRelease.of(name, facts[name]) for name in sorted(names)]


def default_target(hosts: list[HostRelease]) -> str:
    """The release that was current on every host before the last release began: the
    "before" recorded with the newest switch any host made."""
    moved = [h for h in hosts if h.last_release]
    if not moved:
        raise RollbackError("no host records a release: give the release id with --to")
    last = max(moved, key=lambda h: h.last_at).last_release
    befores = {h.last_before for h in moved if h.last_release == last}
    if len(befores) != 1 or None in befores:
        shown = ", ".join(sorted(f"{h.name}: {h.last_before or 'nothing'}" for h in moved))
        raise RollbackError(
            f"the hosts ran different releases (or none) before {last} ({shown}): "
            "give the release id with --to"
        )
    (target,) = befores
    assert target is not None
    return target


def rollback(env: str, to: str = "", force: bool = False, capture: bool = False) -> tuple[str, Any]:
    """Move every app server and worker to release ``to`` (default: the release current
    before the last release began), one host at a time, each checked before the next;
    ``force`` goes below the database's schema. Returns the target and the result."""
    hosts = fleet(env)
    target = to or default_target(hosts)
    lacking = [h.name for h in hosts if target not in h.releases]
    if lacking:
        raise RollbackError(f"release {target} is not on {', '.join(lacking)}")
    settings = {"app_rollback": True, "app_rollback_to": target, "app_rollback_force": force}
    return target, _rolled(env, _steps(env, workers_together=False), settings, capture)
