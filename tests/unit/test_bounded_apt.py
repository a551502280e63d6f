"""The bound every apt command of the deploys runs under (operations/apt.py)."""

from __future__ import annotations

import subprocess
import time

from pyinfra.api import FunctionCommand, StringCommand

from operations.apt import bounded


def _run(command: StringCommand) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", "-c", str(command.get_raw_value())], capture_output=True, text=True, timeout=60
    )


def test_a_command_past_its_bound_is_stopped_with_its_children_and_says_why(tmp_path) -> None:
    marker = tmp_path / "child-still-running"
    # A child that would outlive its parent, as apt's fetch methods can.
    command = bounded(f"(sleep 3; touch {marker}) & sleep 30", timeout=1)
    started = time.monotonic()
    result = _run(command)
    assert result.returncode == 124
    assert time.monotonic() - started < 10
    assert "apt stopped after 1s (base_apt_timeout)" in result.stderr
    time.sleep(3.5)
    assert not marker.exists()  # the whole process group was stopped


def test_a_command_within_its_bound_keeps_its_output_and_status() -> None:
    result = _run(bounded("echo 'it''s fine'; exit 3", timeout=30))
    assert (result.returncode, result.stdout, result.stderr) == (3, "its fine\n", "")


def test_commands_that_are_not_shell_pass_unchanged() -> None:
    function = FunctionCommand(print, (), {})
    assert bounded(function, timeout=5) is function
