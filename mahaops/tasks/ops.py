"""The operator's day-to-day tasks on Fabric: ``status``, ``exec``, ``logs``, ``unlock``,
``history``. The library behind them is ``mahaops.fleet``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mahaops.hosts import HostSpec
from mahaops.tasks._common import ENV_HELP, masked_console

ROLE_HELP = "only the hosts of this role: db, cache, log, app, worker, lb"
HOST_HELP = "only this host, e.g. app-1"


def _hosts(env: str, role: str = "", host: str = "") -> list[HostSpec]:
    """The env's hosts (all, one role's or one), with their secrets registered for masking."""
    from mahaops.fleet.ssh import environment_hosts, register_secrets, select

    found = environment_hosts(env)
    if not found:
        raise Exit(f"environment {env!r} has no running hosts", code=1)
    try:
        chosen = select(found, role=role, host=host)
    except ValueError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    register_secrets(env)
    return chosen


def _lock_host(env: str) -> HostSpec:
    from mahaops.fleet import lock
    from mahaops.fleet.ssh import environment_hosts

    where = lock.lock_host(environment_hosts(env))
    if where is None:
        raise Exit(f"environment {env!r} has no running hosts", code=1)
    return where


_STATE_STYLE = {"active": "green", "failed": "red", "absent": "red", "in service": "green"}


def _styled(text: str) -> str:
    style = _STATE_STYLE.get(text.split(" (")[0], "yellow")
    return f"[{style}]{escape(text)}[/]"


@task(help={"env": ENV_HELP})
def status(c: Context, env: str = "local") -> None:
    """One table of the environment: each host's release, services, last deploy, load balancer."""
    from mahaops.fleet import audit, lock
    from mahaops.fleet import status as fleet_status
    from mahaops.hosts import kind_of
    from mahaops.settings import GroupData

    hosts = _hosts(env)
    console = masked_console()
    rows = fleet_status.collect(hosts)
    notes: list[str] = []
    if kind_of(env, GroupData().files) == "aws":
        from mahaops.aws.elb import app_target_health

        try:
            fleet_status.apply_target_health(rows, hosts, app_target_health(env))
        except Exception as exc:  # status still shows the hosts when the ELB cannot be read
            notes.append(f"load balancer not read: {exc}")
    where = lock.lock_host(hosts)
    last: dict[str, audit.Entry] = {}
    holder = None
    if where is not None:
        try:
            last = audit.last_per_host(audit.read(where, last=500))
            holder = lock.current(where)
        except lock.LockError as exc:
            notes.append(f"audit log not read: {exc}")
    table = Table(title=f"Environment {env}")
    for column in ("host", "role", "address", "release", "services", "last deploy", "lb"):
        table.add_column(column)
    for row in rows:
        if not row.reachable:
            services = f"[red]unreachable: {escape(row.error)}[/]"
        else:
            services = ", ".join(f"{u} {_styled(s)}" for u, s in row.units.items()) or "-"
        entry = last.get(row.name)
        deployed = f"{entry.who} {entry.finished or entry.started} {entry.result}" if entry else ""
        release = escape(row.release) or "-"
        for service, owed in row.owed.items():  # switched, not yet restarted and checked
            release += f"\n[yellow]{escape(service)} owes {escape(owed)}[/]"
        table.add_row(
            row.name,
            row.role,
            row.address,
            release,
            services,
            escape(deployed) or "-",
            _styled(row.lb) if row.lb else "-",
        )
    console.print(table)
    if holder:
        console.print(f"[yellow]Deploy lock held by {escape(holder.describe())}[/]")
    for note in notes:
        console.print(f"[yellow]{escape(note)}[/]")


def _remainder() -> str:
    """What follows ``--`` on the command line (Invoke parses it but gives tasks none)."""
    if "--" not in sys.argv:
        return ""
    return " ".join(sys.argv[sys.argv.index("--") + 1 :])


