"""What a lifecycle command will do, decided before anything changes (pure: no Docker, no SSH).

- which hosts to create, start again or remove for ``scale``/``replace``/``remove``;
- which *peers* must be re-converged when a host of a role comes or goes, and with which
  roles: the hosts whose configuration lists that role's hosts.

Peers come from two places. The firewall: a role whose port admits another role's group
(``mahaops/firewall.py``; every host's nftables is the base role's) re-runs base. And what
deploys read from the inventory (``CONFIG_READERS``): pg_hba lists app servers and workers,
HAProxy lists app servers, nginx trusts the load balancer's address for the client's one,
the app's and worker's URLs name the db and cache servers, every host ships its logs to
the log server.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mahaops import firewall
from mahaops.roles import PHASES, ROLES, role

# changed role -> (peer role, deploy re-run on the peer, why): configuration that lists hosts
CONFIG_READERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "app": (
        ("db", "db", "pg_hba admits app servers"),
        ("lb", "lb", "HAProxy backends"),
    ),
    "worker": (("db", "db", "pg_hba admits workers"),),
    "db": (
        ("app", "app", "the app's database URL"),
        ("worker", "worker", "the worker's database URL"),
    ),
    "cache": (
        ("app", "app", "the app's Redis URL"),
        ("worker", "worker", "the worker's Redis URL"),
    ),
    "lb": (("app", "app", "nginx takes the client's address from the load balancer"),),
    "mail": (("worker", "worker", "the worker's SMTP host"),),
    "storage": (("app", "app", "the app's S3 endpoint (deploys/_storage.py)"),),
    "log": tuple((r.name, "base", "log shipping (base role)") for r in ROLES),
}
SCALABLE = (
    "app",
    "worker",
    "db",
    "cache",
    "log",
    "lb",
    "mail",
    "storage",
)  # local_hosts' (not base)
SERVING_ROLES = ("app",)  # a host of these roles is health-gated through the load balancer
DATA_ROLES = ("db", "cache", "log", "storage")  # one host, data on volumes: replaced on them


@dataclass(frozen=True)
class Peer:
    role: str  # the peer's role
    deploys: tuple[str, ...]  # roles re-converged on it (base: its firewall or log shipping)
    why: tuple[str, ...]


def peer_roles(changed: str, data_of: Callable[[str], Mapping[str, Any]]) -> dict[str, Peer]:
    """Peer role -> what to re-converge there when a ``changed`` host comes or goes.

    ``data_of(role)``: the merged settings of a host of that role (the firewall's port
    numbers and the log backend depend on them).
    """
    group = role(changed).group
    found: dict[str, tuple[list[str], list[str]]] = {}

    def add(peer: str, deploy: str, why: str) -> None:
        deploys, whys = found.setdefault(peer, ([], []))
        if deploy not in deploys:
            deploys.append(deploy)
        whys.append(why)

    for peer in (r.name for r in ROLES):
        for opening in firewall.role_openings(peer, data_of(peer)):
            if group in opening.sources or firewall.ALL_HOSTS in opening.sources:
                add(peer, "base", f"firewall: {opening.comment} from {group}")
                break
    for peer, deploy, why in CONFIG_READERS.get(changed, ()):
        add(peer, deploy, why)
    order = ["base", *(r.name for r in ROLES)]
    return {
        peer: Peer(peer, tuple(sorted(deploys, key=order.index)), tuple(whys))
        for peer, (deploys, whys) in sorted(found.items(), key=lambda kv: order.index(kv[0]))
    }


def phase_of(role_name: str) -> int:
    return next(i for i, members in enumerate(PHASES) if role_name in members)


def split_peers(changed: str, peers: Mapping[str, Peer]) -> tuple[list[Peer], list[Peer]]:
    """(before, after): peers the new host needs before its role converges (the servers it
    uses must admit it first: PostgreSQL, Redis, the log server), and those that start
    sending to it or using it once it is ready (the load balancer; clients of a new db)."""
    mine = phase_of(changed)
    before = [p for p in peers.values() if phase_of(p.role) < mine]
    after = [p for p in peers.values() if phase_of(p.role) >= mine]
    return before, after


# -- hosts to create and remove ------------------------------------------------------------------


@dataclass(frozen=True)
class Existing:
    name: str
    role: str
    running: bool


_NAME = re.compile(r"^(?P<role>[a-z]+)-(?P<index>\d+)$")


def index_of(name: str) -> int:
    found = _NAME.match(name)
    return int(found["index"]) if found else 0


def next_names(role_name: str, taken: Iterable[str], count: int) -> list[str]:
    """The ``count`` lowest free ``<role>-<n>`` names."""
    used = set(taken)
    names: list[str] = []
    index = 1
    while len(names) < count:
        name = f"{role_name}-{index}"
        if name not in used:
            names.append(name)
            used.add(name)
        index += 1
    return names


@dataclass
class Changes:
    """Hosts a command creates, starts again and removes (all of one role)."""

    role: str
    create: list[str] = field(default_factory=list)
    restart: list[str] = field(default_factory=list)  # stopped containers started again
    remove: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # of ``remove``: not running, nothing to drain

    @property
    def empty(self) -> bool:
        return not (self.create or self.restart or self.remove)


def scale(role_name: str, count: int, hosts: Sequence[Existing]) -> Changes:
    """Hosts of ``role_name`` up or down to ``count``. Going down, lost (stopped) hosts go
    first, then the highest-numbered; going up, stopped hosts are started again before
    new ones are made (as ``invoke up`` does)."""
    if count < 0:
        raise ValueError(f"--count: {count}; give 0 or more")
    if role_name not in SCALABLE:
        raise ValueError(f"--role: {role_name!r}; give one of {', '.join(SCALABLE)}")
    mine = sorted((h for h in hosts if h.role == role_name), key=lambda h: index_of(h.name))
    changes = Changes(role_name)
    if count < len(mine):
        leaving = sorted(mine, key=lambda h: (h.running, -index_of(h.name)))[: len(mine) - count]
        changes.remove = sorted(h.name for h in leaving)
        changes.lost = sorted(h.name for h in leaving if not h.running)
    gone = set(changes.remove)
    changes.restart = [h.name for h in mine if not h.running and h.name not in gone]
    missing = count - len(mine)
    if missing > 0:
        changes.create = next_names(role_name, (h.name for h in hosts), missing)
    return changes


def replace(name: str, hosts: Sequence[Existing]) -> Changes:
    """A new host of ``name``'s role (the lowest free name), then ``name`` leaves."""
    old = _find(name, hosts)
    changes = Changes(old.role, remove=[name], lost=[] if old.running else [name])
    changes.create = next_names(old.role, (h.name for h in hosts), 1)
    return changes


def remove(name: str, hosts: Sequence[Existing]) -> Changes:
    old = _find(name, hosts)
    return Changes(old.role, remove=[name], lost=[] if old.running else [name])


def _find(name: str, hosts: Sequence[Existing]) -> Existing:
    for host in hosts:
        if host.name == name:
            return host
    known = ", ".join(sorted(h.name for h in hosts)) or "none"
    raise ValueError(f"no host {name!r} in this environment (hosts: {known})")


def shape_after(changes: Changes, hosts: Sequence[Existing]) -> dict[str, int]:
    """Hosts per role once ``changes`` are made (checked against the shape's rules)."""
    counts: dict[str, int] = {}
    for host in hosts:
        counts[host.role] = counts.get(host.role, 0) + 1
    counts[changes.role] = counts.get(changes.role, 0) + len(changes.create) - len(changes.remove)
    return counts
