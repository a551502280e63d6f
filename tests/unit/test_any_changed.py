"""``_if=any_changed(...)``: one restart for several inputs, answered in plans and runs, and
exported to Ansible as a handler each input notifies."""

from __future__ import annotations

from pyinfra.api.operation import OperationMeta

from mahaops.ansible_export.record import _guards, _triggers
from operations.changes import AnyChanged, any_changed


def planned(op_hash: str, would_change: bool) -> OperationMeta:
    return OperationMeta(op_hash, is_change=would_change)


def ran(op_hash: str, changed: bool) -> OperationMeta:
    meta = OperationMeta(op_hash, is_change=None)
    meta.set_complete(True, ["a command"] if changed else [], None)  # type: ignore[arg-type]
    return meta


def test_a_plan_is_answered_by_what_the_inputs_would_do() -> None:
    assert any_changed(planned("conf", False), planned("limits", True))()
    assert not any_changed(planned("conf", False), planned("limits", False))()


def test_a_run_is_answered_by_what_the_inputs_did() -> None:
    assert any_changed(ran("conf", True), ran("limits", False))()
    assert not any_changed(ran("conf", False), ran("limits", False))()


def test_the_export_reads_the_guard_as_triggers_not_as_an_all_of_guard() -> None:
    guard = any_changed(planned("conf", False), planned("limits", False))
    assert isinstance(guard, AnyChanged)
    assert _guards(guard, "here") == ()
    assert _triggers(None, guard) == ("conf", "limits")
