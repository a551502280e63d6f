"""Settings of the db role (PostgreSQL on the db_servers), and the port its clients share.

Contract with the app role: each user's password is the secret
``postgresql_password_<user>`` (generated once, kept in the secrets store); the
default database ``maha`` is owned by ``maha_app``.
"""

from __future__ import annotations

import re
from typing import Annotated, Self

from pydantic import AfterValidator, Field, model_validator

from mahaops.settings.base import UserName
from mahaops.settings.models import Record, Settings, group_settings

SUPPORTED_MAJORS = range(12, 18)  # PostgreSQL majors the role installs (PGDG has them all)

_PG_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PG_SIZE = re.compile(r"^\d+(kB|MB|GB|TB)$")
_PG_PARAM = re.compile(r"^[a-z_][a-z0-9_.]*$")


def _major(value: int) -> int:
    if value not in SUPPORTED_MAJORS:
        raise ValueError(
            f"PostgreSQL {value} is not supported "
            f"(supported majors: {SUPPORTED_MAJORS.start}-{SUPPORTED_MAJORS.stop - 1})"
        )
    return value


def _pg_name(value: str) -> str:
    if not _PG_NAME.match(value):
        raise ValueError(f"{value!r} is not a plain PostgreSQL name (a-z, 0-9, _; 63 at most)")
    return value


def _fingerprint(value: str) -> str:
    if not re.fullmatch(r"[0-9A-F]{40}", value):
        raise ValueError(f"{value!r} is not a key fingerprint (40 upper-case hex digits)")
    return value


def _pg_size(value: str) -> str:
    if not _PG_SIZE.match(value):
        raise ValueError(f"{value!r} is not a PostgreSQL size (e.g. 512MB, 4GB, 64kB)")
    return value


