"""The exported switch keeps the host-side promises of operations.release.current (issue
14): before ``current`` moves, the restart owed is recorded and the release before it is
written to the history a rollback reads."""

from __future__ import annotations

import subprocess
from pathlib import Path

from mahaops.ansible_export.modules import to_tasks
from operations.release import Releases
from tests.ansible.test_mapping import call


def test_the_switch_records_the_restart_owed_and_the_release_before(tmp_path: Path) -> None:
    root = str(tmp_path)
    tasks = to_tasks(
        call(
            "operations.release.current",
            "Switch",
            release_id="r2",
            root=root,
            services=["maha-web"],
        )
    )
    [record] = [t for t in tasks if "record" in t.name]
    assert (
        record.keywords["when"]
        == "(base_current_release.stat.lnk_target | default('')) != 'releases/r2'"
    )
    # What Ansible renders where this host ran r1 before.
    command = record.args["cmd"].replace(
        "{{ (base_current_release.stat.lnk_target | default('-')) | basename }}", "r1"
    )
    assert "{{" not in command

    subprocess.run(["sh", "-c", command], check=True)

    out = subprocess.run(
        ["sh", "-c", Releases().command(root)], capture_output=True, text=True, check=True
    ).stdout
    state = Releases().process(out.splitlines())
    assert state.pending == {"maha-web": "r2"}
    assert (state.last_release, state.last_before) == ("r2", "r1")
    # The record comes before the switch itself.
    assert [t.name for t in tasks].index(record.name) < [t.name for t in tasks].index("Switch")
