"""``_if`` guards over several operations.

pyinfra's ``_if=[a.did_change, b.did_change]`` runs an operation only when *all* of them
changed, and its ``pyinfra.operations.util.any_changed`` can only be answered once they
ran. A restart needs "any of these changed", answered in a plan too: ``any_changed`` here
gives a guard that says what the operations would do while planning and what they did
while executing, and that keeps its operations readable, so the Ansible export turns it
into a handler notified by each of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyinfra.api.operation import OperationMeta

from mahaops.pyinfra_hooks import would_run


def changed(op: OperationMeta) -> bool:
    """Whether ``op`` changed its host; before it ran (a plan), whether it would: its own
    ``_if`` guard included (an install run only when its archive changed would not)."""
    if op.is_complete():
        return op.did_change()
    return bool(op.will_change) and would_run(op)


@dataclass(frozen=True)
class AnyChanged:
    """An ``_if`` guard: true when any of ``operations`` changed (or, planning, would)."""

    operations: tuple[OperationMeta, ...]

    def __call__(self) -> bool:
        return any(changed(op) for op in self.operations)


def any_changed(*operations: OperationMeta) -> AnyChanged:
    """
    Guard an operation on any of several others changing the host.

    **Example:**

    .. code:: python

        systemd.service(
            name="Restart Redis", service="redis-server", restarted=True,
            _if=any_changed(conf, limits),
        )
    """
    if not operations:
        raise ValueError("any_changed needs at least one operation")
    return AnyChanged(tuple(operations))
