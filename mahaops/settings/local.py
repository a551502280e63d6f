"""Settings of the local platform's shape (group_data/local.py): how many hosts of each role.

``invoke up`` creates hosts until each role has its count; ``invoke scale`` changes a
count for a while (hosts are the truth, never a state file), and ``up`` never removes a
host beyond the shape: it says so instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mahaops.settings.models import Settings, group_settings

LocalRole = Literal["lb", "app", "db", "cache", "log", "worker", "mail", "storage"]

SINGLE: tuple[str, ...] = ("db", "cache", "lb", "log", "mail", "storage")
"""Roles with at most one host: the app reaches the first db and cache server (no
replication, no cluster), every host ships to the log server, clients use one load
balancer's published port, workers send to the first mail sink, app servers presign for
the first storage host."""
NEEDS: dict[str, tuple[str, ...]] = {"app": ("db", "cache"), "worker": ("db", "cache")}
"""Roles that cannot run without others (the app's /health checks PostgreSQL and Redis)."""
MAX_HOSTS = 20  # per role: every host is a systemd container on this machine

DEFAULT_SHAPE: dict[str, int] = {
    "lb": 1,
    "app": 2,
    "db": 1,
    "cache": 1,
    "log": 1,
    "worker": 1,
    "mail": 1,
    "storage": 1,
}


def check_shape(shape: dict[str, int]) -> dict[str, int]:
    """``shape`` when its counts make a platform, else ValueError saying which count is wrong."""
    for name, count in shape.items():
        if count < 0 or count > MAX_HOSTS:
            raise ValueError(f"{name}: {count} hosts; give 0 to {MAX_HOSTS}")
        if name in SINGLE and count > 1:
            raise ValueError(f"{name}: {count} hosts; the platform runs at most one {name} host")
    for name, needed in NEEDS.items():
        for other in needed:
            if shape.get(name, 0) and not shape.get(other, 0):
                raise ValueError(f"{name}: {name} hosts need a {other} host ({other}: 0)")
    return shape


@group_settings("local")
class LocalShapeSettings(Settings):
    # Hosts per role of a local environment; a role left out has none. db, cache, lb, log,
    # mail and storage take at most one; app and worker need db and cache (workers without a mail
    # host simulate sending).
    local_hosts: dict[LocalRole, int] = Field(default_factory=lambda: dict(DEFAULT_SHAPE))  # type: ignore[arg-type]

    @field_validator("local_hosts")
    @classmethod
    def _a_platform(cls, value: dict[str, int]) -> dict[str, int]:
        return check_shape(value)
