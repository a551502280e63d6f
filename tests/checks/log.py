"""What an operator expects of log shipping and the central rsyslog receiver.

Shared by the pyinfra tests and the exported-Ansible tests: both must make these pass.
Lines arrive in ``/var/log/maha-remote/<host>/<service>.log`` on the log host, each
carrying ``[maha@32473 host=... role=... service=... release=...]``.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from typing import Protocol

from mahaops.local.hosts import LocalHost

REMOTE_DIR = "/var/log/maha-remote"


class Runs(Protocol):
    def exec(self, host: LocalHost, command: str, check: bool = True) -> str: ...


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def received(bed: Runs, log_host: LocalHost, host_name: str, service: str) -> str:
    """What the log host holds for ``service`` on ``host_name`` ('' when nothing yet)."""
    path = shlex.quote(f"{REMOTE_DIR}/{host_name}/{service}.log")
    return bed.exec(log_host, f"cat {path} 2>/dev/null || true")


def log_as(bed: Runs, host: LocalHost, service: str, text: str) -> None:
    """Log ``text`` on ``host`` the way ``service`` does: through the journal, or nginx's file."""
    quoted = shlex.quote(text)
    if service == "maha-worker":  # a unit's stdout, as journald captures it
        bed.exec(host, f"echo {quoted} | systemd-cat -t maha-worker")
    elif service.startswith("nginx-"):
        path = f"/var/log/nginx/{service.removeprefix('nginx-')}.log"
        bed.exec(host, f"install -d /var/log/nginx && echo {quoted} >> {path}")
    else:
        bed.exec(host, f"logger -t {shlex.quote(service)} {quoted}")


def arrived_line(
    bed: Runs,
    log_host: LocalHost,
    host_name: str,
    service: str,
    text: str,
    timeout: float = 30,
) -> str | None:
    """The received line containing ``text``, waiting up to ``timeout`` seconds; else None."""
    found: list[str] = []

    def seen() -> bool:
        lines = received(bed, log_host, host_name, service).splitlines()
        found[:] = [line for line in lines if text in line]
        return bool(found)

    return found[0] if wait_until(seen, timeout) else None


def count_numbered(
    bed: Runs, log_host: LocalHost, host_name: str, service: str, prefix: str
) -> set[int]:
    """Which numbers of ``<prefix> <n>`` lines the log host has received."""
    path = shlex.quote(f"{REMOTE_DIR}/{host_name}/{service}.log")
    out = bed.exec(
        log_host, f"grep -o {shlex.quote(prefix + ' [0-9]*')} {path} 2>/dev/null || true"
    )
    return {int(line.rsplit(" ", 1)[1]) for line in out.splitlines() if line.strip()}


def stop_receiver(bed: Runs, log_host: LocalHost) -> None:
    """Stop rsyslog on the log host (its socket too, or the journal would restart it)."""
    bed.exec(log_host, "systemctl stop syslog.socket rsyslog.service")


def start_receiver(bed: Runs, log_host: LocalHost) -> None:
    bed.exec(log_host, "systemctl start rsyslog.service")


def tags(line: str) -> dict[str, str]:
    """The ``maha@32473`` structured-data fields of a received line."""
    start = line.index("[maha@32473 ") + len("[maha@32473 ")
    body = line[start : line.index("]", start)]
    return dict(
        (key, value.strip('"')) for key, _, value in (p.partition("=") for p in body.split())
    )
