"""What `invoke up` tells the operator about HTTPS: the address, and the CA certificate to
trust (never the CA's key), or how to get the port published on an older lb host."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from mahaops import tls
from mahaops.local.hosts import LocalHost
from mahaops.secrets import store_for
from mahaops.tasks.platform import _say_https


def _lb(ports: dict[int, int]) -> LocalHost:
    return LocalHost("lb-1", "lb", "u1", "maha-u1-lb-1", "10.9.0.7", 2222, ports)


def _said(hosts: list[LocalHost]) -> str:
    out = io.StringIO()
    _say_https(Console(file=out, width=400), "u1", hosts)
    return " ".join(out.getvalue().split())


def test_up_names_the_https_address_and_the_ca_file_to_trust(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAHA_HOME", str(tmp_path))
    said = _said([_lb({80: 32001, 443: 32002})])
    ca = tmp_path / "u1" / "ca.crt"
    assert "https://localhost:32002/" in said and f"--cacert {ca}" in said
    cert, key = tls.ca(store_for("local", "u1"))
    assert ca.read_text() == cert
    assert not any(line in said for line in key.splitlines() if not line.startswith("-----"))


def test_an_lb_host_without_the_https_port_gets_the_way_to_publish_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAHA_HOME", str(tmp_path))
    said = _said([_lb({80: 32001})])
    assert "No HTTPS port published" in said and "invoke up --env u1` re-makes it" in said
    assert not (tmp_path / "u1" / "ca.crt").exists()
