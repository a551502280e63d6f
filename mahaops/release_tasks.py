"""Invoke tasks for releases: ``invoke build``."""

from __future__ import annotations

from pathlib import Path

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.table import Table

from mahaops import PROJECT_ROOT, release


def _shown(path: Path) -> str:
    return str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)


@task(help={"out": "Directory for the tarball and its .sha256 (default: build/releases)"})
def build(c: Context, out: str = "") -> None:
    """Build a release: app/ with production dependencies as a reproducible tarball."""
    console = Console()
    out_dir = Path(out).resolve() if out else release.DEFAULT_OUT_DIR
    try:
        with console.status("Building release (npm ci --omit=dev)…"):
            built = release.build(out_dir)
    except release.ReleaseError as exc:
        raise Exit(f"Release build failed: {exc}", code=1) from exc
    table = Table(title="Release built", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("id", built.id)
    table.add_row("tarball", _shown(built.tarball))
    table.add_row("size", f"{built.size / 1_000_000:.1f} MB ({built.size:,} bytes)")
    table.add_row("sha256", built.sha256)
    console.print(table)
