"""The release a deploy run pushes: the operator's tarball, or app/ built once per run.

Deploys ask for the release while they plan, once per host; the answer is cached for
the run (one process), and builds are cached by content across runs: a tree already
built is not built again, so converging twice pushes the same release id and changes
nothing.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mahaops.release import (
    APP_DIR,
    DEFAULT_OUT_DIR,
    EXCLUDED_NAMES,
    EXCLUDED_SUFFIXES,
    Release,
    ReleaseError,
    build,
    verify,
)

INDEX_NAME = "by-source.json"  # source digest -> tarball name, beside the tarballs


def source_digest(app_dir: Path = APP_DIR) -> str:
    """A digest of everything a release build reads: names, modes and bytes of app/."""
    digest = hashlib.sha256()
    for root, dirs, files in os.walk(app_dir):
        dirs[:] = sorted(
            d for d in dirs if d not in EXCLUDED_NAMES and not d.endswith(EXCLUDED_SUFFIXES)
        )
        for name in sorted(files):
            if name in EXCLUDED_NAMES or name.endswith(EXCLUDED_SUFFIXES):
                continue
            path = Path(root) / name
            digest.update(str(path.relative_to(app_dir)).encode() + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + os.readlink(path).encode())
            else:
                digest.update(b"x" if os.access(path, os.X_OK) else b"-")
                digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def current_build(app_dir: Path = APP_DIR, out_dir: Path = DEFAULT_OUT_DIR) -> Release:
    """The release of ``app_dir`` as it is now: an earlier build of the same tree, or a new one."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key = source_digest(app_dir)
    index_path = out_dir / INDEX_NAME
    with (out_dir / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build once
        index: dict[str, str] = json.loads(index_path.read_text()) if index_path.exists() else {}
        known = out_dir / index.get(key, "-")
        if known.is_file() and verify(known):
            return Release.from_tarball(known)
        built = build(out_dir, app_dir=app_dir)
        index[key] = built.tarball.name
        partial = index_path.with_name(index_path.name + ".part")
        partial.write_text(json.dumps(index, indent=1, sort_keys=True))
        partial.replace(index_path)
        return built


@functools.cache
def for_run(tarball: str = "") -> Release:
    """The release to deploy in this run: ``tarball`` (checked against its .sha256) or app/."""
    if not tarball:
        return current_build()
    path = Path(tarball).expanduser().resolve()
    release = Release.from_tarball(path)
    if not verify(path):
        raise ReleaseError(f"{path} does not match its checksum file: rebuild it")
    return release


# -- the operator's release tasks ----------------------------------------------------------------

RELEASE_ROLES = ("app", "worker")


def _members(env: str, group: str) -> list[tuple[str, str | None]]:
    """(name, EC2 instance id on AWS, else None) of the env's hosts in ``group``."""
    from mahaops.inventory import discover, kind_of
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

    built = for_run(str(tarball)) if tarball else current_build()
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
