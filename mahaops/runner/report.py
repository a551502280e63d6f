"""What a run prints: one progress line per host and role, a line every 30 s while an
operation keeps a host waiting, the outcome of each operation, the tables at the end and,
last, what failed and why. Everything printed passes through ``mahaops.masking``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import gevent
from pyinfra.api import State
from pyinfra.context import ctx_host, ctx_inventory, ctx_state
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mahaops import masking, pyinfra_hooks
from mahaops.runner import factcache

# No file: rich prints to whatever sys.stdout is then (masked by the entry point).
console = Console(highlight=False, soft_wrap=True)

STILL_ON_EVERY = 30.0  # seconds between "still on" lines while one operation runs
PKGCACHE_LOGS = "/var/log/maha-pkgcache/"  # the local package cache's logs


# -- progress ---------------------------------------------------------------------------------


def duration(seconds: float) -> str:
    """``45s``, ``1m30s``: how long an operation has been running."""
    whole = int(seconds)
    return f"{whole}s" if whole < 60 else f"{whole // 60}m{whole % 60:02d}s"


def role_line(
    host: str, role: str, ops: int, changed: int, elapsed: float, failed: str = ""
) -> None:
    """A host has gone through a role's operations (or failed one of them)."""
    what = (
        f"[red]failed: {escape(masking.mask(failed))}[/]"
        if failed
        else (f"[yellow]{changed} changed[/]" if changed else "[dim]no change[/]")
    )
    console.print(f"[bold]{host}[/] {role}: {ops} operations, {what} [dim]({elapsed:.1f}s)[/]")


