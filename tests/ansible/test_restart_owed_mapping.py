"""The export of an owed restart (operations.services.restart_owed): a changed input
records the restart as owed on the host (a file's own ``validate``, before the file is put
in place, and a handler, flushed before the restart's place), the restart's handler is
notified whenever the marker is there (also one a crashed run left), and it removes the
marker after the restart."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mahaops.ansible_export.model import Call, Host
from mahaops.ansible_export.project import build_role, layout_settings, owed_record, owed_validate
from mahaops.roles import BASE
from mahaops.settings import GroupData
from operations.release import owed_before_command

HOSTS = {"base-1": Host("base-1", ("local",), {"ansible_host": "127.0.0.1"}, {})}
MARKER = "/var/lib/maha/pending-restart/chrony"


def call(operation: str, name: str, op_hash: str, **kw: Any) -> Call:
    triggers = tuple(kw.pop("triggers", ()))
    return Call(
        "base-1", "base", op_hash, operation, name, "deploys/base.py:1", kw, {}, {}, (), triggers
    )


def exported() -> Any:
    conf = call("files.file", "Chrony config", "conf", path="/etc/chrony.conf", present=False)
    restart = call(
        "operations.services.restart_owed",
        "Restart chrony",
        "restart1",
        service="chrony",
        when=[],
        daemon_reload=False,
        triggers=["conf"],
    )
    after = call("files.file", "Next", "next", path="/etc/next", present=False)
    settings = layout_settings(GroupData(), [BASE])
    return build_role("base", [conf, restart, after], HOSTS, settings, {}, {})


def test_an_input_records_the_restart_owed_and_the_marker_notifies_the_restart() -> None:
    out = exported()
    assert out.errors == []
    conf, flush, due, flush_again, after = out.tasks
    assert conf["notify"] == ["Restart chrony: record the restart as owed"]
    assert flush["ansible.builtin.meta"] == "flush_handlers"  # the marker is on the host...
    # ...before the restart is notified, from the marker, not from the input: a marker left
    # by a run that died before its restart notifies it too.
    assert due["ansible.builtin.stat"] == {"path": MARKER}
    assert due["changed_when"] == f"{due['register']}.stat.exists"
    assert due["notify"] == ["Restart chrony"]
    assert flush_again["ansible.builtin.meta"] == "flush_handlers"  # where the deploy restarts
    assert after["name"] == "Next"


def test_the_handlers_record_the_marker_restart_then_clear_it() -> None:
    record, restart, clear = exported().handlers
    assert record["name"] == "Restart chrony: record the restart as owed"
    assert record["ansible.builtin.shell"] == {
        "cmd": f"mkdir -p /var/lib/maha/pending-restart && touch {MARKER}",
        "creates": MARKER,
    }
    assert restart["ansible.builtin.systemd_service"] == {"name": "chrony", "state": "restarted"}
    assert clear["ansible.builtin.file"] == {"path": MARKER, "state": "absent"}
    assert restart["listen"] == clear["listen"] == "Restart chrony"


def test_a_release_restart_left_owed_by_a_crashed_run_is_notified_by_its_marker() -> None:
    """A run that died after the switch leaves ``/srv/maha/pending/maha-web`` and ``current``
    already right: nothing the export changes notifies the restart; the marker must."""
    unit = call("files.file", "Unit maha-web", "unit", path="/etc/systemd/x", present=False)
    switch = call(
        "operations.release.current", "Switch", "switch", release_id="r2", root="/srv/maha"
    )
    restart = call(
        "operations.release.restarted",
        "Restart maha-web",
        "restart2",
        service="maha-web",
        when=[],
        root="/srv/maha",
        triggers=["unit", "switch"],
    )
    after = call("files.file", "Next", "next", path="/etc/next", present=False)
    settings = layout_settings(GroupData(), [BASE])
    out = build_role("base", [unit, switch, restart, after], HOSTS, settings, {}, {})

    assert out.errors == []
    [due] = [t for t in out.tasks if "ansible.builtin.stat" in t and "pending" in str(t)]
    assert due["ansible.builtin.stat"] == {"path": "/srv/maha/pending/maha-web"}
    assert due["changed_when"] == f"{due['register']}.stat.exists"
    assert due["notify"] == ["Restart maha-web"]
    # ...at the restart's place: after the switch, before the flush that runs the handler.
    names = [t["name"] for t in out.tasks]
    assert names.index(due["name"]) > names.index("Switch")
    assert out.tasks[names.index(due["name"]) + 1]["ansible.builtin.meta"] == "flush_handlers"
    assert [h["name"] for h in out.handlers] == ["Restart maha-web"]


def test_a_changed_unit_records_the_release_s_restart_owed_before_it_is_put_in_place() -> None:
    unit = call(
        "files.line", "Unit maha-web", "unit", path="/etc/systemd/system/maha-web.service",
        line="Restart=always", present=True, replace="", escape_regex_characters=False,
    )  # fmt: skip
    restart = call(
        "operations.release.restarted", "Restart maha-web", "restart2", service="maha-web",
        when=[], root="/srv/maha", triggers=["unit"],
    )  # fmt: skip
    out = build_role("base", [unit, restart], HOSTS, layout_settings(GroupData(), [BASE]), {}, {})
    assert out.errors == []
    validate = out.tasks[0]["ansible.builtin.lineinfile"]["validate"]
    assert validate == owed_validate([owed_before_command("/srv/maha", "maha-web")])


def test_a_changed_file_records_the_restart_owed_before_it_is_put_in_place() -> None:
    """The input's own ``validate`` (run by Ansible only when the file would change, and
    before it is moved into place) records the marker: a run killed between writing the
    file and flushing the handlers still leaves the restart owed."""
    line = call(
        "files.line", "Chrony server", "conf", path="/etc/chrony.conf", line="server x",
        present=True, replace="", escape_regex_characters=False,
    )  # fmt: skip
    restart = call(
        "operations.services.restart_owed", "Restart chrony", "restart1", service="chrony",
        when=[], daemon_reload=False, triggers=["conf"],
    )  # fmt: skip
    out = build_role("base", [line, restart], HOSTS, layout_settings(GroupData(), [BASE]), {}, {})
    assert out.errors == []
    validate = out.tasks[0]["ansible.builtin.lineinfile"]["validate"]
    assert validate == owed_validate([owed_record(MARKER)])
    assert out.tasks[0]["notify"] == ["Restart chrony: record the restart as owed"]


@pytest.mark.parametrize(("check_passes", "recorded"), [(True, True), (False, False)])
def test_the_owed_validate_records_only_once_the_file_s_own_check_passed(
    tmp_path: Path, check_passes: bool, recorded: bool
) -> None:
    """Run as Ansible runs ``validate``: ``%`` formatted with the candidate's path, split
    with shlex, no shell of its own."""
    marker = tmp_path / "owed" / "sshd.reload"
    candidate = tmp_path / "candidate"
    candidate.write_text("ok\n" if check_passes else "bad\n")
    validate = owed_validate([owed_record(str(marker))], "grep -qx ok %s")
    result = subprocess.run(shlex.split(validate % str(candidate)), check=False)
    assert (result.returncode == 0) is check_passes
    assert marker.exists() is recorded


def test_postgresql_s_settings_reload_is_owed_like_a_restart() -> None:
    """The db role's settings reload (operations.postgresql.reload): its inputs record
    ``<cluster>.reload`` first, the marker notifies it (one a crashed run left too), and its
    own command clears the marker only after the server read its files."""
    pg_marker = "/var/lib/maha/pending-restart/postgresql@15-main.reload"
    line = call(
        "files.line", "Work mem", "conf", path="/etc/postgresql/15/main/conf.d/90-maha.conf",
        line="work_mem = 6MB", present=True, replace="", escape_regex_characters=False,
    )  # fmt: skip
    reload = call(
        "operations.postgresql.reload", "Reload PostgreSQL for new settings", "reload1",
        service="postgresql@15-main", when=[], port=5432, triggers=["conf"],
    )  # fmt: skip
    out = build_role("base", [line, reload], HOSTS, layout_settings(GroupData(), [BASE]), {}, {})
    assert out.errors == []
    assert out.tasks[0]["ansible.builtin.lineinfile"]["validate"] == owed_validate(
        [owed_record(pg_marker)]
    )
    [due] = [t for t in out.tasks if "ansible.builtin.stat" in t]
    assert due["ansible.builtin.stat"] == {"path": pg_marker}
    assert due["notify"] == ["Reload PostgreSQL for new settings"]
    [handler] = [h for h in out.handlers if h["name"] == "Reload PostgreSQL for new settings"]
    command = handler["ansible.builtin.shell"]["cmd"]
    assert "systemctl reload postgresql@15-main" in command
    assert command.endswith(f"rm -f {pg_marker}")
