"""Restarts (and reloads) owed for a configuration change, remembered on the host until
they are done.

A run that writes a config and dies (or fails) before restarting its service leaves the
old process running the old config; the next run sees the config already right and would
never restart it. So the restart first records that it is owed,
``/var/lib/maha/pending-restart/<service>``, restarts, and removes the marker only once
the restart succeeded: whatever stops it in between, the marker stays, and any later run
restarts the service even though none of its inputs changes any more (the release's own
scheme, ``operations/release.py`` ``pending/<service>``, for configuration).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.operation import OperationMeta

from operations.changes import changed

PENDING_RESTARTS = "/var/lib/maha/pending-restart"


def marker(service: str, reload: bool = False) -> str:
    """The file recording that ``service`` is owed a restart (``<service>``) or a reload
    (``<service>.reload``)."""
    return f"{PENDING_RESTARTS}/{service}{'.reload' if reload else ''}"


class RestartsOwed(FactBase[set[str]]):
    """
    The services a host is owed a restart for (their markers in ``PENDING_RESTARTS``).

    .. code:: python

        "redis-server" in host.get_fact(RestartsOwed)
    """

    @staticmethod
    def default() -> set[str]:
        return set()  # no output: no marker

    def command(self) -> str:
        return f"ls -1 {shlex.quote(PENDING_RESTARTS)} 2>/dev/null || true"

    def process(self, output: Iterable[str]) -> set[str]:
        return {line.strip() for line in output if line.strip()}


def restart_command(service: str, daemon_reload: bool = False, reload: bool = False) -> str:
    """Shell recording the restart (or reload) as owed, doing it, then clearing the record:
    a run killed, or a restart failing, anywhere in between leaves the marker."""
    q = shlex.quote
    units = "systemctl daemon-reload && " if daemon_reload else ""
    path = q(marker(service, reload))
    action = "reload" if reload else "restart"
    return (
        f"mkdir -p {q(PENDING_RESTARTS)} && touch {path} && "
        f"{units}systemctl {action} {q(service)} && rm -f {path}"
    )


@operation()
def restart_owed(
    service: str,
    when: Sequence[OperationMeta],
    daemon_reload: bool = False,
    reload: bool = False,
):
    """
    Restart ``service`` when any of ``when`` changed the host, or when an earlier run left
    the restart owed; once, however many of them changed.

    + service: the systemd unit
    + when: the operations whose change the running service must pick up (its config)
    + daemon_reload: reload systemd's units first (a changed unit file among ``when``)
    + reload: reload instead of restarting (nginx, HAProxy: the new configuration without
      dropping a connection); owed through its own marker, ``<service>.reload``

    The marker ``/var/lib/maha/pending-restart/<service>`` is written before the restart
    and removed after it succeeded. A plan shows the restart when one of ``when`` would
    change or the marker is there. Call it right after its inputs: the marker covers what
    happens from this operation on.

    **Example:**

    .. code:: python

        restart_owed(
            name="Restart Redis for the new configuration",
            service="redis-server",
            when=[conf, limits],
        )
    """
    if due(service, when, reload):
        yield StringCommand(restart_command(service, daemon_reload, reload))


def due(service: str, when: Sequence[OperationMeta], reload: bool = False) -> bool:
    """Whether a restart (or reload) of ``service`` is due on the current host: one of
    ``when`` changes it, or an earlier run left the marker. Notes the no-op when not."""
    if marker(service, reload).rpartition("/")[2] in host.get_fact(RestartsOwed):
        return True
    if any(changed(op) for op in when):
        return True
    host.noop(f"{service}: nothing it reads changed, no {'reload' if reload else 'restart'} owed")
    return False
