"""Developer tasks, apart from the operator's: ``test``, ``lint`` and ``bench``."""

from __future__ import annotations

import sys

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task


@task(
    help={
        "args": "extra arguments for pytest, e.g. '-k base -x'",
        "workers": "test modules run at once (pytest-xdist, a whole module per worker); "
        "default 1: one after another",
    }
)
def test(c: Context, args: str = "", workers: int = 1):
    """Run the whole test suite (starts Docker and the package cache when needed)."""
    # --workers 2: two modules at once (much of a module's time is waiting on hosts: SSH,
    # systemd, health checks). Not the default yet: its gain on a quiet 2-core machine is
    # unmeasured, and the zero-downtime tests' "no failed request" must first be shown to
    # hold beside another module's converge. A module stays on one worker
    # (tests/conftest.py: ONE_WORKER groups modules that share app/'s node_modules): its
    # hosts are built once and its tests keep their order. Modules are handed out in file
    # order, not by test count: the long ones (Ansible export, lifecycle, platform) start
    # early and the short role and unit modules fill in.
    parallel = (
        f"-n {workers} --dist loadfile --no-loadscope-reorder" if workers > 1 else "-p no:xdist"
    )
    c.run(f"{sys.executable} -m pytest {parallel} {args}", pty=False)


@task
def lint(c: Context):
    """ruff and mypy over the project."""
    c.run(f"{sys.executable} -m ruff check .")
    c.run(f"{sys.executable} -m ruff format --check .")
    c.run(f"{sys.executable} -m mypy")


@task(
    help={
        "roles": "comma-separated roles to measure, or platform (default: base, db, cache; "
        "app and worker get their peers converged first, untimed)",
        "rounds": "no-op converges to time after the fresh one",
    }
)
def bench(c: Context, roles: str = "", rounds: int = 3):
    """Benchmark: fresh and no-op converge time per role on new test-bed hosts."""
    from mahaops import bench as benchmark

    benchmark.main([r for r in roles.split(",") if r], rounds=rounds)


ns = Collection("dev", test, lint, bench)
