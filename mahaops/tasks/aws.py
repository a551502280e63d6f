"""Tasks for AWS: ``provision`` and ``teardown`` of one environment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, WaiterError
from invoke.collection import Collection
from invoke.context import Context as InvokeContext
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.table import Table

from mahaops.aws.plan import Plan, ProvisionError
from mahaops.tasks._common import masked_console, one_line_errors


@contextmanager
def _errors() -> Iterator[None]:
    """Provisioning's own failures, then any other AWS error, each as one line."""
    with (
        one_line_errors(ClientError, BotoCoreError, label="AWS error"),
        one_line_errors(ProvisionError, WaiterError),
    ):
        yield


def _required(env: str) -> None:
    # --env has a default only so that it is a flag: invoke hands a required (positional)
    # argument whatever follows the task, `--help` included (pyinvoke/invoke#982).
    if not env:
        raise Exit("error: --env NAME is required (an environment of group_data/aws.py)", code=2)


def _outputs_table(outputs: dict[str, Any]) -> Table:
    table = Table(title="Endpoints", title_justify="left", show_header=False)
    for key, value in outputs.items():
        table.add_row(key, str(value))
    return table


def _ask_db(what: str) -> bool:
    try:
        answer = input(f"About to {what}. Type 'yes' to go on: ")
    except EOFError:
        return False
    return answer.strip().lower() == "yes"


@task(
    help={
        "env": "environment to converge, as described in group_data/aws.py",
        "dry": "show the plan (create / update / no change) and change nothing",
        "yes": "do not ask before stopping or terminating a db host",
    }
)
def provision(c: InvokeContext, env: str = "", dry: bool = False, yes: bool = False) -> None:
    """Create or update an AWS environment to match group_data/aws.py."""
    from mahaops.aws.provision import provision as run

    _required(env)
    out, progress = masked_console(), masked_console(stderr=True)
    with _errors():
        result = run(env, dry=dry, console=progress, yes=yes, confirm=_ask_db)
    title = f"{'Plan' if dry else 'Provisioned'}: {env} ({result.plan.summary()})"
    out.print(result.plan.table(title))
    if not dry:
        out.print(_outputs_table(result.outputs))


def _ask(console: Console) -> Callable[[Plan], bool]:
    def confirm(plan: Plan) -> bool:
        console.print(plan.table(f"Teardown would delete {len(plan.changes)} resource(s)"))
        try:
            answer = input("Delete all of these? Type 'yes' to confirm: ")
        except EOFError:
            return False
        return answer.strip().lower() == "yes"

    return confirm


@task(
    help={
        "env": "environment to remove, as described in group_data/aws.py",
        "yes": "do not ask for confirmation",
    }
)
def teardown(c: InvokeContext, env: str = "", yes: bool = False) -> None:
    """Delete every AWS resource tagged for an environment (refuses protected ones)."""
    from mahaops.aws.teardown import teardown as run

    _required(env)
    out = masked_console()
    with _errors():
        plan = run(env, yes=yes, confirm=_ask(out), console=masked_console(stderr=True))
    if not plan.changes:
        out.print(f"Nothing removed for {env}.")
        return
    out.print(plan.table(f"Removed from {env} ({len(plan.changes)} resource(s))"))


ns = Collection("aws", provision, teardown)
