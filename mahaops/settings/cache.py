"""Settings of the cache role (Redis on the cache_servers), and the port its clients share.

Contract with the app role: clients authenticate as Redis's ``default`` user with the
secret ``redis_password`` (``AUTH <password>``, or ``redis://:<password>@host:port/db``).
That user may run everything but ``redis_disabled_commands``; operators have the
``admin`` user (secret ``redis_admin_password``) for the commands denied to clients.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator

from mahaops.settings.models import Settings, group_settings

_REDIS_SIZE = re.compile(r"^\d+(b|k|kb|m|mb|g|gb)?$", re.IGNORECASE)
_COMMAND = re.compile(r"^[a-z]+(\|[a-z-]+)?$")


def _redis_size(value: str) -> str:
    if not _REDIS_SIZE.match(value):
        raise ValueError(f"{value!r} is not a Redis size (e.g. 256mb, 2gb, 0 for no limit)")
    return value.lower()


def _commands(value: list[str]) -> list[str]:
    lowered = [c.lower() for c in value]
    for command in lowered:
        if not _COMMAND.match(command):
            raise ValueError(f"{command!r} is not a Redis command (e.g. flushall, client|kill)")
    return lowered


RedisSize = Annotated[str, AfterValidator(_redis_size)]


@group_settings("all", "local", "aws", "db_servers", "cache_servers")
class RedisClientSettings(Settings):
    """What clients of Redis need too, so it may be set in all.py."""

    redis_port: int = Field(6379, ge=1, le=65535)  # the cache instance; firewall, clients follow
    redis_queue_port: int = Field(6380, ge=1, le=65535)  # the job queue's own instance
    # Both ports speak TLS only (plain TCP closed: `port 0`), with a certificate from the
    # environment's CA that clients verify (rediss://). False: plain TCP on the same ports.
    redis_tls: bool = True

    @field_validator("redis_queue_port")
    @classmethod
    def _ports_differ(cls, value: int, info: ValidationInfo) -> int:
        if value == info.data.get("redis_port"):
            raise ValueError("must differ from redis_port: the queue is a second instance")
        return value


@group_settings("cache_servers")
class RedisSettings(Settings):
    # -- memory and persistence --------------------------------------------------------------
    redis_maxmemory: RedisSize = "256mb"  # cap on data; then redis_maxmemory_policy applies
    redis_maxmemory_policy: Literal[
        "noeviction",
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
    ] = "allkeys-lru"  # the cache instance holds cache entries only: least recently used go
    # The job queue lives in its own instance with `noeviction` (eviction is per instance:
    # a lease with a TTL would be fair game in a shared one, and its job would run twice).
    # When the queue is full, enqueues fail (the web answers 503); nothing queued is lost.
    redis_queue_maxmemory: RedisSize = "256mb"  # cap on the queue instance's data
    redis_appendonly: bool = True  # AOF: every write logged
    redis_appendfsync: Literal["always", "everysec", "no"] = "everysec"  # at most 1 s lost
    redis_save: str = "3600 1 300 100 60 10000"  # RDB snapshots too ("" = none)

    # -- connections -------------------------------------------------------------------------
    redis_databases: int = Field(16, ge=1, le=256)  # numbered databases (SELECT n)
    redis_timeout: int = Field(0, ge=0)  # close idle clients after N s; 0 = never (pub/sub)
    redis_tcp_keepalive: int = Field(300, ge=0)  # seconds; finds dead peers behind NAT
    redis_maxclients: int = Field(10000, ge=1)  # needs redis_limit_nofile above it
    redis_limit_nofile: int = Field(65535, ge=1024)  # systemd LimitNOFILE for redis-server

    # -- security ----------------------------------------------------------------------------
    redis_disabled_commands: Annotated[list[str], AfterValidator(_commands)] = [
        "flushall",
        "flushdb",
        "config",
        "debug",
        "keys",
        "shutdown",
        "monitor",
        "save",
        "bgsave",
        "bgrewriteaof",
        "replicaof",
        "slaveof",
        "sync",
        "psync",
        "module",
        "acl",
        "migrate",
        "failover",
        "client|kill",
    ]  # denied to the default (client) user by ACL; the admin user keeps them

    # -- host --------------------------------------------------------------------------------
    redis_kernel_tuning: bool = True  # overcommit_memory=1, THP never; skipped in containers
    redis_loglevel: Literal["debug", "verbose", "notice", "warning"] = "notice"
