"""Invoke tasks: the operator's interface to the Maha platform (``invoke --list``)."""

from __future__ import annotations

import sys

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

ns = Collection()

ENV_HELP = "environment: 'local' (Docker on this machine) or one from group_data/aws.py"


def _console():
    from rich.console import Console

    return Console()


# -- local platform and deploys --------------------------------------------------------------


@task(
    help={
        "env": ENV_HELP,
        "role": "deploy only this role (repeatable): base, db, cache, log, app, worker, lb",
        "limit": "only these hosts or groups (repeatable), e.g. app-1 or app_servers",
        "dry": "show what would change, with diffs, and change nothing",
        "set": "override a setting for this run, KEY=VALUE (repeatable; VALUE may be JSON)",
        "verbose": "show pyinfra's per-host lines instead of one line per operation",
    },
    iterable=["role", "limit", "set"],
)
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
        overrides=_overrides(set),
        capture=False,
        verbose=verbose,
    )
    if not result.ok:
        raise Exit(code=result.returncode)


def _overrides(pairs):
    from mahaops.settings import SettingsError, parse_overrides

    try:
        return parse_overrides(pairs or [])
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None


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


@task(help={"env": "local environment name (default: local)"})
def up(c: Context, env: str = "local"):
    """Create the local platform on Docker (if missing) and deploy every role to it."""
    from mahaops.local import platform

    console = _console()
    result = platform.up(env, console=console)
    console.print(platform.hosts_table(result.hosts))
    address = platform.url(result.hosts)
    if address:
        console.print(f"The platform answers at [bold]{address}[/]")
    if not result.deploy.ok:
        raise Exit("deploy failed: see the tables above", code=result.deploy.returncode or 1)


@task(
    help={
        "env": "local environment name (default: local)",
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
    _console().print(f"Removed {len(removed)} host(s): {', '.join(removed) or '-'}")


@task(help={"env": "local environment name (default: local)"})
def hosts(c: Context, env: str = "local"):
    """List the local environment's hosts, roles and ports."""
    from mahaops.local import platform
    from mahaops.local.hosts import Environment

    _console().print(platform.hosts_table(Environment(env).hosts()))


@task(
    help={
        "roles": "comma-separated roles to measure (default: every role with a deploy)",
        "rounds": "no-op converges to time after the fresh one",
    }
)
def bench(c: Context, roles: str = "", rounds: int = 3):
    """Benchmark: fresh and no-op converge time per role on new test-bed hosts."""
    from mahaops import bench as benchmark

    benchmark.main([r for r in roles.split(",") if r], rounds=rounds)


@task(help={"args": "extra arguments for pytest, e.g. '-k base -x'"})
def test(c: Context, args: str = ""):
    """Run the whole test suite (starts Docker and the apt cache when needed)."""
    c.run(f"{sys.executable} -m pytest {args}", pty=False)


@task
def lint(c: Context):
    """ruff and mypy over the project."""
    c.run(f"{sys.executable} -m ruff check .")
    c.run(f"{sys.executable} -m ruff format --check .")
    c.run(f"{sys.executable} -m mypy")


for _task in (up, down, deploy, plan, hosts, bench, test, lint):
    ns.add_task(_task)  # type: ignore[arg-type]

# -- releases ---------------------------------------------------------------------------------
from mahaops import release_tasks  # noqa: E402

ns.add_task(release_tasks.build)
ns.add_task(release_tasks.release)
ns.add_task(release_tasks.rollback)

# -- db (backups) -----------------------------------------------------------------------------
from mahaops import db_tasks  # noqa: E402

ns.add_collection(Collection("db", db_tasks.backup, db_tasks.restore))

# -- logs ------------------------------------------------------------------------------------
from mahaops.log_tasks import logs  # noqa: E402

ns.add_collection(logs)

# -- AWS --------------------------------------------------------------------------------------
from mahaops.aws import tasks as aws_tasks  # noqa: E402

ns.add_task(aws_tasks.provision)
ns.add_task(aws_tasks.teardown)

# -- Ansible export ---------------------------------------------------------------------------
from mahaops.ansible_export import tasks as ansible_tasks  # noqa: E402

ns.add_task(ansible_tasks.export_ansible)
ns.add_task(ansible_tasks.bench_ansible)
