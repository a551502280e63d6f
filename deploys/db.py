"""Database server: PostgreSQL for the app servers and workers, and its nightly backups.

Read top to bottom, it is the runbook: install the chosen major (Debian's package or
the PGDG repository's), tune it to the host, let in only the app servers and workers,
create the users and databases, and schedule pg_dump.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FileContents
from pyinfra.facts.hardware import Cpus, Memory
from pyinfra.facts.server import LinuxDistribution
from pyinfra.operations import files, postgres, systemd

from deploys._backup_store import CLIENT_KEY, CLIENT_SSH_DIR, client_key, store_target
from deploys._common import (
    KEYRINGS,
    apt_repository,
    owed_before,
    reloaded,
    restart,
    template,
    unit,
)
from deploys._tls import server_certificate, trust_ca
from mahaops.context import addresses, settings
from mahaops.secrets import secret
from mahaops.settings.db import PostgresClientSettings, PostgresSettings
from mahaops.templating import render
from operations import apt, ebs
from operations import postgresql as pg
from operations.files import validated_template
from operations.services import RestartsOwed

# Parameters that only a restart applies (pg_settings.context = 'postmaster'): changing
# one of these restarts the server, any other change only reloads it. The reload also
# restarts when the server reports pending_restart, for parameters not listed here.
RESTART_ONLY = frozenset(
    {
        "listen_addresses",
        "port",
        "max_connections",
        "superuser_reserved_connections",
        "shared_buffers",
        "huge_pages",
        "max_worker_processes",
        "max_wal_senders",
        "max_replication_slots",
        "max_prepared_transactions",
        "max_locks_per_transaction",
        "max_pred_locks_per_transaction",
        "max_files_per_process",
        "wal_level",
        "wal_buffers",
        "shared_preload_libraries",
        "autovacuum_max_workers",
        "track_commit_timestamp",
        "archive_mode",
        "unix_socket_directories",
        "shared_memory_type",
        "dynamic_shared_memory_type",
        "cluster_name",
    }
)
PGDG_KEYRING = f"{KEYRINGS}/postgresql.asc"
CHECKCONF = "/usr/local/sbin/maha-pg-checkconf"
INCLUDE_CONF_D = "include_dir = 'conf.d'"  # Debian's clusters have it; adopted ones may not


def tuning(s: PostgresSettings, memory_mb: int, cpus: int) -> dict[str, Any]:
    """Memory and connection settings for a host, pgtune's web profile unless overridden."""
    memory = s.postgresql_memory_mb or memory_mb
    connections = s.postgresql_max_connections or min(1000, max(100, 50 * cpus))
    shared_mb = memory // 4
    # Each connection may run a few sorts/hashes at once in what shared_buffers leaves.
    work_kb = max(4096, (memory - shared_mb) * 1024 // (connections * 3))
    return {
        "max_connections": connections,
        "shared_buffers": s.postgresql_shared_buffers or f"{max(128, shared_mb)}MB",
        "effective_cache_size": s.postgresql_effective_cache_size or f"{memory * 3 // 4}MB",
        "work_mem": s.postgresql_work_mem or f"{work_kb}kB",
        "maintenance_work_mem": (
            s.postgresql_maintenance_work_mem or f"{max(64, min(2048, memory // 16))}MB"
        ),
    }


def _conf_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return f"'{value}'"


def _host_network(address: str) -> str:
    return str(ipaddress.ip_network(address))  # a bare address: /32 or /128


def template_vars(s: PostgresSettings, port: int, ssl: bool = True) -> dict[str, Any]:
    """Variables the db templates see: the settings plus what follows from host and inventory."""
    private = host.data.get("private_address")
    distribution = host.get_fact(LinuxDistribution)
    tls_dir = f"/etc/postgresql/{s.postgresql_version}/main/tls"
    return {
        **s.model_dump(),
        "postgresql_port": port,
        "postgresql_ssl": ssl,
        "postgresql_tls_dir": tls_dir,
        "postgresql_distribution_codename": distribution["release_meta"].get("CODENAME", ""),
        "postgresql_pgdg_keyring": PGDG_KEYRING,
        "postgresql_conf_dir": f"/etc/postgresql/{s.postgresql_version}/main",
        "postgresql_listen_addresses": ["localhost", *([str(private)] if private else [])],
        "postgresql_tuning": tuning(s, host.get_fact(Memory) or 1024, host.get_fact(Cpus) or 1),
        "postgresql_tuning_memory_mb": s.postgresql_memory_mb or host.get_fact(Memory),
        "postgresql_tuning_cpus": host.get_fact(Cpus),
        "postgresql_extra_conf": {
            name: _conf_value(value) for name, value in s.postgresql_extra_settings.items()
        },
        "postgresql_client_addresses": [
            _host_network(a) for a in addresses("app_servers", "workers")
        ],
        "postgresql_hba_databases": [d.name for d in s.postgresql_databases],
        "postgresql_hba_users": [u.name for u in s.postgresql_users],
        "postgresql_backup_databases": [d.name for d in s.postgresql_databases],
        **offhost_vars(),
    }


def offhost_vars() -> dict[str, Any]:
    """Where the backup script puts its off-host copies ("" target: nowhere)."""
    store = store_target()
    return {
        "postgresql_backup_offhost_target": f"{store.user}@{store.address}" if store else "",
        "postgresql_backup_offhost_port": store.port if store else "",
        "postgresql_backup_offhost_key": CLIENT_KEY if store else "",
        "postgresql_backup_offhost_ssh_dir": CLIENT_SSH_DIR,
    }


def parse_conf(lines: list[str] | None) -> dict[str, str]:
    """``name = value`` lines of a postgresql.conf file, comments left out."""
    found = {}
    for line in lines or []:
        text = line.split("#", 1)[0].strip()
        name, sep, value = text.partition("=")
        if sep:
            found[name.strip()] = value.strip()
    return found


def restart_reasons(current: list[str] | None, wanted: str) -> list[str]:
    """Restart-only parameters whose value the new drop-in changes."""
    before, after = parse_conf(current), parse_conf(wanted.splitlines())
    return sorted(k for k in RESTART_ONLY if before.get(k) != after.get(k) and k in after)


def pgdg_repository(tvars: dict[str, Any]) -> None:
    """The PostgreSQL project's apt repository, trusted for its own key only."""
    repo = apt_repository(
        "Add the PGDG apt repository",
        key_name="Add the PGDG signing key",
        key_url=tvars["postgresql_pgdg_key_url"],
        keyring=PGDG_KEYRING,
        src="db/pgdg.sources.j2",
        dest="/etc/apt/sources.list.d/pgdg.sources",
        fingerprint=tvars["postgresql_pgdg_key_fingerprint"],
        fingerprint_setting="postgresql_pgdg_key_fingerprint",
        **tvars,
    )
    apt.update(name="Read the PGDG package lists", _if=repo.did_change)


@deploy("PostgreSQL")
def db() -> None:
    s = settings(PostgresSettings)
    client = settings(PostgresClientSettings)
    port = client.postgresql_port
    tvars = template_vars(s, port, client.postgresql_ssl)
    version = s.postgresql_version
    cluster = f"postgresql@{version}-main"
    conf_dir = f"/etc/postgresql/{version}/main"

    # -- on AWS: data and dumps on their own EBS volume, kept when the instance goes -------
    if volume := host.data.get("ebs_data_volume_id"):
        ebs.mounted(
            name="PostgreSQL data and dumps on their EBS volume",
            volume_id=volume,
            path="/var/lib/postgresql",
        )

    # -- packages: Debian's own major, or PGDG's ------------------------------------------
    if version != s.postgresql_distribution_version:
        pgdg_repository(tvars)
    files.directory(
        name="Directory for cluster defaults", path="/etc/postgresql-common/createcluster.d"
    )
    template(
        "New clusters: UTF-8 with data checksums",
        "db/createcluster.conf.j2",
        "/etc/postgresql-common/createcluster.d/90-maha.conf",
        **tvars,
    )
    apt.packages(
        name=f"Install PostgreSQL {version}",
        packages=[
            f"postgresql-{version}",
            f"postgresql-client-{version}",
            *(["python3-boto3"] if s.postgresql_backup_s3_bucket else []),
        ],
        update=True,
        cache_time=3600,
        no_recommends=True,
    )
    pg.adopt_data(name="Adopt data kept from a former host", version=version)

    # -- TLS: a certificate from the environment's CA (renewed by a run near its expiry) ---
    certificate = []
    if client.postgresql_ssl:
        trust_ca()  # psql on the host verifies the server like any client
        certificate = list(
            server_certificate("PostgreSQL", tvars["postgresql_tls_dir"], "postgres", "postgres")
        )

    # -- configuration: tuning and who may connect ----------------------------------------
    conf_path = f"{conf_dir}/conf.d/90-maha.conf"
    wanted = render("db/postgresql.conf.j2", **tvars)
    restart_for = restart_reasons(host.get_fact(FileContents, path=conf_path), wanted)
    main_conf = host.get_fact(FileContents, path=f"{conf_dir}/postgresql.conf")
    if main_conf is not None and not any(x.startswith(INCLUDE_CONF_D) for x in main_conf):
        restart_for = ["include_dir"]  # an adopted cluster: conf.d is read from now on
    include = files.line(
        name="Read settings from conf.d",
        path=f"{conf_dir}/postgresql.conf",
        line=INCLUDE_CONF_D,
    )
    template(
        "Settings check (the server's own parser, beside the running server)",
        "db/maha-pg-checkconf.sh.j2",
        CHECKCONF,
        mode="755",
        **tvars,
    )
    # Checked before it is put in place: a misspelled or invalid setting fails the run
    # naming it, and never reaches a reload or a later restart.
    conf = validated_template(
        name="Tune PostgreSQL and listen on the private address",
        src="db/postgresql.conf.j2",
        dest=conf_path,
        validate=f"{CHECKCONF} %s",
        user="postgres",
        group="postgres",
        **tvars,
    )
    hba = template(
        "Admit only app servers and workers (pg_hba.conf)",
        "db/pg_hba.conf.j2",
        f"{conf_dir}/pg_hba.conf",
        mode="640",
        user="postgres",
        group="postgres",
        **tvars,
    )
    systemd.service(name="Run PostgreSQL", service=cluster, running=True, enabled=True)
    pending = host.get_fact(pg.PostgresPendingRestart, port=port)
    if pending:  # left by an earlier reload: nothing but a restart applies it
        systemd.service(
            name=f"Restart PostgreSQL for pending {', '.join(pending)}",
            service=cluster,
            restarted=True,
        )
    elif restart_for or cluster in host.get_fact(RestartsOwed):  # owed: an earlier run died
        restart(
            f"Restart PostgreSQL for {', '.join(restart_for or ['a restart still owed'])}",
            cluster,
            when=[include if restart_for == ["include_dir"] else conf],
        )
    else:
        # Owed from before its inputs change: a run that dies before the reload leaves it
        # to the next (a renewed certificate is read on reload too).
        owed_before(cluster, [conf, *certificate], reload=True)
        pg.reload(
            name="Reload PostgreSQL for new settings",
            service=cluster,
            when=[conf, *certificate],
            port=port,
        )
    reloaded("Reload PostgreSQL for new access rules", cluster, when=[hba])

    # -- users and databases --------------------------------------------------------------
    for user in s.postgresql_users:
        pg.role(
            name=f"PostgreSQL user {user.name}",
            role=user.name,
            password=secret(f"postgresql_password_{user.name}"),
            connection_limit=user.connection_limit,
            port=port,
        )
    for database in s.postgresql_databases:
        postgres.database(
            name=f"PostgreSQL database {database.name} (owner {database.owner})",
            database=database.name,
            owner=database.owner,
            encoding=database.encoding,
            template="template0",  # the only template any encoding may be copied from
            psql_port=port,
            _sudo_user="postgres",
            _chdir="/",
        )

    # -- backups: nightly pg_dump -Fc and the roles, each read back, kept on the host, and
    # copied off the host where the db host cannot delete them (S3, or the log server) ----
    if not s.postgresql_backup_enabled:
        for timer in ("maha-pg-backup.timer", "maha-pg-backup-verify.timer"):
            systemd.service(
                name=f"No scheduled backups ({timer})",
                service=timer,
                running=False,
                enabled=False,
            )
        return
    files.directory(
        name="Backup directory",
        path=s.postgresql_backup_dir,
        user="postgres",
        group="postgres",
        mode="700",
    )
    if tvars["postgresql_backup_offhost_target"]:
        client_key()
    template(
        "Backup settings",
        "db/backup.env.j2",
        "/etc/default/maha-pg-backup",
        **tvars,
    )
    template(
        "Backup script",
        "db/maha-pg-backup.py.j2",
        "/usr/local/sbin/maha-pg-backup",
        mode="755",
        **tvars,
    )
    unit(
        "Backup service",
        "db/maha-pg-backup.service.j2",
        "/etc/systemd/system/maha-pg-backup.service",
        reload_name="Load the new backup service",
        **tvars,
    )
    timer_unit = template(
        "Backup timer",
        "db/maha-pg-backup.timer.j2",
        "/etc/systemd/system/maha-pg-backup.timer",
        **tvars,
    )
    _scheduled(
        timer_unit,
        "maha-pg-backup.timer",
        "Load the new backup schedule",
        "Schedule nightly backups",
    )
    # -- the weekly restore check, and a failed backup or check logged at error level -----
    unit(
        "Report a failed backup at error level",
        "db/maha-pg-backup-failed@.service.j2",
        "/etc/systemd/system/maha-pg-backup-failed@.service",
        reload_name="Load the backup failure report",
        **tvars,
    )
    unit(
        "Restore check service",
        "db/maha-pg-backup-verify.service.j2",
        "/etc/systemd/system/maha-pg-backup-verify.service",
        reload_name="Load the new restore check service",
        **tvars,
    )
    verify_timer = template(
        "Restore check timer",
        "db/maha-pg-backup-verify.timer.j2",
        "/etc/systemd/system/maha-pg-backup-verify.timer",
        **tvars,
    )
    _scheduled(
        verify_timer,
        "maha-pg-backup-verify.timer",
        "Load the new restore check schedule",
        "Schedule weekly restore checks",
    )


def _scheduled(timer_file: OperationMeta, timer: str, load_name: str, run_name: str) -> None:
    """A timer unit loaded again when its file changed (or that load is still owed), and
    enabled and started."""
    restart(load_name, timer, when=[timer_file], daemon_reload=True)
    systemd.service(name=run_name, service=timer, running=True, enabled=True)
