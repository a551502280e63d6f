"""Tasks for the AWS stand-in (docs/sim.md): ``sim.up``, ``sim.status``, ``sim.down``.

``invoke provision --env sim`` starts the stand-in by itself; ``sim.up`` also makes the
sim environments' SSH key pairs, and is the place to see the server's address.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from invoke.collection import Collection
from invoke.context import Context as InvokeContext
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.table import Table

from mahaops.tasks._common import masked_console, one_line_errors


@contextmanager
def _errors() -> Iterator[None]:
    from mahaops.sim import SimError

    with one_line_errors(SimError):
        yield


@task
def up(c: InvokeContext) -> None:
    """Start the AWS stand-in (moto on 127.0.0.1) and make the sim SSH keys it needs."""
    from mahaops.sim import server

    out = masked_console()
    with _errors():
        for key in server.ensure_keys():
            out.print(f"made SSH key pair {key} (.pub beside it)")
        state = server.ensure_server()
    out.print(
        f"sim: moto on {state.endpoint} (pid {state.pid}), regions {', '.join(state.regions)}"
    )
    out.print(f"log: {server.sim_home() / server.LOG_FILE}")


@task
def status(c: InvokeContext) -> None:
    """The stand-in's server and the hosts its EC2 instances became."""
    from mahaops.sim import LABEL_ENV, LABEL_INSTANCE, server
    from mahaops.sim.hosts import Reconciler

    out = masked_console()
    state = server.read_state()
    if state is None:
        out.print("sim: not running")
        return
    if server.running() is None:
        raise Exit(f"error: {server.lost_message(state)}", code=1)
    out.print(f"sim: moto on {state.endpoint} (pid {state.pid})")
    table = Table("instance", "name", "environment", "private", "public", "host")
    for container in sorted(
        Reconciler(state.endpoint, state.regions, state.token, log=lambda _m: None)
        .containers()
        .values(),
        key=lambda c: c.labels.get("maha.sim.name", ""),
    ):
        networks = container.attrs["NetworkSettings"]["Networks"]
        addresses = {name: n.get("IPAddress", "") for name, n in networks.items()}
        public = addresses.pop("maha-sim-public", "")
        table.add_row(
            container.labels[LABEL_INSTANCE],
            container.labels.get("maha.sim.name", ""),
            container.labels.get(LABEL_ENV, ""),
            ", ".join(a for a in addresses.values() if a),
            public,
            container.status,
        )
    out.print(table)
    from mahaops.sim.alb import listeners

    for listener, port in sorted(listeners(server.sim_home()).items()):
        out.print(f"load balancer {listener} answers on 127.0.0.1:{port}")


@task(help={"yes": "do not ask for confirmation"})
def down(c: InvokeContext, yes: bool = False) -> None:
    """Stop the stand-in: its AWS state (in moto's memory) ends, its hosts are removed."""
    from mahaops.sim import server

    out = masked_console()
    state = server.read_state()
    if state is None:
        out.print("sim: not running")
        return
    if not yes:
        try:
            answer = input("Stop the sim: every resource it holds and its hosts go. Type 'yes': ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            raise Exit("not stopped", code=1)
    server.stop()
    removed = server.remove_hosts(state.token)
    out.print(f"sim stopped; hosts removed: {', '.join(removed) or 'none'}")


ns = Collection("sim", up, status, down)
