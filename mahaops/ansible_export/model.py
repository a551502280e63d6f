"""What the exporter works on: operations as the deploys called them, and Ansible tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class Jinja(str):
    """A string the exporter made to be templated by Ansible (a lookup, a variable)."""


class Unsafe(str):
    """A value that merely contains Jinja markers: written ``!unsafe`` so Ansible keeps it."""


class ExportError(Exception):
    """The deploys cannot be exported faithfully; the message names the operation and line."""


@dataclass(frozen=True)
class Call:
    """One pyinfra operation a deploy called for one host, with its bound arguments."""

    host: str
    role: str
    op_hash: str  # pyinfra's: the same call site (and loop turn) on every host
    operation: str  # e.g. "files.template", "operations.files.validated_template"
    name: str  # the operation's ``name=``
    location: str  # "deploys/base.py:57": where the deploy called it
    arguments: dict[str, Any]  # every parameter, defaults applied; **data under its name
    defaults: dict[str, Any]  # the operation's parameter defaults, to spot what was set
    options: dict[str, Any] = field(default_factory=dict)  # pyinfra globals set (_sudo_user...)
    guards: tuple[str, ...] = ()  # op hashes whose ``did_change`` gates this call (``_if``)
    triggers: tuple[str, ...] = ()  # op hashes any of whose changes runs it (a ``when=`` list)

    def where(self) -> str:
        return f"{self.operation} {self.name!r} at {self.location}"

    def is_set(self, key: str) -> bool:
        return key in self.arguments and self.arguments[key] != self.defaults.get(key)


@dataclass
class Task:
    """One Ansible task (or handler) mapped from a call, before per-host grouping."""

    name: str
    module: str  # fully qualified collection name
    args: dict[str, Any]
    keywords: dict[str, Any] = field(default_factory=dict)  # become_user, changed_when, ...
    template: str | None = None  # source under templates/, copied into the role
    template_vars: dict[str, Any] = field(default_factory=dict)  # what the deploy passed to it
    files: dict[str, bytes] = field(default_factory=dict)  # role files/<name> -> content


@dataclass(frozen=True)
class Host:
    """A host as the exported inventory describes it."""

    name: str
    groups: tuple[str, ...]  # inventory kind first ("local"/"aws"), then role groups
    connection: dict[str, Any]  # ansible_host, ansible_port, ...
    data: dict[str, Any]  # other inventory data (private_address, maha_role, ...)
