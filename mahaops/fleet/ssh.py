"""Fabric connections to inventory hosts, and one command on many hosts at once."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mahaops.hosts import HostSpec
from mahaops.roles import ROLE_BY_GROUP


def connection(spec: HostSpec, connect_timeout: int = 15) -> Any:
    """A Fabric ``Connection`` to ``spec`` as its inventory describes it (user, port, key)."""
    from fabric import Config, Connection

    data = spec.data
    config = Config(
        overrides={"load_ssh_configs": bool(data.get("ssh_config_file"))},
        runtime_ssh_path=data.get("ssh_config_file"),
    )
    return Connection(
        host=str(data.get("ssh_hostname", spec.name)),
        user=data.get("ssh_user"),
        port=int(data.get("ssh_port", 22)),
        connect_timeout=connect_timeout,
        connect_kwargs={"key_filename": data["ssh_key"]} if data.get("ssh_key") else {},
        config=config,
    )


def as_root(script: str) -> str:
    """``script`` run by root through the deploy user's passwordless sudo."""
    return f"sudo -n sh -c {shlex.quote(script)}"


def role_of(spec: HostSpec) -> str:
    """The host's role name (``base`` for a host in no role group)."""
    for group in spec.groups:
        if group in ROLE_BY_GROUP:
            return ROLE_BY_GROUP[group].name
    return "base"


def environment_hosts(env: str) -> list[HostSpec]:
    """The running hosts of ``env`` (local or AWS), sorted by name."""
    from mahaops.hosts import discover, kind_of
    from mahaops.settings import GroupData

    return sorted(discover(kind_of(env, GroupData().files), env), key=lambda h: h.name)


def select(hosts: Sequence[HostSpec], role: str = "", host: str = "") -> list[HostSpec]:
    """Hosts of one role (``app``) or one named host; every host when neither is given."""
    if role and host:
        raise ValueError("give --role or --host, not both")
    if host:
        chosen = [h for h in hosts if h.name == host]
        if not chosen:
            raise ValueError(f"no host {host!r} (hosts: {', '.join(h.name for h in hosts)})")
        return chosen
    if role:
        chosen = [h for h in hosts if role_of(h) == role]
        if not chosen:
            raise ValueError(f"no host with role {role!r}")
        return chosen
    return list(hosts)


@dataclass
class Outcome:
    """What one host answered: exit status (None when it was never reached), output, error."""

    host: str
    exited: int | None
    stdout: str = ""
    stderr: str = ""
    error: str = ""  # why the command did not run (connection refused, timeout...)

    @property
    def ok(self) -> bool:
        return self.exited == 0


def run_parallel(
    hosts: Sequence[HostSpec], command: str, timeout: float | None = None
) -> dict[str, Outcome]:
    """``command`` on every host side by side (Fabric's ``ThreadingGroup``); never raises for
    a host's failure: each host's outcome says what happened, keyed by host name."""
    from fabric import ThreadingGroup
    from fabric.exceptions import GroupException

    if not hosts:
        return {}
    connections = [connection(h) for h in hosts]
    name_of = {id(c): h.name for c, h in zip(connections, hosts, strict=True)}
    group = ThreadingGroup.from_connections(connections)
    try:
        results: Any = group.run(command, hide=True, warn=True, in_stream=False, timeout=timeout)
    except GroupException as exc:
        results = exc.result
    finally:
        group.close()
    outcomes: dict[str, Outcome] = {}
    for conn, result in results.items():
        name = name_of[id(conn)]
        if isinstance(result, BaseException):
            outcomes[name] = Outcome(name, None, error=_reason(result))
        else:
            outcomes[name] = Outcome(name, result.exited, result.stdout, result.stderr)
    return {h.name: outcomes[h.name] for h in hosts}


def run_one(spec: HostSpec, command: str, timeout: float | None = None) -> Outcome:
    """``command`` on one host, with the same outcome shape as ``run_parallel``."""
    return run_parallel([spec], command, timeout=timeout)[spec.name]


def _reason(exc: BaseException) -> str:
    from invoke.exceptions import CommandTimedOut

    if isinstance(exc, CommandTimedOut):
        return f"timed out after {exc.timeout:.0f} s"
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def register_secrets(env: str) -> None:
    """Mask every secret of ``env`` in what hosts answer (read once, never printed)."""
    import json

    from mahaops.hosts import kind_of
    from mahaops.secrets import LocalSecretStore, store_for
    from mahaops.settings import GroupData

    store = store_for(kind_of(env, GroupData().files), env)
    if isinstance(store, LocalSecretStore):
        names = list(json.loads(store.path.read_text() or "{}")) if store.path.exists() else []
    else:
        names = [full.rsplit("/", 1)[-1] for full in store.names()]  # type: ignore[attr-defined]
    for name in names:
        store.get(name)  # registers the value with mahaops.masking
