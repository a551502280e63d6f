"""Developer tasks, apart from the operator's: ``test``, ``lint`` and ``bench``."""

from __future__ import annotations

import sys

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task


@task(help={"args": "extra arguments for pytest, e.g. '-k base -x'"})
def test(c: Context, args: str = ""):
    """Run the whole test suite (starts Docker and the package cache when needed)."""
    c.run(f"{sys.executable} -m pytest {args}", pty=False)


@task
def lint(c: Context):
    """ruff and mypy over the project."""
    c.run(f"{sys.executable} -m ruff check .")
    c.run(f"{sys.executable} -m ruff format --check .")
    c.run(f"{sys.executable} -m mypy")


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


ns = Collection("dev", test, lint, bench)
