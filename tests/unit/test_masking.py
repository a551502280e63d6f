"""Secrets handed out by the store never appear in what the tools print."""

from __future__ import annotations

import io
import json
import logging
import stat
from pathlib import Path

from mahaops import masking
from mahaops.secrets import LocalSecretStore, get_or_create


def test_secret_is_generated_once_and_kept_in_a_private_file(tmp_path: Path) -> None:
    store = LocalSecretStore("unit", path=tmp_path / "env" / "secrets.json")
    first = get_or_create(store, "postgresql_password_app")
    second = get_or_create(store, "postgresql_password_app")
    assert first == second and len(first) >= 24
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert json.loads(store.path.read_text())["postgresql_password_app"] == first


def test_stream_and_logs_mask_registered_secrets(tmp_path: Path) -> None:
    store = LocalSecretStore("unit", path=tmp_path / "secrets.json")
    value = get_or_create(store, "redis_password")
    sink = io.StringIO()
    stream = masking.MaskingStream(sink)
    stream.write(f"requirepass {value}\npartial {value[:3]}")
    stream.flush()
    assert value not in sink.getvalue() and masking.MASK in sink.getvalue()

    record = logging.LogRecord("pyinfra", logging.INFO, __file__, 1, "pw=%s", (value,), None)
    masking.MaskingFilter().filter(record)
    assert value not in record.getMessage()
