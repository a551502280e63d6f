"""Tasks for the servers' lifecycle: ``scale``, ``replace`` and ``remove`` (local, AWS, sim).

Each takes the deploy lock and writes the audit log (``guarded``), prints progress lines
as ``up`` does, the peers' deploys as they run, and a closing table; ``--dry`` plans with
the peers' diffs and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console

from mahaops.fleet.audit import guarded
from mahaops.tasks._common import ENV_HELP, help_for_positional

DRY_HELP = "print the plan (hosts, peers' diffs, load balancer changes) and change nothing"


@contextmanager
def _reported(console: Console) -> Iterator[None]:
    """A refused or failed step ends the task with its reason, not a traceback."""
    from botocore.exceptions import BotoCoreError, ClientError, WaiterError

    from mahaops.aws.plan import ProvisionError
    from mahaops.lifecycle import LifecycleError
    from mahaops.settings import SettingsError
    from mahaops.sim import SimError

    try:
        yield
    except (LifecycleError, SettingsError, ValueError) as exc:
        raise Exit(f"error: {exc}", code=1) from None
    except (ProvisionError, SimError, BotoCoreError, ClientError, WaiterError) as exc:
        raise Exit(f"error: {exc}", code=1) from None


def _run(title: str, dry: bool, work: Callable[[Console], object]) -> None:
    from mahaops.lifecycle import Outcome, results_table

    console = Console()
    with _reported(console):
        outcome = work(console)
    assert isinstance(outcome, Outcome)
    console.print(results_table(outcome, f"{title} (dry run: nothing changed)" if dry else title))
    total = outcome.timings.get("total")
    if total is not None and not dry:
        console.print(f"Done in {total:.1f}s")


@task(
    help={
        "env": ENV_HELP,
        "role": "the role to scale: app, worker, or (0 or 1 host) cache, log, lb (db: local only)",
        "count": "how many hosts of the role there should be",
        "dry": DRY_HELP,
    }
)
@guarded("scale")
def scale(c: Context, env: str = "local", role: str = "", count: int = -1, dry: bool = False):
    """Add or remove hosts of a role: converged, admitted at their peers, health-gated."""
    from mahaops import lifecycle

    if not role or count < 0:
        raise Exit("error: give --role and --count (0 or more)", code=2)
    _run(
        f"scale {role} to {count}",
        dry,
        lambda console: lifecycle.scale(env, role, count, dry=dry, console=console),
    )


@task(
    help={
        "env": ENV_HELP,
        "host": "the host to replace, e.g. app-1 (on AWS also maha-<env>-app-1)",
        "dry": DRY_HELP,
    }
)
@help_for_positional("host")
@guarded("replace")
def replace(c: Context, host: str, env: str = "local", dry: bool = False):
    """Replace a host: a new one of its role takes over, then the old one leaves."""
    from mahaops import lifecycle

    _run(
        f"replace {host}",
        dry,
        lambda console: lifecycle.replace(env, host, dry=dry, console=console),
    )


@task(
    help={
        "env": ENV_HELP,
        "host": "the host to remove, e.g. app-2 (on AWS also maha-<env>-app-2)",
        "dry": DRY_HELP,
    }
)
@help_for_positional("host")
@guarded("remove")
def remove(c: Context, host: str, env: str = "local", dry: bool = False):
    """Remove a host (drained first unless lost); its peers stop admitting it."""
    from mahaops import lifecycle

    _run(
        f"remove {host}",
        dry,
        lambda console: lifecycle.remove(env, host, dry=dry, console=console),
    )


ns = Collection("lifecycle", scale, replace, remove)