def _pg_params(value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
    for name, setting in value.items():
        if not _PG_PARAM.match(name):
            raise ValueError(f"{name!r} is not a PostgreSQL parameter name")
        if isinstance(setting, str) and ("\n" in setting or "'" in setting):
            raise ValueError(f"{name}: values are single lines without quotes")
    return value


PgName = Annotated[str, AfterValidator(_pg_name)]
PgSize = Annotated[str, AfterValidator(_pg_size)]


class PostgresDatabase(Record):
    """A database the role creates: ``{"name": "maha", "owner": "maha_app"}``."""

    name: PgName
    owner: PgName = "postgres"  # a user from postgresql_users (or postgres)
    encoding: str = "UTF8"  # fixed at creation; never changed afterwards


class PostgresUser(Record):
    """A login role; its password is the secret ``postgresql_password_<name>``."""

    name: PgName
    connection_limit: int = Field(-1, ge=-1)  # -1 = no limit of its own


@group_settings("all", "local", "aws", "db_servers", "cache_servers")
class PostgresClientSettings(Settings):
    """What clients of PostgreSQL need too, so it may be set in all.py."""

    postgresql_port: int = Field(5432, ge=1, le=65535)  # server port; firewall and clients follow
    # TLS with a certificate from the environment's CA; app servers and workers are admitted
    # over TLS only (hostssl) and verify the server (sslmode=verify-full). False: plain TCP.
    postgresql_ssl: bool = True


@group_settings("all", "local", "aws", "db_servers", "log_servers")
class PostgresBackupOffhostSettings(Settings):
    """Off-host copies of the dumps on the log server, which the db hosts may put but never
    delete or overwrite: read by the db role (the pushing side) and the log role (the store),
    so set it in all.py or an overlay (local.py turns it on)."""

    # Push each dump that reads back (and the roles) to the log server's backup store, when
    # the inventory has a log server; AWS copies to S3 instead (postgresql_backup_s3_bucket).
    postgresql_backup_offhost: bool = False
    postgresql_backup_offhost_user: UserName = "maha-backup"  # store login: its forced command only
    # The store user's home on the log server; dumps land in <dir>/archive/<database>/
    postgresql_backup_offhost_dir: str = Field("/var/lib/maha-backup", pattern=r"^/[\w./-]+$")
    postgresql_backup_offhost_keep_days: int = Field(30, ge=1)  # pruned by the store host itself
    postgresql_backup_offhost_max_mb: int = Field(20480, ge=1)  # the store refuses larger files
    # A put that would leave less than this free on the store's disk is refused: the db host
    # may add files, but never take the log server's room for its own logs.
    postgresql_backup_offhost_min_free_mb: int = Field(2048, ge=0)


@group_settings("db_servers")
class PostgresSettings(Settings):
    # -- version -----------------------------------------------------------------------------
    postgresql_version: Annotated[int, AfterValidator(_major)] = 15  # major, 12-17
    postgresql_distribution_version: int = 15  # Debian 12's own; other majors come from PGDG
    postgresql_pgdg_url: str = "https://apt.postgresql.org/pub/repos/apt"  # PGDG apt repository
    postgresql_pgdg_key_url: str = "https://www.postgresql.org/media/keys/ACCC4CF8.asc"
    # PGDG's signing key, as the PostgreSQL wiki (Apt) publishes it: checked before use
    postgresql_pgdg_key_fingerprint: Annotated[str, AfterValidator(_fingerprint)] = (
        "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8"
    )
    postgresql_data_checksums: bool = True  # initdb --data-checksums for new clusters
    postgresql_locale: str = "C.UTF-8"  # new clusters: UTF8, sorted by code point

    # -- access ------------------------------------------------------------------------------
    postgresql_hba_localhost: bool = True  # users may also log in over 127.0.0.1 / ::1
    postgresql_databases: list[PostgresDatabase] = []  # created, never dropped
    postgresql_users: list[PostgresUser] = []  # login roles, scram-sha-256 passwords

    # -- tuning: None = derived from the host's memory and CPUs -------------------------------
    postgresql_memory_mb: int | None = Field(None, ge=256)  # memory to plan for; None = all
    postgresql_max_connections: int | None = Field(None, ge=10, le=10000)  # None: 50 per CPU
    postgresql_shared_buffers: PgSize | None = None  # None: 25% of memory (restart to change)
    postgresql_effective_cache_size: PgSize | None = None  # None: 75% of memory
    postgresql_work_mem: PgSize | None = None  # None: what is left over 3 sorts per connection
    postgresql_maintenance_work_mem: PgSize | None = None  # None: 1/16 of memory, 2GB at most
    postgresql_extra_settings: Annotated[
        dict[str, str | int | float | bool], AfterValidator(_pg_params)
    ] = {}  # more postgresql.conf parameters, e.g. {"log_min_duration_statement": 500}

    # -- backups -----------------------------------------------------------------------------
    postgresql_backup_enabled: bool = True  # nightly pg_dump -Fc of every database
    postgresql_backup_schedule: str = "*-*-* 02:30:00"  # systemd OnCalendar
    # systemd OnCalendar of the restore check (newest dumps into a scratch db, rows counted)
    postgresql_backup_verify_schedule: str = "Sun *-*-* 04:30:00"
    postgresql_backup_dir: str = "/var/lib/postgresql/backups"  # on the data volume locally
    postgresql_backup_keep_days: int = Field(7, ge=1)  # local dumps older than this go
    postgresql_backup_s3_bucket: str = ""  # "" = on the host only; else also uploaded (AWS)
    postgresql_backup_s3_prefix: str = "postgresql/"  # key prefix in the bucket
    # Uploaded dumps are never deleted by the host (its role may put and list only): the
    # bucket's lifecycle expires them after the environment's backup_retention_days.

    @model_validator(mode="after")
    def _owners_exist(self) -> Self:
        users = {u.name for u in self.postgresql_users} | {"postgres"}
        for database in self.postgresql_databases:
            if database.owner not in users and self.postgresql_users:
                raise ValueError(
                    f"database {database.name!r}: owner {database.owner!r} is not in "
                    "postgresql_users"
                )
        return self
