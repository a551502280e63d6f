"""The secrets store: generated once, reused afterwards, never printed.

Locally, secrets live in a 0600 JSON file outside the repository
(``$MAHA_HOME/<env>/secrets.json``, MAHA_HOME defaulting to
``~/.local/share/maha``). On AWS they are SSM SecureString parameters under
``/maha/<env>/`` (``mahaops.aws.secrets``). Every value read or made is
registered with ``mahaops.masking`` so no output shows it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import secrets as _random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from mahaops import masking

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


def maha_home() -> Path:
    """Where the operator's per-environment state lives (keys, secrets); never in the repo."""
    return Path(os.environ.get("MAHA_HOME") or Path.home() / ".local" / "share" / "maha")


def env_dir(env: str) -> Path:
    path = maha_home() / env
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def token(nbytes: int = 24) -> str:
    """A URL-safe random secret (default 192 bits)."""
    return _random.token_urlsafe(nbytes)


class SecretStore(Protocol):
    env: str

    def get(self, name: str) -> str | None: ...

    def put(self, name: str, value: str) -> None: ...


class LocalSecretStore:
    """Secrets of one environment in a 0600 JSON file, locked while written."""

    def __init__(self, env: str, path: Path | None = None) -> None:
        self.env = env
        self.path = path or env_dir(env) / "secrets.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, str]]:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self._read()
            before = dict(data)
            yield data
            if data != before:
                tmp = self.path.with_suffix(".tmp")
                fd_tmp = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
                with os.fdopen(fd_tmp, "w") as handle:
                    json.dump(data, handle, indent=2, sort_keys=True)
                os.replace(tmp, self.path)
        finally:
            os.close(fd)

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        os.chmod(self.path, 0o600)
        return dict(json.loads(self.path.read_text() or "{}"))

    def get(self, name: str) -> str | None:
        value = self._read().get(name)
        return masking.register(value) if value else None

    def put(self, name: str, value: str) -> None:
        with self._locked() as data:
            data[name] = value
        masking.register(value)

    def get_or_create(self, name: str, generate: Callable[[], str]) -> str:
        with self._locked() as data:
            if name not in data:
                data[name] = generate()
            value = data[name]
        return masking.register(value)


def get_or_create(store: SecretStore, name: str, generate: Callable[[], str] = token) -> str:
    """The secret ``name``: read from ``store``, or generated and stored on first use."""
    if not _NAME.match(name):
        raise ValueError(f"bad secret name {name!r}: lower-case letters, digits and _")
    if isinstance(store, LocalSecretStore):
        return store.get_or_create(name, generate)
    value = store.get(name)
    if value is None:
        value = generate()
        store.put(name, value)
    return masking.register(value)


# One store per deploy process; a plain global, since pyinfra runs deploys in greenlets
# that do not inherit context variables.
_current: list[SecretStore] = []


@contextlib.contextmanager
def using(store: SecretStore) -> Iterator[SecretStore]:
    """Make ``store`` the one deploys read from while the block runs."""
    _current.append(store)
    try:
        yield store
    finally:
        _current.pop()


def current() -> SecretStore:
    """For deploys: the store of the environment being deployed (certificates renew in it)."""
    if not _current:
        raise RuntimeError("no secrets store in use: run deploys through mahaops.runner")
    return _current[-1]


def secret(name: str, generate: Callable[[], str] = token) -> str:
    """For deploys: the current environment's secret ``name``, generated on first use."""
    if not _current:
        raise RuntimeError("no secrets store in use: run deploys through mahaops.runner")
    return get_or_create(_current[-1], name, generate)


def store_for(kind: str, env: str) -> SecretStore:
    """The store of an environment: a local file, or SSM for AWS environments."""
    if kind == "aws":
        from mahaops.aws.secrets import SsmSecretStore

        return SsmSecretStore(env)
    return LocalSecretStore(env)
