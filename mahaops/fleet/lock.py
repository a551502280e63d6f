"""The deploy lock: one per environment, on a host of that environment.

Where: the environment's *lock host*, its first db server by name (the host every
environment has, local and AWS alike, and the one least often replaced), or its first
host by name when it has no db server. Every operator reaching the environment sees the
same lock; nothing is kept on an operator's machine.

What: the directory ``/var/lib/maha/lock`` holding ``holder.json`` (who, what, since, a
token). It is made complete in a temporary directory and renamed into place with
``mv -T`` (``rename(2)``): the rename fails when the lock already exists, so two
operators can never both take it, and no one ever sees a lock without its holder.

A lock is only released by the run that took it (its token must match) or, when that
run is gone, by ``invoke unlock`` which shows the holder and age first. Never on a timer.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import secrets
import shlex
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from mahaops.fleet.ssh import as_root, run_one
from mahaops.hosts import HostSpec

STATE_DIR = "/var/lib/maha"
LOCK_DIR = f"{STATE_DIR}/lock"
HOLDER_FILE = f"{LOCK_DIR}/holder.json"


class LockError(RuntimeError):
    """The lock could not be read or changed (its host unreachable, say)."""


class LockHeld(LockError):
    """Someone else holds the lock."""

    def __init__(self, env: str, holder: Holder | None) -> None:
        self.env, self.holder = env, holder
        who = holder.describe() if holder else "an unknown holder (no holder.json)"
        super().__init__(
            f"environment {env!r} is locked by {who}.\n"
            f"If that run is over (its machine died, it was killed), release the lock with "
            f"`invoke unlock --env {env}`."
        )


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def timestamp(moment: datetime.datetime | None = None) -> str:
    """UTC, to the second, ISO 8601 with a Z: what the lock and the audit log record."""
    return (moment or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def age_text(seconds: float) -> str:
    """``45s``, ``4m05s``, ``2h03m``, ``3d04h``: an age an operator reads at a glance."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def operator() -> str:
    """``user@machine`` of whoever runs this (``MAHA_OPERATOR`` overrides, e.g. in CI)."""
    return os.environ.get("MAHA_OPERATOR") or f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class Holder:
    who: str
    what: str
    since: str
    token: str

    @classmethod
    def new(cls, what: str, who: str = "") -> Holder:
        return cls(who or operator(), what, timestamp(), secrets.token_hex(8))

    def age(self, at: datetime.datetime | None = None) -> float:
        return ((at or now()) - parse_timestamp(self.since)).total_seconds()

    def describe(self, at: datetime.datetime | None = None) -> str:
        return (
            f"{self.who} running `{self.what}` since {self.since} "
            f"(held for {age_text(self.age(at))})"
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(str(data["who"]), str(data["what"]), str(data["since"]), data["token"])
        except (ValueError, KeyError, TypeError):
            return None


def lock_host(hosts: Sequence[HostSpec]) -> HostSpec | None:
    """The host holding ``env``'s lock and audit log: first db server, else first host."""
    ordered = sorted(hosts, key=lambda h: h.name)
    db = [h for h in ordered if "db_servers" in h.groups]
    first = db or ordered
    return first[0] if first else None


def _run(spec: HostSpec, script: str) -> str:
    outcome = run_one(spec, as_root(script), timeout=60)
    if not outcome.ok:
        why = outcome.error or (outcome.stderr.strip() or f"exit {outcome.exited}")
        raise LockError(f"deploy lock on {spec.name}: {why}")
    return outcome.stdout


def acquire(env: str, spec: HostSpec, holder: Holder) -> None:
    """Take ``env``'s lock for ``holder``, or raise :class:`LockHeld` naming who has it."""
    script = f"""set -e
mkdir -p {STATE_DIR}
tmp=$(mktemp -d {STATE_DIR}/.lock-XXXXXX)
printf '%s\\n' {shlex.quote(holder.to_json())} > "$tmp/holder.json"
chmod 755 "$tmp"; chmod 644 "$tmp/holder.json"
if mv -T "$tmp" {LOCK_DIR} 2>/dev/null; then echo TAKEN
else rm -rf "$tmp"; echo HELD; cat {HOLDER_FILE} 2>/dev/null || true; fi"""
    status, _, rest = _run(spec, script).partition("\n")
    if status.strip() != "TAKEN":
        raise LockHeld(env, Holder.from_json(rest))


def release_script(holder: Holder) -> str:
    """Shell that removes the lock only if ``holder`` still has it (its token matches)."""
    token = shlex.quote(f'"token": "{holder.token}"')
    return f"if grep -qF {token} {HOLDER_FILE} 2>/dev/null; then rm -rf {LOCK_DIR}; fi"


def release(spec: HostSpec, holder: Holder) -> None:
    _run(spec, release_script(holder))


def current(spec: HostSpec) -> Holder | None:
    """Who holds the lock now (None when it is free)."""
    out = _run(spec, f"cat {HOLDER_FILE} 2>/dev/null || true")
    return Holder.from_json(out) if out.strip() else None


def force_release(spec: HostSpec) -> Holder | None:
    """Remove the lock whoever holds it; returns the holder removed (None if it was free).
    Moved aside first, so what is reported is exactly what was removed."""
    script = f"""set -e
aside={STATE_DIR}/.unlocked-$$
if mv -T {LOCK_DIR} "$aside" 2>/dev/null; then
  echo REMOVED; cat "$aside/holder.json" 2>/dev/null || true; rm -rf "$aside"
fi"""
    status, _, rest = _run(spec, script).partition("\n")
    if status.strip() != "REMOVED":
        return None
    return Holder.from_json(rest) or Holder("unknown", "unknown", timestamp(), "")
