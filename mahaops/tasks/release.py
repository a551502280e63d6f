"""Tasks for releases: ``build``, ``release`` and ``rollback``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.table import Table

from mahaops import PROJECT_ROOT
from mahaops import release as releases
from mahaops.fleet.audit import guarded
from mahaops.tasks._common import ENV_HELP


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


@contextmanager
def _build_errors() -> Iterator[None]:
    """A failed build ends the task with its reason, not a traceback."""
    try:
        yield
    except releases.ReleaseError as exc:
        raise Exit(f"Release build failed: {exc}", code=1) from exc


@task(help={"out": "Directory for the tarball and its .sha256 (default: build/releases)"})
def build(c: Context, out: str = "") -> None:
    """Build a release: app/ with production dependencies as a reproducible tarball."""
    console = Console()
    out_dir = Path(out).resolve() if out else releases.DEFAULT_OUT_DIR
    with _build_errors(), console.status("Building release (npm ci --omit=dev)…"):
        built = releases.build(out_dir)  # recorded: a deploy of the same app/ reuses it
    table = Table(title="Release built", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("id", built.id)
    table.add_row("tarball", _shown(built.tarball))
    table.add_row("size", f"{built.size / 1_000_000:.1f} MB ({built.size:,} bytes)")
    table.add_row("sha256", built.sha256)
    console.print(table)


@task(
    help={
        "env": ENV_HELP,
        "tarball": "a built maha-<id>.tar.gz to deploy (default: build app/ as it is now)",
        "allow-breaking": "apply migrations marked '-- maha: breaking' (refused otherwise)",
    }
)
@guarded("release", roles=releases.RELEASE_ROLES)
def release(
    c: Context, env: str = "local", tarball: str = "", allow_breaking: bool = False
) -> None:
    """Deploy a release to the app servers and workers: push, migrate, switch, check."""
    console = Console()
    with _build_errors(), console.status("Preparing the release…"):
        built = releases.chosen(tarball)
    console.print(f"Deploying release [bold]{built.id}[/] ({_shown(built.tarball)}) to {env}")
    _, result = releases.deploy(env, built.tarball, allow_breaking=allow_breaking)
    if not result.ok:
        raise Exit(
            f"release {built.id} failed; hosts whose check failed are back on their previous "
            "release (see the tables above)",
            code=result.returncode or 1,
        )
    console.print(f"Release [bold]{built.id}[/] is live on {env}")


@task(
    help={
        "env": ENV_HELP,
        "to": "release id to go back to (default: the one current before the last release)",
        "force": "roll back even below the database's schema version",
    }
)
@guarded("rollback", roles=releases.RELEASE_ROLES)
def rollback(c: Context, env: str = "local", to: str = "", force: bool = False) -> None:
    """Move app servers and workers, one at a time, to an earlier release and check them."""
    try:
        target, result = releases.rollback(env, to=to, force=force)
    except releases.RollbackError as exc:
        raise Exit(f"rollback refused: {exc}", code=1) from exc
    if not result.ok:
        raise Exit(
            f"rollback to {target} failed: see the tables above", code=result.returncode or 1
        )
    Console().print(f"Every app server and worker of {env} runs [bold]{target}[/]")


ns = Collection("release", build, release, rollback)
