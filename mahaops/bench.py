"""Benchmark: how long converging takes, fresh and when nothing changes (`invoke bench`).

Figures, not a timed test: each role gets a fresh test-bed host in a throw-away
environment; we time its first converge (base + role) and then a few no-op converges,
and print them side by side.
"""

from __future__ import annotations

import io
import secrets
import statistics
import time
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from mahaops.local.hosts import Environment, LocalHost
from mahaops.release import current_build
from mahaops.roles import deployable_roles
from mahaops.runner import run_deploy


@dataclass
class Figure:
    role: str
    operations: int
    fresh: float
    noop: list[float]
    changed_on_noop: int


# The peers a role's fresh host needs converged before it can converge at all (the app
# migrates its database on the db host, over TLS; the worker also sends through the mail
# host). They are converged once, untimed, in the same throw-away environment.
PEERS: dict[str, tuple[str, ...]] = {
    "app": ("db", "cache"),
    "worker": ("db", "cache", "mail"),
}


def converge_peers(env: Environment, image: str, roles: list[str]) -> None:
    """The peers ``roles`` need (PEERS), each a fresh host converged to base and its role.
    Called once the measured hosts exist: the peers' access rules (pg_hba, Redis ACLs,
    firewalls) list the hosts of the environment when they converge."""
    peers = list(dict.fromkeys(peer for role in roles for peer in PEERS.get(role, ())))
    if not peers:
        return
    names = [env.create(peer, image=image).name for peer in peers]
    done = run_deploy(env.env, roles=["base", *peers], limit=names, quiet=True)
    if not done.ok:
        raise RuntimeError(
            f"converging the peers {', '.join(peers)} failed:\n{done.output[-3000:]}"
        )


def measure(env: Environment, host: LocalHost, rounds: int) -> Figure:
    role = host.role
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


@dataclass
class PlatformFigures:
    fresh: dict[str, float]  # role -> seconds converging it on fresh hosts ("hosts": creating them)
    noop: dict[str, float]  # role -> seconds of a no-op converge of that role alone
    up_fresh: float  # hosts created and every role converged, as `invoke up` from nothing
    first_up_noop: float  # the first no-op `invoke up`: facts asked for the first time
    first_noop_deploy: float  # (those of files made by the converge) are read live
    up_noop: float  # then a whole no-op `invoke up` (median of the rounds)
    noop_deploy: float  # of which the one deploy run over all seven hosts (median)
    changed_on_noop: int


GOAL_NOOP_DEPLOY = 3.0  # seconds for the no-op deploy run of all seven hosts


def measure_platform(rounds: int = 3) -> PlatformFigures:
    """The whole platform in a throw-away environment: from nothing, then no-op `up`s."""
    from mahaops.local import platform

    env = Environment(f"bench{secrets.token_hex(2)}")
    fresh: dict[str, float] = {}
    try:
        started = time.perf_counter()
        image = env.prepare()
        current_build()
        fresh["prepare"] = time.perf_counter() - started
        mark = time.perf_counter()
        for role, count in platform.PLATFORM:
            for index in range(1, count + 1):
                env.create(role, name=f"{role}-{index}", image=image)
        fresh["hosts"] = time.perf_counter() - mark
        for role in deployable_roles():  # as `up` does, one role at a time to time each
            mark = time.perf_counter()
            result = run_deploy(env.env, roles=[role], quiet=True)
            fresh[role] = time.perf_counter() - mark
            if not result.ok:
                raise RuntimeError(f"fresh converge of {role} failed:\n{result.output[-3000:]}")
        up_fresh = time.perf_counter() - started

        quiet = Console(file=io.StringIO())
        ups, deploys, changed = [], [], 0
        for _ in range(rounds + 1):
            mark = time.perf_counter()
            again = platform.up(env.env, console=quiet, capture=True, quiet=True)
            ups.append(time.perf_counter() - mark)
            deploys.append(again.timings.get("deploy", 0.0))
            changed += len(again.deploy.changed)
        noop = {}
        for role in deployable_roles():
            times = []
            for _ in range(rounds):
                mark = time.perf_counter()
                run_deploy(env.env, roles=[role], quiet=True)
                times.append(time.perf_counter() - mark)
            noop[role] = statistics.median(times)
    finally:
        env.remove(volumes=True)
    return PlatformFigures(
        fresh,
        noop,
        up_fresh,
        ups[0],
        deploys[0],
        statistics.median(ups[1:]),
        statistics.median(deploys[1:]),
        changed,
    )


def platform_table(figures: PlatformFigures) -> Table:
    table = Table(title="The whole platform (seven hosts)", title_justify="left")
    for column in ("step", "from nothing", "no-op (median)"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for step, seconds in figures.fresh.items():
        noop = figures.noop.get(step)
        table.add_row(step, f"{seconds:.1f}s", f"{noop:.2f}s" if noop is not None else "-")
    table.add_row(
        "[bold]invoke up[/]",
        f"{figures.up_fresh:.1f}s",
        f"{figures.up_noop:.2f}s",
        end_section=True,
    )
    colour = "green" if figures.noop_deploy < GOAL_NOOP_DEPLOY else "yellow"
    table.add_row(
        "of which the deploy run",
        "",
        f"[{colour}]{figures.noop_deploy:.2f}s[/] (goal {GOAL_NOOP_DEPLOY:.0f}s)",
    )
    table.add_row(
        "first no-op up after converging",
        "",
        f"{figures.first_up_noop:.2f}s (deploy {figures.first_noop_deploy:.2f}s)",
    )
    table.add_row("changed on no-op", "", str(figures.changed_on_noop))
    return table


def main(roles: list[str], rounds: int = 3) -> list[Figure]:
    """Per-role figures; ``platform`` among ``roles`` times the whole platform instead."""
    console = Console()
    if "platform" in roles:
        with console.status("Timing the whole platform: up from nothing, then a no-op up"):
            whole = measure_platform(rounds)
        console.print(platform_table(whole))
        roles = [r for r in roles if r != "platform"]
        if not roles:
            return []
    roles = roles or [r for r in deployable_roles() if r in ("base", "db", "cache")]
    env = Environment(f"bench{secrets.token_hex(2)}")
    figures = []
    try:
        with console.status("Preparing the test bed"):
            image = env.prepare()
        hosts = [env.create(role, image=image) for role in roles]
        with console.status("Converging the peers the roles need (untimed)"):
            converge_peers(env, image, roles)
        for host in hosts:
            with console.status(f"Converging a fresh {host.role} host, then {rounds} no-op runs"):
                figures.append(measure(env, host, rounds))
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
