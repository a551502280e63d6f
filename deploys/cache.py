"""Cache server: Redis, the platform's cache and the job queue between app servers and
workers.

Read top to bottom, it is the runbook: the service's limits, the package, a
configuration that binds the private address, requires a password and denies the
dangerous commands, AOF persistence, and the kernel settings Redis asks for.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd

from deploys._common import restart, template, unit
from mahaops.context import settings
from mahaops.masking import digest
from mahaops.secrets import secret
from mahaops.settings.cache import RedisClientSettings, RedisSettings
from operations import apt
from operations.facts import IsContainer

SERVICE = "redis-server"


def template_vars(s: RedisSettings, port: int, in_container: bool) -> dict[str, Any]:
    """Variables the cache templates see: the settings plus what follows from the host."""
    private = host.data.get("private_address")
    return {
        **s.model_dump(),
        "redis_port": port,
        "redis_bind": [*([str(private)] if private else []), "127.0.0.1"],
        "redis_in_container": in_container,
        # Redis compares SHA-256 digests: the passwords themselves are never written, and
        # the digests are masked and exported as computed from the secrets' lookups.
        "redis_password_sha256": digest("redis_password", secret("redis_password")),
        "redis_admin_password_sha256": digest(
            "redis_admin_password", secret("redis_admin_password")
        ),
    }


@deploy("Redis")
def cache() -> None:
    s = settings(RedisSettings)
    port = settings(RedisClientSettings).redis_port
    in_container = host.get_fact(IsContainer)
    tvars = template_vars(s, port, in_container)

    # -- the service's limits, in place before the package first starts it ----------------
    files.directory(
        name="Directory for Redis service settings",
        path=f"/etc/systemd/system/{SERVICE}.service.d",
    )
    limits = unit(
        "Redis service limits (open files)",
        "cache/redis-server.override.conf.j2",
        f"/etc/systemd/system/{SERVICE}.service.d/90-maha.conf",
        reload_name="Load the Redis service limits",
        **tvars,
    )

    # -- kernel settings Redis warns about (a container's kernel is its host's) -----------
    if s.redis_kernel_tuning and not in_container:
        sysctl = template(
            "Kernel settings for Redis (overcommit, backlog)",
            "cache/sysctl.conf.j2",
            "/etc/sysctl.d/90-maha-redis.conf",
            **tvars,
        )
        server.shell(
            name="Apply kernel settings for Redis",
            commands=["sysctl -p /etc/sysctl.d/90-maha-redis.conf"],
            _if=sysctl.did_change,
        )
        unit(
            "Transparent huge pages off at boot",
            "cache/thp-never.service.j2",
            "/etc/systemd/system/maha-thp-never.service",
            reload_name="Load the huge pages unit",
            **tvars,
        )
        systemd.service(
            name="Transparent huge pages off now",
            service="maha-thp-never.service",
            running=True,
            enabled=True,
        )

    # -- package and configuration --------------------------------------------------------
    apt.packages(
        name="Install Redis",
        packages=["redis-server"],
        update=True,
        cache_time=3600,
        no_recommends=True,
    )
    conf = template(
        "Configure Redis (bind, auth, memory, AOF)",
        "cache/redis.conf.j2",
        "/etc/redis/redis.conf",
        mode="640",
        user="redis",
        group="redis",
        **tvars,
    )
    systemd.service(name="Run Redis", service=SERVICE, running=True, enabled=True)
    # Restarts only for a changed file: AOF (fsync every second) keeps the data across.
    restart("Restart Redis for the new configuration", SERVICE, when=[conf, limits])
