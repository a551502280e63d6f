"""``mahaops.release.fleet()`` reads each host's releases under the app root its settings
give (issue 14: it read /srv/maha whatever ``app_root`` said)."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from mahaops.hosts import HostSpec
from mahaops.release import rollout

HOSTS = [
    HostSpec("app-1", ("local", "app_servers"), {"app_root": "/opt/maha"}),
    HostSpec("app-2", ("local", "app_servers"), {"app_root": "/opt/maha"}),
    HostSpec("worker-1", ("local", "workers"), {}),  # the default root
    HostSpec("db-1", ("local", "db_servers"), {}),
]


def test_each_host_is_read_under_its_own_app_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mahaops.hosts.discover", lambda kind, env: HOSTS)
    monkeypatch.setattr(rollout, "_members", lambda env, group: [
        (h.name, None) for h in HOSTS if group in h.groups
    ])  # fmt: skip
    asked: list[list[str]] = []

    def run(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        asked.append(cmd)
        root = cmd[-1].removeprefix("root=")
        names = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--limit"]
        fact = {"current": f"{root}-release", "releases": [f"{root}-release"]}
        answer = {"fact": {n: fact for n in names} | {"db-1": None}}
        return subprocess.CompletedProcess(cmd, 0, json.dumps(answer), "")

    monkeypatch.setattr(rollout.subprocess, "run", run)

    hosts = {h.name: h.current for h in rollout.fleet("t-env")}

    assert hosts == {
        "app-1": "/opt/maha-release",
        "app-2": "/opt/maha-release",
        "worker-1": "/srv/maha-release",
    }
    assert sorted(cmd[-1] for cmd in asked) == ["root=/opt/maha", "root=/srv/maha"]
