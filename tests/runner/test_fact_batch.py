"""Facts read in one batch are fresh: edits between runs and changes within a run are seen."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mahaops import PROJECT_ROOT
from tests.conftest import Testbed

pytestmark = pytest.mark.testbed

PATH = "/etc/maha-fact-probe"


def probe(testbed: Testbed, host: str, then_remove: bool = False) -> dict:
    cmd = [sys.executable, "-m", "tests.runner.fact_probe", testbed.env, host, PATH]
    if then_remove:
        cmd.append("--then-remove")
    proc = subprocess.run(
        cmd, cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_batched_facts_are_read_now_and_dropped_once_an_operation_runs(
    testbed: Testbed,
) -> None:
    host = testbed.host("base", name="facts-1")

    first = probe(testbed, host.name)  # nothing remembered yet: read live, then remembered
    assert first == {"exists": [False], "batched": 0, "live": 1}

    testbed.exec(host, f"touch {PATH}")  # changed by hand between runs
    second = probe(testbed, host.name, then_remove=True)
    # From the batch, and the batch saw the file made after the last run; after the
    # operation's command the fact is read live again, and sees the file gone.
    assert second == {"exists": [True, False], "batched": 1, "live": 1}
    assert testbed.exec(host, f"test -e {PATH} || echo gone").strip() == "gone"


def test_the_remembered_commands_are_private_to_the_operator(testbed: Testbed) -> None:
    host = testbed.host("base", name="facts-2")
    probe(testbed, host.name)
    facts = testbed.home / testbed.env / "facts"
    files = list(facts.glob("*.json"))
    assert files, "a deploy remembers its fact commands"
    assert oct(facts.stat().st_mode & 0o777) == "0o700"
    assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
