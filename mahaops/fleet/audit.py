"""The audit log, and ``guarded``: the deploy lock and an audit record around a task.

Every mutating command (deploy, up, release, rollback; unlock too) appends one JSON line
to ``/var/lib/maha/audit.jsonl`` on the environment's lock host (``mahaops.fleet.lock``):
who, when it started and ended, what was run, the release the app servers and workers run
afterwards, the hosts in its scope and the result. Refused runs (the lock was held) are
recorded too, so ``invoke history`` shows who was turned away.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from mahaops import masking
from mahaops.fleet import lock
from mahaops.fleet.ssh import as_root, environment_hosts, role_of, run_one
from mahaops.hosts import HostSpec
from mahaops.settings import DEFAULT_GROUP_DATA

AUDIT_LOG = f"{lock.STATE_DIR}/audit.jsonl"


@dataclass
class Entry:
    who: str
    started: str
    what: str
    env: str
    result: str = ""
    finished: str = ""
    seconds: float = 0.0
    release: str = ""
    hosts: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return masking.mask(json.dumps(asdict(self), sort_keys=True))

    @classmethod
    def from_json(cls, text: str) -> Entry | None:
        try:
            data = json.loads(text)
            known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
            return cls(**known)
        except (ValueError, TypeError):
            return None


def append_script(entry: Entry) -> str:
    # One write of one line with O_APPEND: lines of two writers never interleave.
    return (
        f"mkdir -p {lock.STATE_DIR} && printf '%s\\n' {shlex.quote(entry.to_json())} "
        f">> {AUDIT_LOG} && chmod 644 {AUDIT_LOG}"
    )


def append(spec: HostSpec, entry: Entry) -> None:
    outcome = run_one(spec, as_root(append_script(entry)), timeout=60)
    if not outcome.ok:
        raise lock.LockError(f"audit log on {spec.name}: {outcome.error or outcome.stderr}")


def read(spec: HostSpec, last: int = 50) -> list[Entry]:
    """The last ``last`` entries, oldest first (lines that do not parse are skipped)."""
    outcome = run_one(spec, as_root(f"tail -n {int(last)} {AUDIT_LOG} 2>/dev/null; true"))
    if not outcome.ok:
        raise lock.LockError(f"audit log on {spec.name}: {outcome.error or outcome.stderr}")
    return [e for e in map(Entry.from_json, outcome.stdout.splitlines()) if e is not None]


def release_text(running: dict[str, str]) -> str:
    """One release, or each distinct one with its hosts when they differ (a mixed state)."""
    distinct = sorted(set(running.values()))
    if len(distinct) <= 1:
        return distinct[0] if distinct else ""
    return "; ".join(
        f"{r} on {', '.join(sorted(h for h, v in running.items() if v == r))}" for r in distinct
    )


def in_scope(
    hosts: Sequence[HostSpec], roles: Iterable[str] = (), limit: Iterable[str] = ()
) -> list[HostSpec]:
    """Hosts a command touches: those of ``roles`` (every host runs base), within ``limit``
    (host names or group names), as the runner selects them. A task's ``--role`` may be one
    string (``scale``, ``exec``), never split into letters."""
    roles = {roles} if isinstance(roles, str) else set(roles)
    limit = set(limit)
    chosen = []
    for spec in hosts:
        if roles and "base" not in roles and role_of(spec) not in roles:
            continue
        if limit and spec.name not in limit and not limit & set(spec.groups):
            continue
        chosen.append(spec)
    return chosen


def command_line(name: str, kwargs: dict[str, Any]) -> str:
    """What the operator typed, or a rebuilt equivalent when called from Python."""
    program = sys.argv[0] if sys.argv else ""  # .venv/bin/invoke, or invoke/__main__.py
    if ("invoke" in program or program.endswith("/inv")) and name in sys.argv:
        return masking.mask(shlex.join(["invoke", *sys.argv[1:]]))
    options = [f"--{k}={v}" for k, v in sorted(kwargs.items()) if v not in (None, False, "", [])]
    return masking.mask(" ".join(["invoke", name, *options]))


_held: set[str] = set()  # environments this process holds: a nested guarded task passes
F = TypeVar("F", bound=Callable[..., Any])


def _result(exc: BaseException | None) -> str:
    if exc is None:
        return "ok"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    code = getattr(exc, "code", None)
    if code == 0:
        return "ok"
    message = str(getattr(exc, "message", "") or exc).strip().splitlines()
    reason = f": {message[0][:120]}" if message else ""
    return f"failed (exit {code}){reason}" if code is not None else f"failed{reason}"


def guarded(
    name: str, roles: Sequence[str] = (), note: Callable[[str], None] | None = None
) -> Callable[[F], F]:
    """Decorate a mutating task: take ``--env``'s deploy lock, run, append an audit entry,
    release the lock; a second operator is refused naming the holder and age.

    ``roles``: the roles the task changes (default: its ``--role`` option, else all).
    Dry runs (``dry=True``) take no lock and leave no record. Use under ``@task``::

        @task(help={...})
        @guarded("release", roles=("app", "worker"))
        def release(c, env="local"): ...
    """

    def decorate(body: F) -> F:
        @functools.wraps(body)
        def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
            from invoke.exceptions import Exit

            env = str(kwargs.get("env") or "local")
            if kwargs.get("dry") or env in _held:
                return body(c, *args, **kwargs)
            say = note or (lambda text: print(text, file=sys.stderr))
            hosts = _hosts(env)
            _check_settings(kwargs, hosts)  # bad settings touch no host: no lock, no record
            holder = lock.Holder.new(command_line(name, kwargs))
            lock_host = lock.lock_host(hosts)
            if lock_host is not None:
                try:
                    lock.acquire(env, lock_host, holder)
                except lock.LockHeld as exc:
                    _record_refusal(lock_host, env, holder, exc)
                    raise Exit(f"refused: {exc}", code=1) from None
                except lock.LockError as exc:
                    raise Exit(f"refused: cannot take the deploy lock: {exc}", code=1) from None
            _held.add(env)
            started, error = time.monotonic(), None
            try:
                return body(c, *args, **kwargs)
            except BaseException as exc:
                error = exc
                raise
            finally:
                _held.discard(env)
                _finish(env, lock_host, holder, kwargs, roles, started, error, say)

        return wrapper  # type: ignore[return-value]

    return decorate


def _check_settings(kwargs: dict[str, Any], hosts: Sequence[HostSpec]) -> None:
    """The settings the run will read (group_data, ``--set``, each host's merged data),
    checked as the runner checks them, before the lock: a bad one stops the task naming
    the file (or ``--set``) and the key."""
    from invoke.exceptions import Exit

    from mahaops.runner.state import check_host_settings
    from mahaops.settings import GroupData, SettingsError, parse_overrides

    try:
        group_data = GroupData(DEFAULT_GROUP_DATA)
        overrides = parse_overrides(kwargs.get("set") or [])
        for spec in hosts:
            check_host_settings(spec, group_data.merged(spec.groups, spec.data, overrides))
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None


def _hosts(env: str) -> list[HostSpec]:
    try:
        return environment_hosts(env)
    except Exception:  # no Docker engine / no AWS credentials: nothing to lock on
        return []


def _record_refusal(spec: HostSpec, env: str, holder: lock.Holder, exc: lock.LockHeld) -> None:
    held_by = exc.holder.who if exc.holder else "unknown"
    entry = Entry(holder.who, holder.since, holder.what, env, f"refused: held by {held_by}")
    with contextlib.suppress(lock.LockError):  # the refusal itself is what matters
        append(spec, entry)


def _finish(
    env: str,
    lock_host: HostSpec | None,
    holder: lock.Holder,
    kwargs: dict[str, Any],
    roles: Sequence[str],
    started: float,
    error: BaseException | None,
    say: Callable[[str], None],
) -> None:
    """Audit entry, then the lock released, in one command on the lock host. A failure
    here is said, never raised over the task's own outcome; the lock is released even when
    what the entry records could not be read."""
    entry = Entry(holder.who, holder.since, holder.what, env, _result(error), lock.timestamp())
    entry.seconds = round(time.monotonic() - started, 1)
    hosts = _hosts(env)
    try:
        scope = in_scope(hosts, roles or kwargs.get("role") or (), kwargs.get("limit") or ())
        entry.hosts = [h.name for h in scope]
        entry.release = release_text(_running(scope))
    except Exception as exc:
        say(f"warning: could not read the release running on {env}: {exc}")
    now = {h.name: h for h in hosts}
    if lock_host is not None and lock_host.name in now:
        # How to log in may have changed during the run (an AWS host's first contact hands
        # it over from the image's user to the deploy user): finish as the inventory says.
        lock_host = now[lock_host.name]
    elif lock_host is not None and hosts:
        # The lock host was replaced during the run (`invoke replace` of the db host moves
        # the lock and the audit log to its successor): finish where the lock is now.
        lock_host = lock.lock_host(hosts) or lock_host
    where = lock_host or lock.lock_host(hosts)  # `up` from nothing: the host now there
    if where is None:
        return
    try:
        record_and_release(where, entry, holder if lock_host is not None else None)
    except lock.LockError as exc:
        say(
            f"warning: could not record the run or release the deploy lock of {env}: {exc}; "
            f"see `invoke history --env {env}` and `invoke unlock --env {env}`"
        )


def record_and_release(spec: HostSpec, entry: Entry, holder: lock.Holder | None) -> None:
    """Append ``entry``, then release ``holder``'s lock, in one command on the lock host:
    the next holder finds the history complete."""
    script = append_script(entry)
    if holder is not None:
        script += "\n" + lock.release_script(holder)
    outcome = run_one(spec, as_root(script), timeout=60)
    if not outcome.ok:
        raise lock.LockError(f"{spec.name}: {outcome.error or outcome.stderr.strip()}")


def _running(scope: Sequence[HostSpec]) -> dict[str, str]:
    from mahaops.fleet.status import releases_running

    return releases_running(scope)


def last_per_host(entries: Iterable[Entry]) -> dict[str, Entry]:
    """Each host's latest run that got to run (refused ones changed nothing)."""
    latest: dict[str, Entry] = {}
    for entry in entries:
        if entry.result.startswith("refused"):
            continue
        for host in entry.hosts:
            latest[host] = entry
    return latest
