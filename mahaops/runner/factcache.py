"""Facts read in one round trip per host, the way a run last read them one by one.

pyinfra 3 reads every fact with its own command over SSH: 80-100 round trips per host
for a converged platform, which is most of a no-op run. This module remembers which
fact commands a run sent to each host (the commands only, never their answers) and, at
the start of the next run, sends them all to the host in a single shell script, run in
parallel there. pyinfra then asks for its facts as usual and gets the fresh answers
from memory.

What keeps it correct:

- Answers are read at the start of this run, as pyinfra's own planning would read them.
- Any command an operation runs on a host (or a file it uploads, or a Python callback)
  drops that host's answers before it runs: a fact asked after a change is read live.
- A command that failed in the batch is not answered from memory: pyinfra re-runs it
  and handles the error itself. Commands asked for the first time are read live.
- A command carrying a secret is never written to disk; it is simply read live.

The list lives in ``$MAHA_HOME/<env>/facts/<host>.json`` (0600). Deleting it is safe.
``MAHA_FACT_BATCH=0`` turns the batching off.
"""

from __future__ import annotations

import json
import logging
import os
import secrets as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from pyinfra.api import State
from pyinfra.api.command import StringCommand
from pyinfra.api.host import Host
from pyinfra.connectors.util import CommandOutput, OutputLine

from mahaops import masking, pyinfra_hooks

# A command unseen in this many runs of its role is forgotten (paths with a release id).
KEEP_RUNS = 5
# Fact commands run side by side on the host, this many at once.
PARALLEL = 16


@dataclass
class _HostCache:
    answers: dict[str, tuple[bool, CommandOutput]] = field(default_factory=dict)
    seen: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> entry on disk
    hits: int = 0
    misses: int = 0


logger = logging.getLogger(__name__)
_hosts: dict[str, _HostCache] = {}
_store: list[Path] = []  # the environment's facts directory, once installed
_role_of: list[Callable[[Host], str]] = []


def enabled() -> bool:
    return os.environ.get("MAHA_FACT_BATCH", "1") != "0"


def _key(command: Any, executor: dict[str, Any]) -> tuple[str, str] | None:
    """Key of a fact command and its raw text; None if it may not be remembered."""
    if isinstance(command, StringCommand):
        raw = command.get_raw_value()
        if raw != command.get_masked_value():
            return None
    elif isinstance(command, str):
        raw = command
    else:
        return None
    try:
        how = json.dumps(executor, sort_keys=True)
    except TypeError:  # stdin objects and the like: not replayable
        return None
    if masking.mask(raw) != raw or masking.mask(how) != how:
        return None
    return f"{how}\0{raw}", raw


def _cache(host: Host) -> _HostCache:
    return _hosts.setdefault(host.name, _HostCache())


def _drop(host: Host) -> None:
    cache = _hosts.get(host.name)
    if cache is not None:
        cache.answers.clear()


# -- what the hooks (mahaops.pyinfra_hooks) tell it ------------------------------------------


class _Listener:
    """Answers fact commands from the batch; forgets a host's answers when it may change."""

    def fact_command(
        self, host: Host, command: Any, kwargs: dict[str, Any], run: Callable[[], Any]
    ) -> Any:
        cache = _cache(host)
        executor = {k: v for k, v in kwargs.items() if k not in ("print_output", "print_input")}
        keyed = _key(command, executor)
        if keyed is None:
            return run()
        key, raw = keyed
        role = _role_of[0](host) if _role_of else ""
        cache.seen[key] = {"command": raw, "executor": executor, "role": role, "last": 0}
        if key in cache.answers:
            cache.hits += 1
            return cache.answers[key]
        cache.misses += 1
        return run()

    def host_changing(self, host: Host) -> None:
        _drop(host)


def install(env_dir: Path, role_of: Callable[[Host], str] | None = None) -> None:
    """Listen to pyinfra's commands (in this process); commands are remembered under
    ``env_dir/facts``.

    ``role_of(host)`` names the role asking for a fact, so a run of some roles reads
    (and ages) only what those roles asked for.
    """
    if not enabled() or _store:
        return
    pyinfra_hooks.install()
    _store.append(env_dir / "facts")
    if role_of is not None:
        _role_of.append(role_of)
    pyinfra_hooks.observe_host_commands(_Listener())


