"""The local load balancer's runtime API: take an app server out of service before it goes.

HAProxy's admin socket (``stats socket /run/haproxy/admin.sock level admin`` in
templates/lb/haproxy.cfg.j2) changes a server's state at once, without a reload:
``maint`` sends it no new request while the ones in flight finish. The next reload (the
lb deploy, once the server is out of the inventory) forgets it.
"""

from __future__ import annotations

import csv
import shlex
import time

from mahaops.fleet.ssh import as_root, run_one
from mahaops.fleet.status import HAPROXY_BACKEND, HAPROXY_SOCKET
from mahaops.hosts import HostSpec


class HaproxyError(RuntimeError):
    """The admin socket did not answer or refused the command."""


def _script(command: str) -> str:
    # The host's python3 (socat is not installed); one command, the whole answer.
    code = (
        "import socket,sys; s=socket.socket(socket.AF_UNIX); "
        f"s.connect({HAPROXY_SOCKET!r}); s.sendall(sys.argv[1].encode() + b'\\n'); "
        "sys.stdout.write(b''.join(iter(lambda: s.recv(65536), b'')).decode())"
    )
    return f"python3 -c {shlex.quote(code)} {shlex.quote(command)}"


def command(lb: HostSpec, text: str, timeout: float = 20) -> str:
    outcome = run_one(lb, as_root(_script(text)), timeout=timeout)
    if not outcome.ok:
        raise HaproxyError(f"{lb.name}: `{text}`: {outcome.error or outcome.stderr.strip()}")
    return outcome.stdout


def sessions(show_stat: str, backend: str = HAPROXY_BACKEND) -> dict[str, tuple[str, int]]:
    """Server -> (status, current sessions) from ``show stat``'s CSV."""
    rows = csv.DictReader(show_stat.lstrip("# ").splitlines())
    return {
        row["svname"]: ((row.get("status") or "").strip(), int(row.get("scur") or 0))
        for row in rows
        if row.get("pxname") == backend and row.get("svname") not in ("FRONTEND", "BACKEND")
    }


def take_out(lb: HostSpec, server: str, timeout: float = 30.0) -> tuple[bool, int]:
    """Put ``server`` in maintenance and wait (at most ``timeout``) for its requests in
    flight to finish. Returns (it was a backend, sessions still open at the end)."""
    if server not in sessions(command(lb, "show stat")):
        return False, 0
    answer = command(lb, f"set server {HAPROXY_BACKEND}/{server} state maint").strip()
    if answer:
        raise HaproxyError(f"{lb.name}: set {server} in maintenance: {answer}")
    deadline = time.monotonic() + timeout
    left = 0
    while time.monotonic() < deadline:
        left = sessions(command(lb, "show stat")).get(server, ("", 0))[1]
        if left == 0:
            break
        time.sleep(0.5)
    return True, left
