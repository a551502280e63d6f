"""The operator's release steps: a rolling deploy of a release, and a rollback.

Both run the app and worker deploys through the deploy runner; what a host does (push,
unpack, migrate, switch, check) is in ``operations/release.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mahaops.release.cache import chosen
from mahaops.release.tarball import Release

RELEASE_ROLES = ("app", "worker")


def _members(env: str, group: str) -> list[tuple[str, str | None]]:
    """(name, EC2 instance id on AWS, else None) of the env's hosts in ``group``."""
    from mahaops.hosts import discover, kind_of
    from mahaops.settings import GroupData

    kind = kind_of(env, GroupData().files)
    hosts = sorted((h for h in discover(kind, env) if group in h.groups), key=lambda h: h.name)
    return [(h.name, h.data.get("instance_id") if kind == "aws" else None) for h in hosts]


def deploy(
    env: str,
    tarball: Path | None = None,
    capture: bool = False,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Release, Any]:
    """Deploy a release (``tarball``, or a build of app/): a rolling deploy.

    App servers one at a time, so the others keep serving while one restarts; the first
    whose check fails switches back by itself and stops the rollout. Workers move only
    once every app server runs the release healthily. On AWS the next app server only
    goes once the load balancer sends traffic to the previous one again.
    """
    from mahaops.runner import run_deploy

    built = chosen(tarball or "")
    settings = {**(overrides or {}), "app_release_tarball": str(built.tarball)}
    steps: list[tuple[str, list[str], str | None]] = [
        ("app", [name], instance_id) for name, instance_id in _members(env, "app_servers")
    ] + [("worker", [], None)]
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
    return built, result


def _back_in_service(env: str, name: str, instance_id: str) -> tuple[int, str]:
    from mahaops.aws.elb import wait_in_service
    from mahaops.aws.plan import ProvisionError

    try:
        wait_in_service(env, [instance_id])
    except ProvisionError as exc:
        return 1, f"Load balancer: {name} not back in service, rollout stopped: {exc}\n"
    return 0, f"Load balancer: {name} back in service\n"


def rollback(env: str, capture: bool = False) -> Any:
    """Go back one release on every app server and worker, then check health."""
    from mahaops.runner import run_deploy

    return run_deploy(env, roles=RELEASE_ROLES, overrides={"app_rollback": True}, capture=capture)