def _load(host_name: str, roles: set[str]) -> dict[str, dict[str, Any]]:
    """The remembered commands of a host; those of ``roles`` grow a run older."""
    path = _store[0] / f"{host_name}.json"
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    seen = {}
    for entry in entries if isinstance(entries, list) else []:
        try:
            role = str(entry.get("role", ""))
            seen[f"{json.dumps(entry['executor'], sort_keys=True)}\0{entry['command']}"] = {
                "command": str(entry["command"]),
                "executor": dict(entry["executor"]),
                "role": role,
                "last": int(entry.get("last", 0)) + (1 if role in roles else 0),
            }
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return seen


def _script(commands: list[str]) -> str:
    """One shell script running ``commands`` side by side (``PARALLEL`` at once).

    Prints, for each command in order, ``@@<n> <exit code>`` and then its output lines,
    each behind a ``|`` so no output can pass for a marker. One ``awk`` prints them all:
    a process per command would cost more than the commands.
    """
    tag = _random.token_hex(4)
    d = f"__maha_{tag}"
    lines = [f"{d}=$(mktemp -d) || exit 1"]
    for n, command in enumerate(commands):
        # A command that may ``exit`` gets a subshell of its own, so its code is still
        # written; the others save that fork. Paths are absolute: commands may ``cd``.
        inner = f"( {command}\n)" if "exit" in command else f"{{ {command}\n}}"
        lines.append(f'{{ {inner} </dev/null >"${d}/{n}" 2>/dev/null; echo $? >"${d}/{n}.rc"; }} &')
        if n % PARALLEL == PARALLEL - 1:
            lines.append("wait")
    lines.append("wait")
    lines.append(
        f'awk -v n={len(commands)} -v d="${d}" \'BEGIN {{ for (i = 0; i < n; i++) {{'
        ' f = d "/" i; rc = "-"; getline rc < (f ".rc"); close(f ".rc"); print "@@" i " " rc;'
        ' while ((getline line < f) > 0) print "|" line; close(f) } }\''
    )
    lines.append(f'rm -rf "${d}"')
    return "\n".join(lines)


def parse(lines: list[str]) -> dict[int, tuple[str, list[str]]]:
    """The batch's output: command number -> (exit code, output lines)."""
    answers: dict[int, tuple[str, list[str]]] = {}
    current: list[str] = []
    for line in lines:
        if line.startswith("|"):
            current.append(line[1:])
        elif line.startswith("@@"):
            number, _, code = line[2:].partition(" ")
            current = []
            answers[int(number)] = (code.strip(), current)
    return answers


def _prefetch_host(host: Host, roles: set[str]) -> None:
    cache = _cache(host)
    cache.seen = _load(host.name, roles)
    groups: dict[str, list[str]] = {}  # the same executor arguments: one batch
    for key, entry in cache.seen.items():
        if entry["role"] in roles or not entry["role"]:
            groups.setdefault(key.split("\0", 1)[0], []).append(key)
    for keys in groups.values():
        executor = cache.seen[keys[0]]["executor"]
        script = _script([cache.seen[key]["command"] for key in keys])
        try:  # unobserved: the batch itself changes nothing
            ok, output = pyinfra_hooks.run_unobserved(host, StringCommand(script), **executor)
        except Exception as exc:  # the facts are then read one by one, as pyinfra would
            logger.debug("fact batch on %s failed: %s", host.name, exc)
            continue
        if not ok:
            continue
        for number, (code, lines) in parse(output.stdout_lines).items():
            if code == "0" and number < len(keys):
                cache.answers[keys[number]] = (
                    True,
                    CommandOutput([OutputLine("stdout", line) for line in lines]),
                )


def prefetch(state: State, roles: set[str]) -> None:
    """Read the remembered fact commands of ``roles`` on every connected host, side by side."""
    if not _store:
        return
    hosts = [
        h
        for h in state.inventory.iter_activated_hosts()
        if h.connected and (not state.limit_hosts or h in state.limit_hosts)
    ]
    gevent.joinall([state.pool.spawn(_prefetch_host, h, roles) for h in hosts], raise_error=True)


def save() -> None:
    """Remember the fact commands each host was asked (for the next run)."""
    if not _store:
        return
    directory = _store[0]
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, cache in _hosts.items():
        keep = [e for e in cache.seen.values() if e.get("last", 0) < KEEP_RUNS]
        if not keep:
            continue
        path = directory / f"{name}.json"
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(keep, out)
        tmp.replace(path)


def stats() -> dict[str, tuple[int, int]]:
    """Per host: facts answered from the batch, facts read live."""
    return {name: (c.hits, c.misses) for name, c in _hosts.items()}
