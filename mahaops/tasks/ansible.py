"""Tasks for the Ansible exporter: ``export-ansible`` and ``bench-ansible``."""

from __future__ import annotations

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from mahaops.tasks._common import ENV_HELP, LIMIT_HELP, ROLES, SET_HELP, overrides


@task(
    name="export-ansible",
    help={
        "env": ENV_HELP,
        "out": "directory to write the Ansible project into (replaced if it holds an export)",
        "role": f"export only this role (repeatable): {ROLES}",
        "limit": LIMIT_HELP,
        "set": SET_HELP,
    },
    iterable=["role", "limit", "set"],
)
def export_ansible(c: Context, env: str = "local", out: str = "", role=None, limit=None, set=None):
    """Export every role deploy as a runnable Ansible project (recorded from the hosts)."""
    from pathlib import Path

    from mahaops.ansible_export import export

    if not out:
        raise Exit("error: --out DIR is required", code=2)
    result = export(
        env,
        Path(out),
        limit=limit or (),
        roles=role or (),
        overrides=overrides(set),
        capture=False,
    )
    if not result.ok:
        raise Exit(code=result.returncode)


@task(
    name="bench-ansible",
    help={
        "roles": "comma-separated roles to converge (default: base)",
        "rounds": "no-op converges to time after the fresh one, per tool",
    },
)
def bench_ansible(c: Context, roles: str = "", rounds: int = 3):
    """Benchmark: pyinfra against the exported Ansible project, fresh and no-op."""
    from mahaops import bench_ansible as benchmark

    benchmark.main([r for r in roles.split(",") if r], rounds=rounds)


@task(
    name="bench-platform",
    help={
        "sizes": "comma-separated platform sizes in hosts (known: 7, 16)",
        "rounds": "no-op converges to time per tool and size",
    },
)
def bench_platform(c: Context, sizes: str = "7,16", rounds: int = 3):
    """Benchmark: no-op converge of whole platforms, pyinfra against the exported Ansible."""
    from mahaops import bench_platform as benchmark

    try:
        chosen = [int(s) for s in sizes.split(",") if s.strip()]
    except ValueError:
        raise Exit(f"--sizes: {sizes!r} is not a list of host counts, e.g. 7,16") from None
    benchmark.main(chosen, rounds=rounds)


ns = Collection("ansible", export_ansible, bench_ansible, bench_platform)
