"""Running an exported project with ``ansible-playbook`` and reading its PLAY RECAP."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+"
    r"unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)",
    re.MULTILINE,
)


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)  # host -> ok/changed/...

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def changed_tasks(self) -> dict[str, list[str]]:
        return changed_tasks(self.output)

    @property
    def changed(self) -> int:
        return sum(counts["changed"] for counts in self.recap.values())


def recap(output: str) -> dict[str, dict[str, int]]:
    """Per-host counts from the PLAY RECAP at the end of ``ansible-playbook`` output."""
    tail = output.rsplit("PLAY RECAP", 1)[-1] if "PLAY RECAP" in output else ""
    return {
        m["host"]: {k: int(m[k]) for k in ("ok", "changed", "unreachable", "failed")}
        for m in _RECAP.finditer(tail)
    }


_HEADER = re.compile(r"^(?:TASK|RUNNING HANDLER) \[(?:[^:\]]+ : )?(?P<name>.*)\] \**$")
_CHANGED = re.compile(r"^changed: \[(?P<host>[^\]]+)\]")


def changed_tasks(output: str) -> dict[str, list[str]]:
    """Per host, the names of the tasks and handlers that reported a change."""
    result: dict[str, list[str]] = {}
    task = ""
    for line in output.splitlines():
        header = _HEADER.match(line)
        if header:
            task = header["name"]
            continue
        changed = _CHANGED.match(line)
        if changed:
            result.setdefault(changed["host"], []).append(task)
    return result


def tool(name: str) -> str:
    """An Ansible command from this interpreter's environment (the project's venv)."""
    return str(Path(sys.executable).parent / name)


def ansible_env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "PY_COLORS": "0",
    }


def run_playbook(
    project: Path,
    limit: Sequence[str] = (),
    extra: Sequence[str] = (),
    playbook: str = "site.yml",
) -> PlaybookRun:
    """``ansible-playbook site.yml`` (or ``playbook``) in ``project`` (its ansible.cfg and
    inventory)."""
    cmd = [tool("ansible-playbook"), playbook, *extra]
    if limit:
        cmd += ["--limit", ",".join(limit)]
    proc = subprocess.run(
        cmd, cwd=project, env=ansible_env(), capture_output=True, text=True, check=False
    )
    output = proc.stdout + proc.stderr
    return PlaybookRun(proc.returncode, output, recap(proc.stdout))


def check(project: Path, what: str, playbook: str = "site.yml") -> subprocess.CompletedProcess[str]:
    """``syntax`` (ansible-playbook --syntax-check of ``playbook``) or ``lint`` (ansible-lint,
    production profile, offline: Galaxy is never asked) over ``project``."""
    if what == "syntax":
        cmd = [tool("ansible-playbook"), "--syntax-check", playbook]
    elif what == "lint":
        cmd = [tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"]
    else:
        raise ValueError(f"unknown check {what!r}")
    return subprocess.run(
        cmd, cwd=project, env=ansible_env(), capture_output=True, text=True, check=False
    )
