"""Cache server: Redis, twice — the platform's cache, and the job queue between app servers
and workers in an instance of its own.

Two instances because eviction is per instance: the cache may drop its least recently used
keys when full, while the queue (jobs, and leases that carry a TTL) must never lose a key,
so it runs with ``noeviction``. Debian's ``redis-server@queue`` unit runs the second one.

Read top to bottom, it is the runbook: the services' limits, the package, configurations
that bind the private address, require a password and deny the dangerous commands, AOF
persistence, and the kernel settings Redis asks for.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server, systemd

from deploys._common import restart, template, unit
from deploys._tls import CA_FILE, server_certificate, trust_ca
from mahaops.context import settings
from mahaops.masking import digest
from mahaops.secrets import secret
from mahaops.settings.cache import RedisClientSettings, RedisSettings
from operations import apt
from operations.facts import IsContainer

SERVICE = "redis-server"
# Not under /etc/redis: Debian makes that setgid, and a directory made in it inherits the
# bit, which a mode of 750 never matches (every run would change it).
TLS_DIR = "/etc/maha/tls/redis"
QUEUE_SERVICE = "redis-server@queue"  # Debian's template unit: /etc/redis/redis-queue.conf


def template_vars(
    s: RedisSettings, ports: RedisClientSettings, in_container: bool
) -> dict[str, Any]:
    """Variables the cache templates see: the settings plus what follows from the host."""
    private = host.data.get("private_address")
    return {
        **s.model_dump(),
        "redis_port": ports.redis_port,
        "redis_tls": ports.redis_tls,
        "redis_tls_dir": TLS_DIR,
        "redis_tls_ca_file": CA_FILE,
        "redis_bind": [*([str(private)] if private else []), "127.0.0.1"],
        "redis_in_container": in_container,
        # Redis compares SHA-256 digests: the passwords themselves are never written, and
        # the digests are masked and exported as computed from the secrets' lookups.
        "redis_password_sha256": digest("redis_password", secret("redis_password")),
        "redis_admin_password_sha256": digest(
            "redis_admin_password", secret("redis_admin_password")
        ),
    }


def instances(s: RedisSettings, ports: RedisClientSettings) -> dict[str, dict[str, Any]]:
    """Per instance (cache, queue): what redis.conf.j2 varies on."""
    return {
        "cache": {
            "redis_instance_purpose": "cache (evicts its least recently used keys when full)",
            "redis_instance_port": ports.redis_port,
            "redis_instance_pidfile": "/run/redis/redis-server.pid",
            "redis_instance_logfile": "/var/log/redis/redis-server.log",
            "redis_instance_dir": "/var/lib/redis",
            "redis_instance_maxmemory": s.redis_maxmemory,
            "redis_instance_policy": s.redis_maxmemory_policy,
        },
        "queue": {
            "redis_instance_purpose": "job queue (never evicts: jobs and leases stay)",
            "redis_instance_port": ports.redis_queue_port,
            "redis_instance_pidfile": "/run/redis-queue/redis-server.pid",
            "redis_instance_logfile": "/var/log/redis/redis-server-queue.log",
            "redis_instance_dir": "/var/lib/redis/queue",
            "redis_instance_maxmemory": s.redis_queue_maxmemory,
            "redis_instance_policy": "noeviction",
        },
    }


@deploy("Redis")
def cache() -> None:
    s = settings(RedisSettings)
    ports = settings(RedisClientSettings)
    in_container = host.get_fact(IsContainer)
    tvars = template_vars(s, ports, in_container)

    # -- the services' limits, in place before the package first starts them --------------
    limits = {}
    for service, label in ((SERVICE, "Redis"), (QUEUE_SERVICE, "Redis queue")):
        files.directory(
            name=f"Directory for {label} service settings",
            path=f"/etc/systemd/system/{service}.service.d",
        )
        limits[service] = unit(
            f"{label} service limits (open files)",
            "cache/redis-server.override.conf.j2",
            f"/etc/systemd/system/{service}.service.d/90-maha.conf",
            reload_name=f"Load the {label} service limits",
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
    # -- TLS: both instances serve the certificate from the environment's CA (renewed by a
    # run near its expiry); the plain ports are closed ------------------------------------
    certificate = []
    if ports.redis_tls:
        trust_ca()  # redis-cli --tls on the host verifies like any client
        certificate = list(server_certificate("Redis", TLS_DIR, "redis", "redis"))
    per_instance = instances(s, ports)
    _instance(
        "Redis",
        "Configure Redis (bind, auth, memory, AOF)",
        "/etc/redis/redis.conf",
        SERVICE,
        [limits[SERVICE], *certificate],
        {**tvars, **per_instance["cache"]},
    )
    files.directory(
        name="Data directory of the Redis queue",
        path="/var/lib/redis/queue",
        user="redis",
        group="redis",
        mode="750",
    )
    _instance(
        "the Redis queue",
        "Configure the Redis queue (bind, auth, noeviction, AOF)",
        "/etc/redis/redis-queue.conf",
        QUEUE_SERVICE,
        [limits[QUEUE_SERVICE], *certificate],
        {**tvars, **per_instance["queue"]},
    )


def _instance(
    label: str, conf_name: str, dest: str, service: str, limits: list[Any], tvars: dict[str, Any]
) -> None:
    """One Redis instance: its redis.conf, running, restarted for a changed file (AOF, fsync
    every second, keeps the data across)."""
    conf = template(
        conf_name, "cache/redis.conf.j2", dest, mode="640", user="redis", group="redis", **tvars
    )
    systemd.service(name=f"Run {label}", service=service, running=True, enabled=True)
    restart(f"Restart {label} for the new configuration", service, when=[conf, *limits])
