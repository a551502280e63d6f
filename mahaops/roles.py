"""The platform's roles: one vocabulary for deploys, groups, labels and tags.

A role's deploy is ``deploys/<role>.py``, its settings ``group_data/<group>.py``,
its templates ``templates/<role>/`` and its tests ``tests/roles/test_<role>.py``.
Docker labels (``maha.role``), EC2 tags (``Role``) and Ansible groups use the
same names.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    """Short name: deploys/<name>.py, templates/<name>/, maha.role label, Role tag."""
    group: str
    """Inventory group (pyinfra and Ansible) and group_data/<group>.py."""
    title: str
    """What an operator calls it."""


# Deploy order: base everywhere first, then what others depend on.
ROLES: tuple[Role, ...] = (
    Role("db", "db_servers", "PostgreSQL database server"),
    Role("cache", "cache_servers", "Redis cache and job queue"),
    Role("log", "log_servers", "Log server"),
    Role("mail", "mail_servers", "Mail sink (SMTP; local and tests)"),
    Role("storage", "storage_servers", "S3 API stand-in (moto; local and tests)"),
    Role("app", "app_servers", "nginx + Node.js app server"),
    Role("worker", "workers", "Background job worker"),
    Role("lb", "load_balancers", "Load balancer"),
)
BASE = Role("base", "all", "Base system (every host)")

# Converge phases: every host finishes a phase before any starts the next, so clients
# find their servers ready; within a phase hosts do not wait for one another.
PHASES: tuple[frozenset[str], ...] = (
    frozenset({"base"}),
    frozenset({"db", "cache", "log", "mail", "storage"}),
    frozenset({"app", "worker"}),
    frozenset({"lb"}),
)

ROLE_BY_NAME: dict[str, Role] = {r.name: r for r in (BASE, *ROLES)}
ROLE_BY_GROUP: dict[str, Role] = {r.group: r for r in ROLES}
GROUPS: tuple[str, ...] = tuple(r.group for r in ROLES)
ENV_KINDS: tuple[str, ...] = ("local", "aws")
"""Inventory kinds; each is also a group, with its own group_data/<kind>.py overlay."""


def role(name: str) -> Role:
    try:
        return ROLE_BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(ROLE_BY_NAME))
        raise ValueError(f"unknown role {name!r} (known roles: {known})") from None


def deployable_roles() -> list[str]:
    """Roles whose deploy exists in deploys/ (base first)."""
    return [
        name for name in ROLE_BY_NAME if importlib.util.find_spec(f"deploys.{name}") is not None
    ]
