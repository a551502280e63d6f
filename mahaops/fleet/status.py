"""What each host of an environment is doing: release running, services, load balancer.

One shell script per host, all hosts side by side, each answering ``key value`` lines:

- ``release process <id>``: what the running process says. The web process answers
  ``/health`` on 127.0.0.1 with an ``X-Maha-Release`` header; a worker's release is ``MAHA_RELEASE``
  in its main process's environment (only that variable leaves the host).
- ``release symlink <id>``: where ``current`` points, shown only when no process answers
  (stopped, or not yet started), and labelled so.
- ``unit <name> <state>``: ``systemctl is-active`` of the role's units.
- ``lb <server> <status>``: on the local load balancer, HAProxy's ``show stat`` from its
  admin socket. On AWS the target group's health comes from the ELB API instead.
"""

from __future__ import annotations

import csv
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mahaops.fleet.ssh import as_root, role_of, run_parallel
from mahaops.hosts import HostSpec

# A role's units; "?" marks one shown only where it is installed (the log server's
# Graylog stack exists only with log_backend=graylog), "*" a pattern (db's cluster unit).
ROLE_UNITS: dict[str, tuple[str, ...]] = {
    "base": ("ssh",),
    "db": ("postgresql@*",),
    "cache": ("redis-server",),
    "log": ("rsyslog", "graylog-server?", "mongod?", "opensearch?"),
    "app": ("nginx", "maha-web"),
    "worker": ("maha-worker",),
    "lb": ("haproxy",),
    "mail": ("maha-mail",),
    "storage": ("maha-s3",),
}
HAPROXY_SOCKET = "/run/haproxy/admin.sock"
HAPROXY_BACKEND = "app_servers"

# HAProxy's server status and the ELB's target states, in the operator's words.
LB_WORDS = {
    "UP": "in service",
    "healthy": "in service",
    "DRAIN": "draining",
    "draining": "draining",
    "NOLB": "draining",
    "MAINT": "maintenance",
    "unused": "not in service",
    "DOWN": "unhealthy",
    "unhealthy": "unhealthy",
    "initial": "starting",
    "no check": "in service (unchecked)",
}


@dataclass
class HostStatus:
    name: str
    role: str
    address: str
    reachable: bool = True
    error: str = ""
    release: str = ""  # the process's word, else the symlink's labelled "(symlink)"
    owed: dict[str, str] = field(default_factory=dict)  # service -> release a run left owed
    units: dict[str, str] = field(default_factory=dict)
    lb: str = ""
    last_deploy: str = ""


def _unit_lines(units: Iterable[str]) -> str:
    lines = []
    for unit in units:
        if "*" in unit:
            lines.append(
                "for n in $(systemctl list-units --all --plain --no-legend --type=service "
                f"{shlex.quote(unit)} | awk '{{print $1}}'); do "
                'echo "unit ${n%.service} $(systemctl is-active "$n")"; done'
            )
            continue
        name = unit.rstrip("?")
        absent = "" if unit.endswith("?") else f"; else echo 'unit {name} absent'"
        lines.append(
            f'if [ "$(systemctl show -p LoadState --value {name})" = loaded ]; then '
            f'echo "unit {name} $(systemctl is-active {name})"{absent}; fi'
        )
    return "\n".join(lines)


def _release_lines(role: str, app_root: str, app_port: int) -> str:
    if role == "app":
        # python3 rather than curl: every host has it (a 503 still carries the header).
        probe = (
            "import urllib.request as u, urllib.error as e\n"
            f"try: r = u.urlopen('http://127.0.0.1:{app_port}/health', timeout=3)\n"
            "except e.HTTPError as x: r = x\n"
            "except Exception: raise SystemExit\n"
            "print(r.headers.get('X-Maha-Release', ''))"
        )
        process = f"r=$(python3 -c {shlex.quote(probe)} 2>/dev/null)"
    elif role == "worker":
        from operations.release import running_release

        process = f"r=$({running_release('maha-worker')})"
    else:
        return ""
    pending = shlex.quote(f"{app_root}/pending")
    return (
        f"{process}\n"
        'if [ -n "$r" ]; then echo "release process $r"; '
        f"elif l=$(readlink {shlex.quote(app_root)}/current 2>/dev/null); then "
        'echo "release symlink ${l##*/}"; fi\n'
        # A run that stopped between a switch and its passing check left these markers.
        f'for f in {pending}/*; do [ -f "$f" ] && echo "owed ${{f##*/}} $(cat "$f")"; done'
    )


