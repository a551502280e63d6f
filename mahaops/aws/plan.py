"""The plan: what each ensure step found and did, shown as a rich table.

Every step records one :class:`Change` per resource: ``create``, ``update``,
``replace``, ``delete`` or ``no change``. A dry run records the same changes
without making them; ids of resources it would create are :data:`PENDING`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import boto3
from rich.console import Console
from rich.table import Table

from mahaops.aws.config import Environment
from mahaops.aws.session import Clients, instrument, make_session
from mahaops.settings.aws import AwsEnvironment, AwsSettings

Action = Literal["create", "update", "replace", "delete", "no change"]

PENDING = "(known after apply)"
"""Stands in, during a dry run, for the id of a resource that does not exist yet."""

_STYLE: dict[str, str] = {
    "create": "green",
    "update": "yellow",
    "replace": "magenta",
    "delete": "red",
    "no change": "dim",
}


class ProvisionError(RuntimeError):
    """AWS refused or never reached the described state; the message says which resource."""


@dataclass(frozen=True)
class Change:
    kind: str  # what sort of resource: "VPC", "Security group", ...
    name: str  # its Name tag or AWS name
    action: Action
    detail: str = ""  # what differs, or the id found


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)

    def record(self, kind: str, name: str, action: Action, detail: str = "") -> None:
        self.changes.append(Change(kind, name, action, detail))

    def __iter__(self) -> Iterator[Change]:
        return iter(self.changes)

    @property
    def changed(self) -> bool:
        return any(c.action != "no change" for c in self.changes)

    def counts(self) -> dict[str, int]:
        result: dict[str, int] = {}
        for change in self.changes:
            result[change.action] = result.get(change.action, 0) + 1
        return result

    def table(self, title: str) -> Table:
        table = Table(title=title, title_justify="left")
        table.add_column("Resource")
        table.add_column("Name")
        table.add_column("Action")
        table.add_column("Detail", overflow="fold")
        for c in self.changes:
            style = _STYLE[c.action]
            table.add_row(c.kind, c.name, f"[{style}]{c.action}[/{style}]", c.detail)
        return table

    def summary(self) -> str:
        counts = self.counts()
        order = ("create", "update", "replace", "delete", "no change")
        return ", ".join(f"{counts[a]} {a}" for a in order if a in counts) or "nothing"


@dataclass
class Context:
    """What every ensure step shares: the description, clients, plan and ids found so far."""

    env: str
    spec: AwsEnvironment
    settings: AwsSettings
    clients: Clients
    project: str = "maha"
    dry: bool = False
    plan: Plan = field(default_factory=Plan)
    console: Console = field(default_factory=lambda: Console(stderr=True))
    ids: dict[str, Any] = field(default_factory=dict)  # "vpc", "sg:app", "subnets:public", ...
    # Asked before a db host is stopped or terminated; no answer (the default) is a no.
    confirm: Callable[[str], bool] = field(default=lambda what: False)

    def name(self, *parts: str) -> str:
        """The Name of a resource: ``maha-<env>-<parts...>``."""
        return "-".join((self.project, self.env, *parts))

    def tags(self, role: str, name: str) -> list[dict[str, str]]:
        """The four tags on everything: Project, Environment, Role and Name."""
        values = {"Project": self.project, "Environment": self.env, "Role": role, "Name": name}
        return [{"Key": k, "Value": v} for k, v in values.items()]

    def tag_dict(self, role: str, name: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.tags(role, name)}

    def filters(self, **tags: str) -> list[dict[str, Any]]:
        """EC2 filters matching this environment's resources (plus any extra tags)."""
        wanted = {"Project": self.project, "Environment": self.env, **tags}
        return [{"Name": f"tag:{k}", "Values": [v]} for k, v in wanted.items()]

    def owns(self, tags: list[dict[str, str]] | dict[str, str] | None) -> bool:
        """Whether a resource's tags say it belongs to this environment."""
        as_dict = tags if isinstance(tags, dict) else {t["Key"]: t["Value"] for t in tags or []}
        return as_dict.get("Project") == self.project and as_dict.get("Environment") == self.env

    def will_create(self, kind: str, name: str) -> bool:
        """Whether this run creates ``name``: a dry run must not read what is not there yet."""
        return any(c.kind == kind and c.name == name and c.action == "create" for c in self.plan)

    def step(self, message: str) -> None:
        """Progress for long work: one line per step (a spinner would hide in CI logs)."""
        self.console.print(f"[dim]…[/dim] {message}", highlight=False)


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags") or []}


def pending(value: Any) -> bool:
    return value == PENDING or (isinstance(value, list | tuple) and PENDING in value)


def context_of(
    loaded: Environment,
    session: boto3.Session | None = None,
    *,
    dry: bool = False,
    console: Console | None = None,
) -> Context:
    """The context of one run on ``loaded``: clients of ``session`` (by default a new one
    for the environment's region and profile) that log every call and, with ``dry``,
    refuse mutating ones."""
    if session is None:
        session = make_session(loaded.spec.region, loaded.spec.profile, dry=dry)
    else:
        instrument(session, dry=dry)
    return Context(
        env=loaded.name,
        spec=loaded.spec,
        settings=loaded.settings,
        clients=Clients(session),
        project=loaded.project,
        dry=dry,
        console=console or Console(stderr=True),
    )
