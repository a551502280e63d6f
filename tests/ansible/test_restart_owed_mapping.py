"""The export of an owed restart (operations.services.restart_owed): a changed input
records the restart as owed on the host (a handler, flushed before the restart's place),
the restart's handler is notified whenever the marker is there (also one a crashed run
left), and it removes the marker after the restart."""

from __future__ import annotations

from typing import Any

from mahaops.ansible_export.model import Call, Host
from mahaops.ansible_export.project import build_role, layout_settings
from mahaops.roles import BASE
from mahaops.settings import GroupData

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
