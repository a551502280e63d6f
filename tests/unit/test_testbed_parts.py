"""Pieces of the local test bed that need no Docker: mirror discovery and firewall rules."""

from __future__ import annotations

from pathlib import Path

from mahaops import firewall
from mahaops.local.image import find_mirror, sources_list


def test_mirror_is_read_from_deb822_sources(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MAHA_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\nComponents: main\n"
    )
    mirror = find_mirror(tmp_path)
    assert mirror.debian == "http://mirror.example/debian"
    assert mirror.security == "http://mirror.example/debian-security"
    assert "deb http://mirror.example/debian bookworm main" in sources_list(mirror)


def test_mirror_is_read_from_one_line_sources(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("MAHA_DEBIAN_MIRROR", raising=False)
    (tmp_path / "sources.list").write_text(
        "deb [arch=amd64] http://ftp.example.org/debian/ bookworm main contrib\n"
        "deb https://packages.other.example/apt stable main\n"
    )
    assert find_mirror(tmp_path).debian == "http://ftp.example.org/debian"


def test_db_port_is_open_only_to_app_servers_and_workers() -> None:
    openings = firewall.declared(["db"], {"postgresql_port": 5432})
    rules = firewall.rules(
        openings,
        ["203.0.113.0/24"],
        {"app_servers": ["10.0.0.5", "10.0.0.6"], "workers": ["10.0.0.9"]},
    )
    db = [r for r in rules if r.port == 5432]
    assert len(db) == 1
    assert db[0].addresses == ("10.0.0.5/32", "10.0.0.6/32", "10.0.0.9/32")
    ssh = [r for r in rules if r.port == 22]
    assert ssh[0].addresses == ("203.0.113.0/24",)


def test_a_role_port_with_no_clients_is_opened_to_nobody() -> None:
    rules = firewall.rules(firewall.declared(["cache"], {}), ["0.0.0.0/0", "::/0"], {})
    assert [r.port for r in rules] == [22]
