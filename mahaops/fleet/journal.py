"""The journals of several hosts as one stream, ordered by time, each line prefixed by host.

Each host runs ``journalctl -o json`` (as root: the deploy user is not in the journal's
groups); the entries' ``__REALTIME_TIMESTAMP`` (microseconds, UTC) orders the merge. With
``follow``, the recent lines come first, merged, then new lines as the hosts send them.
"""

from __future__ import annotations

import datetime
import heapq
import json
import queue
import shlex
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from mahaops.fleet.ssh import as_root, connection, run_parallel
from mahaops.hosts import HostSpec


@dataclass(frozen=True, order=True)
class Line:
    at: int  # microseconds since the epoch: the merge key
    host: str
    source: str
    message: str

    def text(self) -> str:
        moment = datetime.datetime.fromtimestamp(self.at / 1e6, datetime.UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        return f"{stamp} {self.host} {self.source}: {self.message}"


def parse(host: str, raw: str) -> Line | None:
    """One ``journalctl -o json`` line as a Line (None for anything else)."""
    try:
        entry = json.loads(raw)
        at = int(entry["__REALTIME_TIMESTAMP"])
    except (ValueError, KeyError, TypeError):
        return None
    message = entry.get("MESSAGE")
    if isinstance(message, list):  # not valid UTF-8: journald sends the bytes
        message = bytes(message).decode(errors="replace")
    source = entry.get("SYSLOG_IDENTIFIER") or entry.get("_COMM") or "?"
    if entry.get("_PID"):
        source += f"[{entry['_PID']}]"
    return Line(at, host, source, str(message or "").rstrip("\n"))


def command(
    services: Sequence[str] = (), since: str = "", lines: int | None = None, follow: bool = False
) -> str:
    """The journalctl command (``lines=None``: every entry, ``0`` with ``follow``: new ones)."""
    args = ["journalctl", "--no-pager", "-o", "json", "--quiet"]
    for service in services:
        args += ["-u", service]
    if since:
        args += ["--since", since]
    if lines is not None:
        args += ["-n", str(lines)]
    if follow:
        args += ["-f"]
    return as_root(shlex.join(args))


def merged(
    hosts: Sequence[HostSpec], services: Sequence[str] = (), since: str = "", lines: int = 0
) -> tuple[list[Line], dict[str, str]]:
    """The hosts' entries in time order (the last ``lines`` of them when given), and the
    hosts that could not be read with why."""
    outcomes = run_parallel(hosts, command(services, since, lines or None), timeout=120)
    streams, failed = [], {}
    for name, outcome in outcomes.items():
        if not outcome.ok:
            failed[name] = outcome.error or outcome.stderr.strip() or f"exit {outcome.exited}"
        parsed = (parse(name, raw) for raw in outcome.stdout.splitlines())
        streams.append(sorted(line for line in parsed if line is not None))
    everything = list(heapq.merge(*streams))
    return (everything[-lines:] if lines else everything), failed


class _Sink:
    """A stream Fabric writes a host's output into: whole lines go to the queue as Lines."""

    def __init__(self, host: str, out: queue.Queue[Line]) -> None:
        self.host, self.out, self.partial = host, out, ""

    def write(self, text: str) -> int:
        self.partial += text
        *complete, self.partial = self.partial.split("\n")
        for raw in complete:
            line = parse(self.host, raw)
            if line is not None:
                self.out.put(line)
        return len(text)

    def flush(self) -> None:
        pass


def follow(
    hosts: Sequence[HostSpec], services: Sequence[str] = (), stop: threading.Event | None = None
) -> Iterator[Line]:
    """New entries of every host as they arrive (until ``stop`` is set, or forever)."""
    out: queue.Queue[Line] = queue.Queue()
    stop = stop or threading.Event()
    cmd = command(services, lines=0, follow=True)

    def tail(spec: HostSpec, report: Callable[[Line], None] = out.put) -> None:
        try:
            with connection(spec) as conn:
                sink = _Sink(spec.name, out)
                result = conn.run(cmd, hide=False, warn=True, in_stream=False, out_stream=sink)
            why = f"exit {result.exited}"
        except Exception as exc:  # the host went away: say so in the stream, keep the others
            why = str(exc).strip() or type(exc).__name__
        now = int(datetime.datetime.now(datetime.UTC).timestamp() * 1e6)
        report(Line(now, spec.name, "maha", f"journal stream ended ({why})"))

    for spec in hosts:
        threading.Thread(target=tail, args=(spec,), daemon=True).start()
    while not stop.is_set():
        try:
            yield out.get(timeout=0.5)
        except queue.Empty:
            continue
