"""Developer tasks, apart from the operator's: ``test``, ``lint`` and ``bench``."""

from __future__ import annotations

import sys

from invoke.collection import Collection
from invoke.context import Context
from invoke.tasks import task


@task(
    help={
        "args": "extra arguments for pytest, e.g. '-k base -x'",
        "workers": "test modules run at once (pytest-xdist, a whole module per worker; "
        "default 2; 1: one after another, in file order)",
    }
)
def test(c: Context, args: str = "", workers: int = 2):
    """Run the whole test suite (starts Docker and the package cache when needed)."""
    # Two workers by default: in a module run alone a 2-core machine sits about 40% idle
    # (waiting on SSH, systemd, health checks), and two at once took the suite from about
    # an hour to 45 minutes. A module stays on one worker, and so do the groups in
    # tests/conftest.py's ONE_WORKER (tests/app, which shares app/'s node_modules; the
    # modules sharing one platform): their hosts are built once, their tests keep their
    # order. Units are handed out in collection order (the shared platform's first, then
    # tests/conftest.py's LONG_UNITS), not by test count, so the longest start first.
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
