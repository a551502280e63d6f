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
