"""Server lifecycle: ``invoke scale``, ``replace`` and ``remove`` (issue 13, section 1).

- ``plan``: what a command will do, decided first (hosts to create and remove, the peers
  whose configuration lists them); pure, unit-tested.
- ``local``: doing it on a local environment (Docker): hosts created and converged,
  admitted at their peers, health-gated into service; out of service before removal.
- ``haproxy``: the local load balancer's runtime API (drain a server before it goes).
- ``bench``: seconds until a new app server serves through the load balancer.

Local environments only for now: an AWS environment is refused by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from mahaops.lifecycle import plan as planning
from mahaops.lifecycle.local import Lifecycle, LifecycleError, Outcome, Row

__all__ = [
    "Lifecycle",
    "LifecycleError",
    "Outcome",
    "Row",
    "remove",
    "replace",
    "results_table",
    "scale",
]


def _local_only(env: str) -> None:
    from mahaops.hosts import kind_of
    from mahaops.settings import GroupData

    if kind_of(env, GroupData().files) != "local":
        raise LifecycleError(f"{env} is an AWS environment: scale, replace and remove are local")


def _say(console: Console) -> Callable[[str], None]:
    return lambda msg: console.print(f"[bold]•[/] {msg}")


def scale(
    env: str,
    role_name: str,
    count: int,
    dry: bool = False,
    console: Console | None = None,
    capture: bool = False,
) -> Outcome:
    """Hosts of ``role_name`` up or down to ``count``, peers included (``capture``: the
    deploys' own output is kept, not printed)."""
    _local_only(env)
    console = console or Console()
    life = Lifecycle(env, _say(console), capture=capture)
    changes = planning.scale(role_name, count, life.existing())
    life.check(changes)
    started = time.monotonic()
    if changes.remove:
        life.remove(changes, dry=dry)
    # Even with nothing to create, a host a former run left joining is finished here.
    life.add(changes, dry=dry)
    life.outcome.timings["total"] = time.monotonic() - started
    return life.outcome


def replace(env: str, name: str, dry: bool = False, console: Console | None = None) -> Outcome:
    """A new host of ``name``'s role takes over, then ``name`` leaves."""
    _local_only(env)
    console = console or Console()
    life = Lifecycle(env, _say(console))
    changes = planning.replace(name, life.existing())
    started = time.monotonic()
    if changes.role in planning.DATA_ROLES:
        from mahaops.lifecycle.takeover import takeover

        takeover(life, changes, dry=dry)
    else:
        adding = planning.Changes(changes.role, create=changes.create)
        life.add(adding, dry=dry)
        leaving = planning.Changes(changes.role, remove=changes.remove, lost=changes.lost)
        life.remove(leaving, dry=dry)
    life.outcome.timings["total"] = time.monotonic() - started
    return life.outcome


def remove(env: str, name: str, dry: bool = False, console: Console | None = None) -> Outcome:
    """``name`` out of service (unless lost), peers without it, its container removed."""
    _local_only(env)
    console = console or Console()
    life = Lifecycle(env, _say(console))
    changes = planning.remove(name, life.existing())
    life.check(changes)
    started = time.monotonic()
    life.remove(changes, dry=dry)
    life.outcome.timings["total"] = time.monotonic() - started
    return life.outcome


def results_table(outcome: Outcome, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("host", "role", "what", "address", "note"):
        table.add_column(column)
    for row in outcome.rows:
        table.add_row(row.host, row.role, row.action, row.address or "-", row.detail)
    return table
