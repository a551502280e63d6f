"""Benchmark: how long converging takes, fresh and when nothing changes (`invoke bench`).

Figures, not a timed test: each role gets a fresh test-bed host in a throw-away
environment; we time its first converge (base + role) and then a few no-op converges,
and print them side by side.
"""

from __future__ import annotations

import secrets
import statistics
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from mahaops.local.hosts import Environment
from mahaops.local.platform import deployable_roles
from mahaops.runner import run_deploy


@dataclass
class Figure:
    role: str
    operations: int
    fresh: float
    noop: list[float]
    changed_on_noop: int


def measure(env: Environment, image: str, role: str, rounds: int) -> Figure:
    host = env.create(role, image=image)
    roles = ["base"] if role == "base" else ["base", role]
    started = time.perf_counter()
    fresh = run_deploy(env.env, roles=roles, limit=[host.name], quiet=True)
    fresh_time = time.perf_counter() - started
    if not fresh.ok:
        raise RuntimeError(f"fresh converge of {role} failed:\n{fresh.output[-3000:]}")
    noop_times, changed = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        again = run_deploy(env.env, roles=roles, limit=[host.name], quiet=True)
        noop_times.append(time.perf_counter() - started)
        changed += len(again.changed)
    return Figure(role, len(fresh.operations), fresh_time, noop_times, changed)


def main(roles: list[str], rounds: int = 3) -> list[Figure]:
    console = Console()
    roles = roles or [r for r in deployable_roles() if r in ("base", "db", "cache")]
    env = Environment(f"bench{secrets.token_hex(2)}")
    figures = []
    try:
        with console.status("Preparing the test bed"):
            image = env.prepare()
        for role in roles:
            with console.status(f"Converging a fresh {role} host, then {rounds} no-op runs"):
                figures.append(measure(env, image, role, rounds))
    finally:
        env.remove(volumes=True)
    table = Table(title="Converge times (pyinfra, one host per role)", title_justify="left")
    for column in ("role", "operations", "fresh converge", "no-op (median)", "fresh / no-op"):
        table.add_column(column, justify="right" if column != "role" else "left")
    table.add_column("changed on no-op", justify="right")
    for f in figures:
        noop = statistics.median(f.noop)
        table.add_row(
            f.role,
            str(f.operations),
            f"{f.fresh:.1f}s",
            f"{noop:.2f}s",
            f"{f.fresh / noop:.1f}x",
            str(f.changed_on_noop),
        )
    console.print(table)
    return figures
