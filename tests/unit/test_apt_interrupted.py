"""An install first finishes what a killed dpkg left (operations/apt.py): ``dpkg
--configure -a`` runs when, and only when, dpkg's journal of status changes
(/var/lib/dpkg/updates) is not empty; run here with a stand-in dpkg."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from operations.apt import bounded


@pytest.mark.parametrize("interrupted", [True, False])
def test_dpkg_is_finished_before_the_install_only_when_it_was_interrupted(
    tmp_path: Path, interrupted: bool
) -> None:
    updates = tmp_path / "updates"
    updates.mkdir()
    if interrupted:
        (updates / "0001").write_text("Package: half-done\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    (bin_dir / "dpkg").write_text(f'#!/bin/sh\necho "dpkg $*" >> {calls}\n')
    (bin_dir / "dpkg").chmod(0o755)
    command = bounded(f"echo install >> {calls}", timeout=30, repair=True).get_raw_value()
    command = command.replace("/var/lib/dpkg/updates", str(updates))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    result = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    repair = ["dpkg --force-confdef --force-confold --configure -a"] if interrupted else []
    assert calls.read_text().splitlines() == [*repair, "install"]
    assert ("dpkg was interrupted" in result.stderr) is interrupted


def test_only_installs_repair_by_default() -> None:
    assert "dpkg" not in bounded("apt-get update", timeout=30).get_raw_value()
