"""Export every role deploy as a runnable Ansible project (``invoke export-ansible``).

The deploys stay the source of truth: the exporter runs them under pyinfra against the
environment's hosts, records each operation they ask for (without running it), and maps
each to a native Ansible module (``modules.py``); templates are shared verbatim.
``project.py`` lays out the project, ``record.py`` does the recording.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mahaops import PROJECT_ROOT
from mahaops.runner import selection_args


@dataclass
class ExportResult:
    returncode: int
    output: str = ""
    summary: dict[str, Any] = field(default_factory=dict)  # roles -> tasks/handlers/templates

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def export_command(
    env: str,
    out: Path,
    limit: Sequence[str] = (),
    roles: Sequence[str] = (),
    group_data: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    return [
        sys.executable, "-m", "mahaops.ansible_export", "--env", env, "--out", str(out),
        *selection_args(roles, limit, overrides, group_data),
    ]  # fmt: skip


def export(
    env: str,
    out: Path,
    limit: Sequence[str] = (),
    roles: Sequence[str] = (),
    group_data: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    capture: bool = True,
) -> ExportResult:
    """Write the Ansible project of ``env`` into ``out``: every deploy that exists (or
    ``roles``), for every host (or ``limit``)."""
    with tempfile.TemporaryDirectory(prefix="maha-export-") as tmp:
        summary_file = Path(tmp) / "summary.json"
        cmd = export_command(env, out, limit, roles, group_data, overrides)
        cmd += ["--json", str(summary_file)]
        environ = {**os.environ, "PYTHONUNBUFFERED": "1"}
        environ.setdefault("COLUMNS", "160")
        proc = subprocess.run(
            cmd, cwd=PROJECT_ROOT, env=environ, capture_output=capture, text=True, check=False
        )
        result = ExportResult(proc.returncode, (proc.stdout or "") + (proc.stderr or ""))
        if summary_file.exists():
            result.summary = json.loads(summary_file.read_text())
        return result
