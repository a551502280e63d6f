"""Reloads owed for a configuration (nginx, HAProxy) are remembered like restarts (issue
14): a configuration written by a run that died, or whose reload failed, is loaded by the
next run; the marker is the service's own (``<service>.reload``), cleared by a good reload;
the Ansible export reloads from the same marker."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api.operation import OperationMeta

from mahaops.ansible_export.model import Call, Host
from mahaops.ansible_export.project import build_role, layout_settings
from mahaops.roles import BASE
from mahaops.settings import GroupData
from operations import services
from operations.services import PENDING_RESTARTS, restart_command, restart_owed


class _Host:
    def __init__(self, owed: set[str]) -> None:
        self.owed = owed

    def get_fact(self, fact: Any, **_kwargs: Any) -> Any:
        assert fact is services.RestartsOwed
        return self.owed

    def noop(self, message: str) -> None:
        pass


def planned(monkeypatch: pytest.MonkeyPatch, owed: set[str], conf_changes: bool) -> list[str]:
    monkeypatch.setattr(services, "host", _Host(owed))
    ops = restart_owed._inner(
        service="nginx", when=[OperationMeta("conf", is_change=conf_changes)], reload=True
    )
    return [c.get_raw_value() for c in ops]


def test_a_reload_is_planned_when_its_config_changed_or_it_is_still_owed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reload = restart_command("nginx", reload=True)
    assert "systemctl reload nginx" in reload and "nginx.reload" in reload
    assert planned(monkeypatch, set(), conf_changes=False) == []
    assert planned(monkeypatch, set(), conf_changes=True) == [reload]
    assert planned(monkeypatch, {"nginx.reload"}, conf_changes=False) == [reload]
    assert planned(monkeypatch, {"nginx"}, conf_changes=False) == []  # a restart's marker


@pytest.mark.parametrize(("reload_ok", "marker_left"), [(False, True), (True, False)])
def test_the_marker_outlives_a_failed_reload_and_goes_with_a_good_one(
    tmp_path: Path, reload_ok: bool, marker_left: bool
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    fail = "" if reload_ok else 'test "$1" = reload && exit 1\n'
    systemctl.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/calls\n{fail}exit 0\n')
    systemctl.chmod(0o755)
    pending = tmp_path / "pending"
    command = restart_command("nginx", reload=True).replace(PENDING_RESTARTS, str(pending))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", command], env=env, check=False)
    assert (result.returncode == 0) is reload_ok
    assert (pending / "nginx.reload").exists() is marker_left
    assert (tmp_path / "calls").read_text().split() == ["reload", "nginx"]


def test_the_export_reloads_from_the_marker() -> None:
    hosts = {"base-1": Host("base-1", ("local",), {"ansible_host": "127.0.0.1"}, {})}

    def call(operation: str, name: str, op_hash: str, **kw: Any) -> Call:
        triggers = tuple(kw.pop("triggers", ()))
        return Call(
            "base-1", "base", op_hash, operation, name, "deploys/x.py:1", kw, {}, {}, (), triggers
        )

    conf = call("files.file", "nginx config", "conf", path="/etc/nginx/x", present=False)
    reload = call(
        "operations.services.restart_owed", "Reload nginx", "reload1", service="nginx",
        when=[], daemon_reload=False, reload=True, triggers=["conf"],
    )  # fmt: skip
    after = call("files.file", "Next", "next", path="/etc/next", present=False)
    out = build_role(
        "base", [conf, reload, after], hosts, layout_settings(GroupData(), [BASE]), {}, {}
    )
    assert out.errors == []
    marker = f"{PENDING_RESTARTS}/nginx.reload"
    assert any(t.get("ansible.builtin.stat") == {"path": marker} for t in out.tasks)
    record, do, clear = out.handlers
    assert marker in record["ansible.builtin.shell"]["cmd"]
    assert do["ansible.builtin.systemd_service"] == {"name": "nginx", "state": "reloaded"}
    assert clear["ansible.builtin.file"] == {"path": marker, "state": "absent"}
