"""Benchmark: zero downtime, measured (issue 14). Run from the project root:

    python -m mahaops.bench_zero_downtime [--rates 25,50,100,200] [--ws 10] [--settle 5]

A throw-away local platform (its own environment, removed at the end unless ``--keep``);
first the highest steady rate it sustains here (each rate of ``--rates`` for
``--probe`` seconds: every request sent on time, none failed, p99 under a second), then,
at that rate, steady traffic through the load balancer and WebSocket clients following
campaigns for the whole of: a release, a rollback, an nginx configuration change on every
app server, and a restart of the web service on every app server at once. Prints, per
scenario, the rate sustained, requests, failures, latency and WebSocket cuts and
reconnects. The load client is ``tests/load.py`` (aiohttp, from the test extras).
"""

from __future__ import annotations

import argparse
import io
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mahaops import release as releases
from mahaops.local import platform
from mahaops.local.hosts import Environment
from mahaops.release import APP_DIR
from mahaops.runner import run_deploy
from tests.load import Load, Report


def variant(tmp: Path) -> releases.Release:
    """A release of app/ with a changed static file: a new version to roll out."""
    copy = tmp / "app"
    shutil.copytree(APP_DIR, copy, ignore=shutil.ignore_patterns("node_modules"))
    with (copy / "public" / "app.css").open("a") as css:
        css.write("/* bench */\n")
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], [*git, "commit", "-q", "-m", "v"]):
        subprocess.run(cmd, cwd=copy, check=True)
    time.sleep(1)  # ids carry the build second
    return releases.build(tmp / "out", app_dir=copy)


def steady(report: Report, rate: float) -> bool:
    """Whether the load held ``rate`` with nothing failing and answers within a second."""
    return (
        report.failures == 0
        and report.sustained >= 0.95 * rate
        and report.late <= 0.01 * report.requests
        and report.percentile(99) < 1.0
    )


def highest_rate(url: str, rates: list[float], ws: int, seconds: float, say: Any) -> float:
    best = rates[0]
    for rate in rates:
        with Load(url, rate=rate, ws_clients=ws) as load:
            time.sleep(seconds)
        assert load.report is not None
        ok = steady(load.report, rate)
        say(f"steady {rate:.0f}/s: {'held' if ok else 'not held'}: {load.report.summary()}")
        if not ok:
            break
        best = rate
    return best


def under_load(
    url: str, rate: float, ws: int, settle: float, change: Callable[[], Any]
) -> tuple[Report, float, bool]:
    with Load(url, rate=rate, ws_clients=ws) as load:
        time.sleep(settle)
        started = time.monotonic()
        outcome = change()
        took = time.monotonic() - started
        time.sleep(settle)
    assert load.report is not None
    result = outcome[1] if isinstance(outcome, tuple) else outcome
    return load.report, took, bool(result.ok)


def table(rows: list[tuple[str, Report, float, bool]]) -> Table:
    out = Table(title="Zero downtime under load", title_justify="left")
    for column in (
        "scenario", "change took", "load", "rate asked", "sustained", "requests", "failed",
        "p50 / p99 ms", "WS clients", "cuts", "reconnects", "longest gap", "final missed",
    ):  # fmt: skip
        out.add_column(column)
    for name, r, took, ok in rows:
        out.add_row(
            name + ("" if ok else " (change FAILED)"),
            f"{took:.1f}s",
            f"{r.seconds:.1f}s",
            f"{r.rate:.0f}/s",
            f"{r.sustained:.1f}/s",
            str(r.requests),
            f"{r.failures} {dict(r.statuses) | dict(r.errors) or ''}".strip(),
            f"{r.percentile(50) * 1000:.0f} / {r.percentile(99) * 1000:.0f}",
            str(len(r.followers)),
            str(r.cuts),
            str(r.reconnects),
            f"{max((f.longest_gap for f in r.followers), default=0):.2f}s",
            str(len(r.missed_final)),
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="25,50,100,200", help="steady rates to try, per s")
    parser.add_argument("--ws", type=int, default=10, help="WebSocket clients")
    parser.add_argument("--probe", type=float, default=8.0, help="seconds per steady rate")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before and after")
    parser.add_argument("--env", default="", help="an existing local environment to use")
    parser.add_argument("--keep", action="store_true", help="keep the environment at the end")
    args = parser.parse_args(argv)
    console = Console(width=max(Console().width, 180))  # the table's columns, unabridged

    def say(text: str) -> None:
        console.print(f"[bold]•[/] {text}")

    env = args.env or f"zd{secrets.token_hex(2)}"
    environment = Environment(env)
    try:
        say(f"platform {env}")
        up = platform.up(env, console=Console(file=io.StringIO()), capture=True, quiet=True)
        if not up.deploy.ok:
            console.print(up.deploy.output[-4000:])
            return 1
        url = (platform.url(environment.hosts()) or "").rstrip("/")
        platform.wait_for_lb(url + "/", {"app-1", "app-2"})
        rates = [float(r) for r in args.rates.split(",") if r]
        rate = highest_rate(url, rates, args.ws, args.probe, say)
        say(f"highest steady rate: {rate:.0f}/s; scenarios at that rate")
        first = up.release
        with tempfile.TemporaryDirectory(prefix="maha-bench-") as tmp:
            built = variant(Path(tmp))
            scenarios: list[tuple[str, Callable[[], Any]]] = [
                ("release", lambda: releases.deploy(env, built.tarball, capture=True)),
                ("rollback", lambda: releases.rollback(env, to=str(first), capture=True)),
                (
                    "nginx reload, every app server",
                    lambda: run_deploy(env, roles=["app"], overrides={"nginx_send_timeout": 31}),
                ),
                (
                    "maha-web restart, every app server at once",
                    lambda: run_deploy(env, roles=["app"], overrides={"app_env": {"BENCH": "1"}}),
                ),
            ]
            rows = []
            for name, change in scenarios:
                report, took, ok = under_load(url, rate, args.ws, args.settle, change)
                say(f"{name}: {report.summary()}")
                rows.append((name, report, took, ok))
        console.print(table(rows))
        bad = [n for n, r, _, ok in rows if not ok or r.failures or r.missed_final]
        return 1 if bad else 0
    finally:
        if not args.keep and not args.env:
            environment.remove(volumes=True)


if __name__ == "__main__":
    raise SystemExit(main())
