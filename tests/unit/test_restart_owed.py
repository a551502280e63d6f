"""Restarts owed for a configuration (operations.services): planned when an input changes
or a marker says an earlier run never finished the restart; the marker outlives a failed
restart and is cleared by a successful one."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.operation import OperationMeta

from operations import services
from operations.services import PENDING_RESTARTS, restart_command, restart_owed


class _Host:
    """pyinfra's context host, answering the RestartsOwed fact."""

    def __init__(self, owed: set[str]) -> None:
        self.owed = owed
        self.noops: list[str] = []

    def get_fact(self, fact: Any, **_kwargs: Any) -> Any:
        assert fact is services.RestartsOwed
        return self.owed

    def noop(self, message: str) -> None:
        self.noops.append(message)


def planned(would_change: bool) -> OperationMeta:
    return OperationMeta("conf", is_change=would_change)


def commands(monkeypatch: pytest.MonkeyPatch, owed: set[str], conf_changes: bool) -> list[str]:
    monkeypatch.setattr(services, "host", _Host(owed))
    inner = restart_owed._inner
    return [c.get_raw_value() for c in inner(service="redis-server", when=[planned(conf_changes)])]


def test_nothing_changed_and_nothing_owed_plans_no_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    assert commands(monkeypatch, set(), conf_changes=False) == []


def test_a_changed_input_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert commands(monkeypatch, set(), conf_changes=True) == [restart_command("redis-server")]


def test_a_restart_left_owed_by_an_earlier_run_restarts_with_no_input_changing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    owed = {"redis-server"}
    assert commands(monkeypatch, owed, conf_changes=False) == [restart_command("redis-server")]
    assert commands(monkeypatch, {"chrony"}, conf_changes=False) == []  # another service's


@pytest.mark.parametrize(("restart_ok", "marker_left"), [(False, True), (True, False)])
def test_the_marker_outlives_a_failed_restart_and_goes_with_a_successful_one(
    tmp_path: Path, restart_ok: bool, marker_left: bool
) -> None:
    """The operation's own shell, its directory moved under tmp_path, a stand-in
    systemctl first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    fail = "" if restart_ok else 'test "$1" = restart && exit 1\n'
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n{fail}exit 0\n')
    systemctl.chmod(0o755)
    pending = tmp_path / "pending-restart"
    command = restart_command("redis-server", daemon_reload=True).replace(
        PENDING_RESTARTS, str(pending)
    )
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", command], env=env, check=False)
    assert (result.returncode == 0) is restart_ok
    assert (pending / "redis-server").exists() is marker_left
    assert (tmp_path / "calls").read_text().split() == ["daemon-reload", "restart", "redis-server"]
