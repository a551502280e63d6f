"""An install first finishes what a killed dpkg or apt left (operations/apt.py): ``dpkg
--configure -a`` and then ``apt-get -f install`` run when, and only when, dpkg's journal
of status changes (/var/lib/dpkg/updates) is not empty or ``dpkg --audit`` lists packages
left half done; run here with a stand-in dpkg and apt-get."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from operations.apt import bounded

REPAIR = [
    "dpkg --force-confdef --force-confold --configure -a",
    "apt-get -f install -y -q --no-install-recommends -o Dpkg::Options::=--force-confdef"
    " -o Dpkg::Options::=--force-confold",
]


@pytest.mark.parametrize("left", ["journal", "unconfigured", "nothing"])
def test_dpkg_and_apt_are_finished_before_the_install_only_when_they_were_interrupted(
    tmp_path: Path, left: str
) -> None:
    updates = tmp_path / "updates"
    updates.mkdir()
    if left == "journal":  # dpkg killed: its journal of status changes not emptied
        (updates / "0001").write_text("Package: half-done\n")
    # apt killed between two dpkg runs: nodejs unpacked, the library it needs never was.
    audit = "nodejs: unpacked, not configured" if left == "unconfigured" else ""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "dpkg").write_text(
        f'#!/bin/sh\nif [ "$1" = --audit ]; then printf %s "{audit}"; exit 0; fi\n'
        f'echo "dpkg $*" >> {calls}\n'
    )
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "apt-get $*" >> {calls}\n')
    for tool in ("dpkg", "apt-get"):
        (bin_dir / tool).chmod(0o755)
    command = bounded(f"echo install >> {calls}", timeout=30, repair=True).get_raw_value()
    command = command.replace("/var/lib/dpkg/updates", str(updates))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    repaired = left != "nothing"
    assert calls.read_text().splitlines() == [*(REPAIR if repaired else []), "install"]
    assert ("dpkg was interrupted" in result.stderr) is repaired


def test_only_installs_repair_by_default() -> None:
    assert "dpkg" not in bounded("apt-get update", timeout=30).get_raw_value()