@task(
    name="exec",
    help={
        "env": ENV_HELP,
        "role": ROLE_HELP,
        "host": HOST_HELP,
        "command": "the command (default: what follows --)",
        "timeout": "seconds each host may take (default: no limit)",
    },
)
def exec_(
    c: Context, env: str = "local", role: str = "", host: str = "", command: str = "", timeout=0
) -> None:
    """Run a command on hosts in parallel: output prefixed by host, then exit statuses."""
    from mahaops.fleet.ssh import run_parallel

    command = command or _remainder()
    if not command:
        raise Exit("usage: invoke exec --env E [--role R | --host H] -- COMMAND", code=2)
    hosts = _hosts(env, role=role, host=host)
    outcomes = run_parallel(hosts, command, timeout=float(timeout) or None)
    out = masked_console()
    width = max(len(h.name) for h in hosts)
    for name, outcome in outcomes.items():
        for stream, style in ((outcome.stdout, "cyan"), (outcome.stderr, "magenta")):
            for line in stream.splitlines():
                out.print(f"[{style}]{name:<{width}}[/] | {escape(line)}")
    table = Table(title=f"exit status: {escape(command)}")
    table.add_column("host")
    table.add_column("exit")
    for name, outcome in outcomes.items():
        said = str(outcome.exited) if outcome.exited is not None else escape(outcome.error)
        table.add_row(name, f"[{'green' if outcome.ok else 'red'}]{said}[/]")
    out.print(table)
    failed = [name for name, outcome in outcomes.items() if not outcome.ok]
    if failed:
        raise Exit(f"failed on {len(failed)} of {len(outcomes)} host(s): {', '.join(failed)}", 1)


@task(
    help={
        "env": ENV_HELP,
        "role": ROLE_HELP,
        "host": HOST_HELP,
        "service": "only this unit's journal, e.g. maha-web or nginx (repeatable)",
        "since": "from this time, as journalctl reads it: '10 min ago', '2025-01-01 10:00'",
        "lines": "without --since: the last N lines across the hosts (default 50)",
        "follow": "then keep printing new lines as they come (Ctrl-C stops)",
    },
    iterable=["service"],
)
def logs(
    c: Context,
    env: str = "local",
    role: str = "",
    host: str = "",
    service=None,
    since: str = "",
    lines: int = 50,
    follow: bool = False,
) -> None:
    """The hosts' journals interleaved by time, each line prefixed by its host."""
    from mahaops.fleet import journal

    hosts = _hosts(env, role=role, host=host)
    services: Sequence[str] = service or ()
    out = masked_console()
    entries, failed = journal.merged(hosts, services, since, 0 if since else lines)
    for entry in entries:
        out.print(escape(entry.text()), soft_wrap=True)
    for name, why in failed.items():
        out.print(f"[red]{name}: journal not read: {escape(why)}[/]")
    if follow:
        try:
            for entry in journal.follow(hosts, services):
                out.print(escape(entry.text()), soft_wrap=True)
        except KeyboardInterrupt:
            pass
    elif failed:
        raise Exit(code=1)


@task(help={"env": ENV_HELP})
def unlock(c: Context, env: str = "local") -> None:
    """Release the environment's deploy lock after showing who held it and for how long."""
    from mahaops.fleet import audit, lock

    where = _lock_host(env)
    console = Console()
    try:
        removed = lock.force_release(where)
    except lock.LockError as exc:
        raise Exit(f"error: {exc}", code=1) from None
    if removed is None:
        console.print(f"{env}: no deploy lock held (on {where.name})")
        return
    console.print(f"{env}: released the deploy lock of {removed.describe()}")
    entry = audit.Entry(
        lock.operator(),
        lock.timestamp(),
        audit.command_line("unlock", {"env": env}),
        env,
        f"released lock of {removed.who} (`{removed.what}`, held {lock.age_text(removed.age())})",
        lock.timestamp(),
    )
    audit.append(where, entry)


@task(help={"env": ENV_HELP, "last": "how many entries, newest last (default 20)"})
def history(c: Context, env: str = "local", last: int = 20) -> None:
    """The audit log: who ran which mutating command, when, on which hosts, with what result."""
    from mahaops.fleet import audit, lock

    where = _lock_host(env)
    try:
        entries = audit.read(where, last=last)
    except lock.LockError as exc:
        raise Exit(f"error: {exc}", code=1) from None
    table = Table(title=f"History of {env} (audit log on {where.name})")
    for column in ("started (UTC)", "who", "what", "release", "hosts", "took", "result"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        ok = entry.result == "ok"
        table.add_row(
            entry.started,
            escape(entry.who),
            escape(entry.what),
            escape(entry.release) or "-",
            ", ".join(entry.hosts) or "-",
            lock.age_text(entry.seconds) if entry.finished else "-",
            f"[{'green' if ok else 'red'}]{escape(entry.result)}[/]",
        )
    masked_console().print(table)
    holder = lock.current(where)
    if holder:
        Console().print(f"[yellow]Deploy lock held by {escape(holder.describe())}[/]")


ns = Collection("ops", status, exec_, unlock, history)