# Reads HAProxy's admin socket with the host's python3 (socat is not installed).
_SHOW_STAT = (
    "python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); "
    f's.connect("{HAPROXY_SOCKET}"); s.sendall(b"show stat\\n"); '
    'sys.stdout.write(b"".join(iter(lambda: s.recv(65536), b"")).decode())\' '
    "| sed -n 's/^/haproxy /p'"
)


def host_script(role: str, app_root: str = "/srv/maha", app_port: int = 3000) -> str:
    """The status script for a host of ``role`` (run as root)."""
    parts = [_unit_lines(ROLE_UNITS.get(role, ())), _release_lines(role, app_root, app_port)]
    if role == "lb":
        parts.append(f"[ -S {HAPROXY_SOCKET} ] && {_SHOW_STAT}")
    return "\n".join(p for p in parts if p) + "\ntrue"


def haproxy_states(show_stat: str, backend: str = HAPROXY_BACKEND) -> dict[str, str]:
    """Server name -> operator's word, from HAProxy's ``show stat`` CSV."""
    lines = show_stat.lstrip("# ").splitlines()
    states: dict[str, str] = {}
    for row in csv.DictReader(lines):
        if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        raw = (row.get("status") or "").strip()
        word = raw.split(" ")[0]  # "UP 1/3" while rising, "DOWN 1/2" while falling
        text = LB_WORDS.get(raw, LB_WORDS.get(word, raw.lower() or "unknown"))
        if "/" in raw:
            text += f" ({raw})"
        states[row["svname"]] = text
    return states


def parse_answer(status: HostStatus, text: str) -> str:
    """Fill ``status`` from a host's ``key value`` lines; returns any HAProxy CSV found."""
    releases: dict[str, str] = {}
    stat: list[str] = []
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "unit":
            unit, _, state = rest.partition(" ")
            status.units[unit] = state.strip() or "unknown"
        elif kind == "release":
            source, _, release = rest.partition(" ")
            releases[source] = release.strip()
        elif kind == "haproxy":
            stat.append(rest)
        elif kind == "owed":
            service, _, release = rest.partition(" ")
            status.owed[service] = release.strip()
    if releases.get("process"):
        status.release = releases["process"]
    elif releases.get("symlink"):
        status.release = f"{releases['symlink']} (symlink)"
    return "\n".join(stat)


def _app_settings(spec: HostSpec, data_files: Any) -> tuple[str, int]:
    from mahaops.settings import from_data
    from mahaops.settings.app import AppSettings, ReleaseSettings

    data = data_files.merged(spec.groups, spec.data)
    return from_data(ReleaseSettings, data).app_root, from_data(AppSettings, data).app_port


def collect(hosts: Sequence[HostSpec]) -> list[HostStatus]:
    """Each host's status, all hosts side by side (a host that does not answer says why)."""
    from mahaops.settings import GroupData

    data_files = GroupData()
    by_script: dict[str, list[HostSpec]] = {}
    for spec in hosts:
        role = role_of(spec)
        root, port = _app_settings(spec, data_files) if role in ("app", "worker") else ("", 0)
        by_script.setdefault(host_script(role, root, port), []).append(spec)
    answers: dict[str, Any] = {}
    for script, members in by_script.items():
        answers.update(run_parallel(members, as_root(script), timeout=30))
    statuses: list[HostStatus] = []
    lb_states: dict[str, str] = {}
    for spec in hosts:
        status = HostStatus(spec.name, role_of(spec), spec.private_address or "-")
        outcome = answers[spec.name]
        if outcome.exited is None:
            status.reachable, status.error = False, outcome.error
        else:
            stat = parse_answer(status, outcome.stdout)
            if stat:
                lb_states.update(haproxy_states(stat))
        statuses.append(status)
    for status in statuses:
        status.lb = lb_states.get(status.name, "")
    return statuses


def apply_target_health(
    statuses: Sequence[HostStatus], hosts: Sequence[HostSpec], health: Mapping[str, str]
) -> None:
    """AWS: each app server's target state (by instance id) in the operator's words."""
    ids = {h.name: h.data.get("instance_id") for h in hosts}
    for status in statuses:
        state = health.get(str(ids.get(status.name)))
        if state:
            status.lb = LB_WORDS.get(state, state)


def releases_running(hosts: Sequence[HostSpec]) -> dict[str, str]:
    """App server / worker name -> release it runs (as ``collect`` reports it)."""
    serving = [h for h in hosts if role_of(h) in ("app", "worker")]
    return {s.name: s.release for s in collect(serving) if s.release} if serving else {}
