"""Secrets never reach a screen: every printed line passes through ``mask``.

Each secret the store hands out is registered here; the deploy runner wraps
stdout, stderr and pyinfra's logger so a registered value is replaced by
``********`` wherever it would appear (diffs, command echoes, errors).
"""

from __future__ import annotations

import hashlib
import io
import logging
from typing import TextIO

MASK = "********"
_secrets: set[str] = set()


def register(value: str) -> str:
    """Mask ``value`` from now on; returns it for convenience."""
    if value and len(value) >= 6:  # very short values would mask ordinary words
        _secrets.add(value)
    return value


class SecretDigest(str):
    """A secret's hex digest, as a host's configuration stores it (Redis ACL passwords):
    secret too (it logs in wherever the server compares digests), so it is masked like the
    secret, and it names its secret and algorithm so the Ansible export computes it from
    the secret's lookup instead of writing it."""

    secret: str
    algorithm: str


def digest(name: str, value: str, algorithm: str = "sha256") -> SecretDigest:
    """The masked hex digest of the secret ``name`` (whose value is ``value``).

    **Example:** ``"user default on #" + digest("redis_password", secret("redis_password"))``
    """
    result = SecretDigest(hashlib.new(algorithm, value.encode()).hexdigest())
    result.secret, result.algorithm = name, algorithm
    register(result)
    return result


def mask(text: str) -> str:
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class MaskingStream(io.TextIOBase):
    """A text stream that masks secrets line by line before writing through."""

    def __init__(self, inner: TextIO) -> None:
        self._inner = inner
        self._buffer = ""

    def write(self, text: str) -> int:
        self._buffer += text
        if "\n" in self._buffer or "\r" in self._buffer:
            cut = max(self._buffer.rfind("\n"), self._buffer.rfind("\r")) + 1
            self._inner.write(mask(self._buffer[:cut]))
            self._buffer = self._buffer[cut:]
        return len(text)

    def flush(self) -> None:
        if self._buffer:
            self._inner.write(mask(self._buffer))
            self._buffer = ""
        self._inner.flush()

    def isatty(self) -> bool:
        return self._inner.isatty()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._inner, "encoding", "utf-8")

    def fileno(self) -> int:
        return self._inner.fileno()


class MaskingFilter(logging.Filter):
    """Masks secrets in log records (message and arguments) before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _secrets:
            record.msg = mask(record.getMessage())
            record.args = None
        return True