@contextlib.contextmanager
def still_on(
    host: str,
    role: str,
    operation: str,
    enabled: bool = True,
    every: float | None = None,
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """While the block runs, say every ``every`` seconds which operation the host is on."""
    if not enabled:
        yield
        return
    interval = every or STILL_ON_EVERY
    started = time.monotonic()
    text = f"{host} {role}: still on {masking.mask(repr(operation))}"

    def tick() -> None:
        beats = 1
        while True:
            gevent.sleep(max(0.0, started + beats * interval - time.monotonic()))
            message = f"{text} ({duration(time.monotonic() - started)})"
            if say is not None:
                say(message)
            else:
                console.print(escape(message), style="dim")
            beats += 1

    ticker = gevent.spawn(tick)
    try:
        yield
    finally:
        ticker.kill(block=False)


# -- what failed ------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_HOST_LINE = re.compile(r"^\[([^\]]+)\]\s+(?:nested\s+)?(.*)$", re.DOTALL)
_APT_FAILURE = re.compile(r"Failed to fetch|apt-get|^E: ", re.MULTILINE)


class HostErrors(logging.Handler):
    """The warnings and errors pyinfra logged for each host since its operation began:
    a failed command's output (pyinfra logs it on failure), a callback's exception, a
    timeout. Masked, without colours."""

    def __init__(self, keep: int = 12) -> None:
        super().__init__(logging.WARNING)
        self.keep = keep
        self.lines: dict[str, deque[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        match = _HOST_LINE.match(_ANSI.sub("", record.getMessage()).strip())
        if match:
            lines = self.lines.setdefault(match[1], deque(maxlen=self.keep))
            lines.extend(masking.mask(match[2]).splitlines())

    def start(self, host: str) -> None:
        self.lines.pop(host, None)

    def tail(self, host: str) -> list[str]:
        return list(self.lines.get(host, ()))


host_errors = HostErrors()


@dataclass(frozen=True)
class Failure:
    host: str
    role: str  # its title
    name: str  # the operation's name
    operation: str  # e.g. apt.packages
    lines: list[str]  # the end of what it printed
    apt_proxy: str  # the host's setting, for the hint on a package failure


def print_failures(failures: list[Failure], kind: str) -> None:
    """Each failed host's failing operation and its error, with a hint for apt failures."""
    if not failures:
        return
    console.print("[red bold]Failed[/]")
    for failure in failures:
        console.print(
            f"[bold]{failure.host}[/] {failure.role}: "
            f"{escape(masking.mask(repr(failure.name)))} ({failure.operation})"
        )
        for line in failure.lines or ["(nothing printed: see the log above)"]:
            console.print(f"  [red]|[/] {escape(line)}")
        text = "\n".join(failure.lines)
        if "apt." in failure.operation or _APT_FAILURE.search(text):
            console.print(f"  [yellow]hint:[/] {escape(apt_hint(failure.apt_proxy, kind))}")


def apt_hint(apt_proxy: str, kind: str) -> str:
    where = f"apt_proxy = {apt_proxy!r}" if apt_proxy else "no apt_proxy (hosts fetch directly)"
    hint = f"packages come through the host's apt_proxy setting: {where}"
    if kind == "local":
        hint += f"; check the package cache's logs in {PKGCACHE_LOGS}"
    return hint


# -- outcomes and tables ----------------------------------------------------------------------


def op_name(state: State, op_hash: str) -> str:
    names = state.op_meta[op_hash].names
    return sorted(names)[0] if names else op_hash


def func_name(func: Callable[..., Any] | None) -> str:
    if func is None:
        return "?"
    return f"{func.__module__.replace('pyinfra.operations.', '')}.{func.__name__}"


def outcomes(state: State, dry: bool, funcs: dict[str, Callable[..., Any]]) -> list[dict[str, Any]]:
    """Each operation on each host: changed, unchanged (or would), failed or skipped."""
    results = []
    for op_hash in state.get_op_order():
        name = op_name(state, op_hash)
        func = funcs.get(op_hash)
        for host in state.inventory:
            host_ops = state.ops.get(host, {})
            if op_hash not in host_ops:
                continue
            op_meta = host_ops[op_hash].operation_meta
            if dry:
                with ctx_state.use(state), ctx_inventory.use(state.inventory), ctx_host.use(host):
                    would = op_meta.will_change and pyinfra_hooks.guard_holds(host_ops[op_hash])
                    status = "changed" if would else "unchanged"
            elif not op_meta.is_complete():
                status = "skipped"
            elif op_meta.did_error():
                status = "failed"
            else:
                status = "changed" if op_meta.did_change() else "unchanged"
            results.append(
                {
                    "host": host.name,
                    "name": masking.mask(name),
                    "status": status,
                    "operation": func_name(func),
                    "idempotent": bool(getattr(func, "is_idempotent", True)),
                }
            )
    return results


def summary(results: list[dict[str, Any]], dry: bool, elapsed: float) -> None:
    """A row per host, then the operations that changed or failed (skipped ones are only
    counted: after a failure they are most of the plan)."""
    verb = "would change" if dry else "changed"
    table = Table(title=f"{'Plan' if dry else 'Result'} ({elapsed:.1f}s)", title_justify="left")
    table.add_column("host")
    table.add_column("operations", justify="right")
    table.add_column(verb, justify="right")
    table.add_column("failed", justify="right")
    facts = factcache.stats()
    if facts:
        table.add_column("facts batched / live", justify="right")
    hosts: dict[str, list[dict[str, Any]]] = {}
    for item in results:
        hosts.setdefault(item["host"], []).append(item)
    for host, items in hosts.items():
        changed = sum(i["status"] == "changed" for i in items)
        failed = sum(i["status"] in ("failed", "skipped") for i in items)
        row = [
            host,
            str(len(items)),
            f"[yellow]{changed}[/]" if changed else "0",
            f"[red]{failed}[/]" if failed else "0",
        ]
        if facts:
            hits, misses = facts.get(host, (0, 0))
            row.append(f"{hits} / {misses}")
        table.add_row(*row)
    console.print(table)
    listed = [i for i in results if i["status"] in ("changed", "failed")]
    if listed:
        ops = Table(title=f"Operations that {verb}" if not dry else "Planned changes")
        ops.add_column("host")
        ops.add_column("operation")
        ops.add_column("status")
        for item in listed:
            colour = {"changed": "yellow", "failed": "red"}[item["status"]]
            label = "will change" if dry and item["status"] == "changed" else item["status"]
            ops.add_row(item["host"], escape(item["name"]), f"[{colour}]{label}[/]")
        console.print(ops)


# -- pyinfra's own log ------------------------------------------------------------------------

_CHATTER = re.compile(r"^(--> Starting operation|\[[^]]+\]\s+(Success|No changes|Connected))")


class _Compact(logging.Filter):
    """Drops pyinfra's per-host progress lines; our one line per operation replaces them.
    Diffs, warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        return not _CHATTER.match(_ANSI.sub("", record.getMessage()).strip())


class _UncheckedLocalHostKeys(logging.Filter):
    """Local containers get new host keys on reused loopback ports, so their keys are
    deliberately not checked (see mahaops/local/hosts.py); the warning is noise there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and record.msg.startswith("No host key"))


def configure_logging(quiet: bool, local: bool, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    if not verbose:
        handler.addFilter(_Compact())
    if local:
        handler.addFilter(_UncheckedLocalHostKeys())
    handler.addFilter(masking.MaskingFilter())
    logger = logging.getLogger("pyinfra")
    logger.handlers[:] = [handler, host_errors]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False
