"""Server lifecycle: ``invoke scale``, ``replace`` and ``remove`` (issue 13, section 1).

- ``plan``: what a command will do, decided first (hosts to create and remove, the peers
  whose configuration lists them); pure, unit-tested.
- ``local``: doing it on a local environment (Docker): hosts created and converged,
  admitted at their peers, health-gated into service; out of service before removal.
- ``haproxy``: the local load balancer's runtime API (drain a server before it goes).
- ``aws``: the same steps on an AWS environment (and the ``sim``): EC2 instances launched
  by provisioning's code, health-gated in the ALB's target group, drained out of it.
- ``bench``: seconds until a new app server serves through the load balancer.
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


def _lifecycle(env: str, console: Console, capture: bool = False, dry: bool = False) -> Lifecycle:
    """The environment's kind decides how hosts come and go: Docker containers (local) or
    EC2 instances (AWS and the sim); the order of the steps is the same."""
    from mahaops.hosts import kind_of
    from mahaops.settings import GroupData

    if kind_of(env, GroupData().files) == "local":
        return Lifecycle(env, _say(console), capture=capture)
    from mahaops.lifecycle.aws import AwsLifecycle

    return AwsLifecycle(env, _say(console), capture=capture, dry=dry)


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
    console = console or Console()
    life = _lifecycle(env, console, capture=capture, dry=dry)
    changes = life.named(planning.scale(role_name, count, life.existing()))
    life.check(changes)
    started = time.monotonic()
    life.persist(role_name, count)  # kept first: a failed run is finished by the next one
    if changes.remove:
        life.remove(changes, dry=dry)
    # Even with nothing to create, a host a former run left joining is finished here.
    life.add(changes, dry=dry)
    life.outcome.timings["total"] = time.monotonic() - started
    return life.outcome


def replace(env: str, name: str, dry: bool = False, console: Console | None = None) -> Outcome:
    """A new host of ``name``'s role takes over, then ``name`` leaves."""
    console = console or Console()
    life = _lifecycle(env, console, dry=dry)
    changes = life.named(planning.replace(life.host_name(name), life.existing()))
    started = time.monotonic()
    if changes.role in planning.DATA_ROLES and changes.role != "db" and life.kind != "local":
        raise LifecycleError(
            f"a {changes.role} host keeps no data volume on AWS (only db hosts have one): a"
            " new instance would start empty, so nothing is replaced"
        )
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
    console = console or Console()
    life = _lifecycle(env, console, dry=dry)
    hosts = life.existing()
    changes = life.named(planning.remove(life.host_name(name), hosts))
    life.check(changes)
    started = time.monotonic()
    life.persist(changes.role, sum(h.role == changes.role for h in hosts) - 1)
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
