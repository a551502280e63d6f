"""A dry run that cannot find its hosts says why in one line, naming what to do: an operator
on AWS never ran `invoke up`, and a stale stand-in must not end in a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mahaops import PROJECT_ROOT


def _dry_run(env: str, home: Path) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "MAHA_HOME": str(home), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "mahaops.runner", "--env", env, "--dry"],
        cwd=PROJECT_ROOT, env=environ, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_sim_whose_server_is_gone_is_refused_in_one_line_naming_the_way_out(
    tmp_path: Path,
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has any more
    state = {"pid": gone.pid, "port": 1, "token": "t", "started": time.time(), "regions": []}
    (tmp_path / "sim-server").mkdir(mode=0o700)
    (tmp_path / "sim-server" / "server.json").write_text(json.dumps(state))
    done = _dry_run("sim", tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    assert "error:" in out and "is gone" in out and "invoke sim.down" in out
