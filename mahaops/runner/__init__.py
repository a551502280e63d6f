"""The deploy runner: role deploys through pyinfra, phase by phase, with a report.

This module is the caller's side (invoke tasks, tests, benchmarks): ``run_deploy``
starts ``python -m mahaops.runner`` in a process of its own, because pyinfra's
parallelism needs gevent's monkey patching first thing, which must not leak into the
caller. The process side:

- ``__main__``: the entry point, and the only place with import-time side effects
  (gevent's patching, masked stdout and stderr);
- ``cli``: arguments and the run from start to end;
- ``state``: hosts, settings and limits made into pyinfra's state;
- ``engine``: planning, the release resolved once, phases executed host by host;
- ``report``: progress lines, outcomes, tables and what failed;
- ``factcache``: facts read in one round trip per host.

pyinfra's internals are reached only through ``mahaops.pyinfra_hooks``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mahaops import PROJECT_ROOT
from mahaops.hosts import HostSpec


@dataclass(frozen=True)
class OpOutcome:
    host: str
    name: str
    status: str  # changed | unchanged | failed | skipped
    operation: str  # e.g. files.template
    idempotent: bool  # as pyinfra declares the operation


@dataclass
class DeployResult:
    returncode: int
    operations: list[OpOutcome] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    output: str = ""  # everything printed (stdout then stderr), already masked
    facts: dict[str, tuple[int, int]] = field(default_factory=dict)  # host -> (batched, live)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def with_status(self, status: str) -> list[OpOutcome]:
        return [op for op in self.operations if op.status == status]

    @property
    def changed(self) -> list[OpOutcome]:
        return self.with_status("changed")

    @property
    def failed(self) -> list[OpOutcome]:
        return [op for op in self.operations if op.status in ("failed", "skipped")]

    def named(self, text: str, host: str | None = None) -> list[OpOutcome]:
        return [
            op for op in self.operations if text in op.name and (host is None or op.host == host)
        ]


def selection_args(
    roles: Sequence[str] = (),
    limit: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    group_data: Path | None = None,
) -> list[str]:
    """The command-line options that choose roles, hosts and settings, shared by the
    runner's and the exporter's command lines."""
    args: list[str] = []
    for role in roles:
        args += ["--role", role]
    for name in limit:
        args += ["--limit", name]
    for key, value in (overrides or {}).items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    if group_data:
        args += ["--group-data", str(group_data)]
    return args


def deploy_command(
    env: str,
    roles: Sequence[str] = (),
    limit: Sequence[str] = (),
    dry: bool = False,
    overrides: Mapping[str, Any] | None = None,
    group_data: Path | None = None,
    quiet: bool = False,
    verbose: bool = False,
) -> list[str]:
    cmd = [
        sys.executable, "-m", "mahaops.runner", "--env", env,
        *selection_args(roles, limit, overrides, group_data),
    ]  # fmt: skip
    if dry:
        cmd.append("--dry")
    if quiet:
        cmd.append("--quiet")
    if verbose:
        cmd.append("--verbose")
    return cmd


def run_deploy(
    env: str,
    roles: Sequence[str] = (),
    limit: Sequence[str] = (),
    dry: bool = False,
    overrides: Mapping[str, Any] | None = None,
    group_data: Path | None = None,
    hosts: Iterable[HostSpec] | None = None,
    capture: bool = True,
    quiet: bool = False,
    extra_env: Mapping[str, str] | None = None,
    verbose: bool = False,
) -> DeployResult:
    """Run the deploys of ``roles`` (all by default) on ``env`` and report each operation."""
    cmd = deploy_command(env, roles, limit, dry, overrides, group_data, quiet, verbose)
    with tempfile.TemporaryDirectory(prefix="maha-run-") as tmp:
        out = Path(tmp) / "result.json"
        cmd += ["--json", str(out)]
        if hosts is not None:
            hosts_file = Path(tmp) / "hosts.json"
            hosts_file.write_text(
                json.dumps([{"name": h.name, "groups": h.groups, "data": h.data} for h in hosts])
            )
            cmd += ["--hosts-json", str(hosts_file)]
        environ = {**os.environ, **(extra_env or {}), "PYTHONUNBUFFERED": "1"}
        environ.setdefault("COLUMNS", "160")
        proc = subprocess.run(
            cmd, cwd=PROJECT_ROOT, env=environ, capture_output=capture, text=True, check=False
        )
        result = DeployResult(returncode=proc.returncode)
        if capture:
            result.output = (proc.stdout or "") + (proc.stderr or "")
        if out.exists():
            data = json.loads(out.read_text())
            result.operations = [OpOutcome(**op) for op in data["operations"]]
            result.unreachable = list(data["unreachable"])
            result.facts = {h: (int(b), int(v)) for h, (b, v) in data.get("facts", {}).items()}
        return result
