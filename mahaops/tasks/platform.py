"""Tasks for the platform: ``up``/``down``/``hosts`` on Docker, ``deploy`` and ``plan`` anywhere."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console

from mahaops.fleet.audit import guarded
from mahaops.tasks._common import (
    ENV_HELP,
    LIMIT_HELP,
    LOCAL_ENV_HELP,
    ROLES,
    SET_HELP,
    overrides,
)

if TYPE_CHECKING:
    from mahaops.local.hosts import LocalHost


@task(
    help={
        "env": ENV_HELP,
        "role": f"deploy only this role (repeatable): {ROLES}",
        "limit": LIMIT_HELP,
        "dry": "show what would change, with diffs, and change nothing",
        "set": SET_HELP,
        "verbose": "show pyinfra's per-host lines instead of one line per operation",
    },
    iterable=["role", "limit", "set"],
)
@guarded("deploy")
def deploy(
    c: Context,
    env: str = "local",
    role=None,
    limit=None,
    dry: bool = False,
    set=None,
    verbose: bool = False,
):
    """Converge the environment's hosts to their roles (``--dry`` plans with diffs)."""
    from mahaops.runner import run_deploy

    result = run_deploy(
        env,
        roles=role or (),
        limit=limit or (),
        dry=dry,
        overrides=overrides(set),
        capture=False,
        verbose=verbose,
    )
    if not result.ok:
        raise Exit(code=result.returncode)


@task(
    help={
        "env": ENV_HELP,
        "role": "plan only this role (repeatable)",
        "limit": "hosts or groups (repeatable)",
    },
    iterable=["role", "limit"],
)
def plan(c: Context, env: str = "local", role=None, limit=None):
    """Dry run: what a deploy would change, with unified diffs; changes nothing."""
    deploy(c, env=env, role=role, limit=limit, dry=True)


def _say_https(console: Console, env: str, hosts: list[LocalHost]) -> None:
    """Where HTTPS answers and which CA file to trust, or how to get the port published."""
    from mahaops.local import platform

    secure = platform.https_url(hosts)
    if secure:
        ca = platform.ca_file(env)  # the certificate only: the CA's key stays in the store
        console.print(
            f"and at [bold]{secure}[/] (wss:// for WebSockets): trust {ca}, the environment's "
            f"CA, e.g. curl --cacert {ca} {secure}health"
        )
        return
    lb = next((h.name for h in hosts if h.role == "lb"), None)
    if lb:  # Docker cannot add a published port to a running container
        console.print(
            f"No HTTPS port published: {lb} was made before it was; `invoke up --env {env}` "
            "re-makes it with the port"
        )


@task(help={"env": LOCAL_ENV_HELP})
@guarded("up")
def up(c: Context, env: str = "local"):
    """Create the local platform on Docker (if missing) and deploy every role to it."""
    from mahaops.local import platform
    from mahaops.settings import SettingsError

    console = Console()
    try:
        result = platform.up(env, console=console)
    except SettingsError as exc:  # local_hosts, say: named by file and key, no traceback
        raise Exit(f"error: {exc}", code=2) from None
    console.print(platform.hosts_table(result.hosts))
    address = platform.url(result.hosts)
    if address:
        console.print(f"The platform answers at [bold]{address}[/]")
    if result.deploy.ok and platform.lb_tls():
        _say_https(console, env, result.hosts)
    if not result.deploy.ok:
        raise Exit("deploy failed: see the tables above", code=result.deploy.returncode or 1)


@task(
    help={
        "env": LOCAL_ENV_HELP,
        "volumes": "also delete data volumes (databases, queues, logs)",
        "yes": "do not ask for confirmation",
    }
)
def down(c: Context, env: str = "local", volumes: bool = False, yes: bool = False):
    """Remove the local platform's hosts; data volumes survive unless --volumes."""
    from mahaops.local import platform

    if volumes and not yes and sys.stdin.isatty():
        answer = input(f"Delete environment {env!r} AND its data volumes? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            raise Exit("aborted", code=1)
    removed = platform.down(env, volumes=volumes)
    Console().print(f"Removed {len(removed)} host(s): {', '.join(removed) or '-'}")


@task(help={"env": LOCAL_ENV_HELP})
def hosts(c: Context, env: str = "local"):
    """List the local environment's hosts, roles and ports."""
    from mahaops.local import platform
    from mahaops.local.hosts import Environment

    Console().print(platform.hosts_table(Environment(env).hosts()))


ns = Collection("platform", up, down, deploy, plan, hosts)
