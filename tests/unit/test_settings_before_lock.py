"""Bad settings stop a mutating task before any host is touched: no deploy lock taken, no
audit line written, and the message names the file (or ``--set``) and the key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from invoke.exceptions import Exit

from mahaops.fleet import audit
from mahaops.settings import DEFAULT_GROUP_DATA
from tests.unit.test_fleet import FakeLockHost


def guarded_deploy(ran: list[str]) -> Any:
    @audit.guarded("deploy")
    def deploy(
        c: object, env: str = "local", dry: bool = False, set: list[str] | None = None
    ) -> None:
        ran.append(env)

    return deploy


def test_a_bad_set_value_is_refused_before_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, ran = FakeLockHost(monkeypatch), list[str]()
    with pytest.raises(Exit, match=r"--set: base_ssh_port") as refused:
        guarded_deploy(ran)(None, env="e", set=['base_ssh_port="22"'])
    assert refused.value.code == 2
    assert ran == [] and fake.held_by is None and fake.entries == []


def test_a_bad_group_data_file_is_refused_before_the_lock(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    group_data = tmp_path / "group_data"
    group_data.mkdir()
    for path in DEFAULT_GROUP_DATA.glob("*.py"):
        (group_data / path.name).write_text(path.read_text())
    with (group_data / "db_servers.py").open("a") as f:
        f.write("\npostgresql_port = 'five'\n")
    monkeypatch.setattr(audit, "DEFAULT_GROUP_DATA", group_data)
    fake, ran = FakeLockHost(monkeypatch), list[str]()
    with pytest.raises(Exit, match=r"db_servers\.py: postgresql_port"):
        guarded_deploy(ran)(None, env="e")
    assert ran == [] and fake.held_by is None and fake.entries == []


def test_good_settings_go_on_to_take_the_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    fake, ran = FakeLockHost(monkeypatch), list[str]()
    guarded_deploy(ran)(None, env="e", set=["base_ssh_port=2222"])
    assert ran == ["e"] and fake.released == 1 and fake.entries[-1].result == "ok"
