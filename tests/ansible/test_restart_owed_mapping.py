"""The export of an owed restart (operations.services.restart_owed): the marker written on
the host when an input changed, the handler flushed whenever the marker is there (also
one a crashed run left), the marker removed by the handler after the restart."""

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


def test_the_marker_is_written_when_an_input_changed_and_read_on_every_run() -> None:
    out = exported()
    assert out.errors == []
    conf, write, due, flush, after = out.tasks
    assert conf["register"] == "base_changed_0" and "notify" not in conf
    assert write["ansible.builtin.shell"] == {
        "cmd": f"mkdir -p /var/lib/maha/pending-restart && touch {MARKER}",
        "creates": MARKER,
    }
    assert write["when"] == "(base_changed_0 | default({})) is changed"
    # The handler is notified from the marker, not from the input: a marker left by a run
    # that died before its restart flushes it too.
    assert due["ansible.builtin.stat"] == {"path": MARKER}
    assert due["changed_when"] == f"{due['register']}.stat.exists"
    assert due["notify"] == ["Restart chrony"]
    assert flush["ansible.builtin.meta"] == "flush_handlers"  # where the deploy restarts
    assert after["name"] == "Next"


def test_the_handler_restarts_then_clears_the_marker() -> None:
    restart, clear = exported().handlers
    assert restart["ansible.builtin.systemd_service"] == {"name": "chrony", "state": "restarted"}
    assert clear["ansible.builtin.file"] == {"path": MARKER, "state": "absent"}
    assert restart["listen"] == clear["listen"] == "Restart chrony"
