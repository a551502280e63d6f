"""Benchmark: adding one app server to a running local platform, in seconds until it serves
traffic through the load balancer (issue 13). A figure to print, not a timed test.

``python -m mahaops.lifecycle.bench --env E`` adds one app server to environment ``E``
(which must be up), times ``scale`` from the command to the first answer from the new
server through the load balancer, prints the steps, then scales back unless ``--keep``.
"""

from __future__ import annotations

import argparse
import io
import time

from rich.console import Console
from rich.table import Table

from mahaops import lifecycle
from mahaops.local.hosts import Environment


def measure(env: str, keep: bool = False) -> tuple[float, dict[str, float], str]:
    """(seconds until the new app server answered through the LB, per step, its name)."""
    environment = Environment(env)
    apps = [h for h in environment.hosts() if h.role == "app"]
    if not apps:
        raise SystemExit(f"environment {env!r} has no app server: is it up? (`invoke up`)")
    quiet = Console(file=io.StringIO())
    started = time.monotonic()
    outcome = lifecycle.scale(env, "app", len(apps) + 1, console=quiet, capture=True)
    seconds = time.monotonic() - started
    created = next(r.host for r in outcome.rows if r.action == "created")
    if not keep:
        lifecycle.scale(env, "app", len(apps), console=quiet, capture=True)
    return seconds, outcome.timings, created


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--env", required=True, help="a running local environment (not 'local')")
    parser.add_argument("--keep", action="store_true", help="keep the new app server")
    args = parser.parse_args(argv)
    seconds, steps, name = measure(args.env, keep=args.keep)
    table = Table(title=f"Adding one app server ({name}) to {args.env}", title_justify="left")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    for step, value in steps.items():
        if step != "total":
            table.add_row(step, f"{value:.1f}")
    table.add_row("[bold]until it serves through the load balancer[/]", f"[bold]{seconds:.1f}[/]")
    Console().print(table)
    return seconds


if __name__ == "__main__":
    main()
