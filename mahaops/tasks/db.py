"""Tasks for database backups: ``invoke db.backup [--verify]`` and ``invoke db.restore``.

Both reach the db host over SSH with Fabric, using what the inventory says about it
(the same connection data pyinfra uses), and work as the ``postgres`` user there.
Dumps are the nightly timer's: ``<postgresql_backup_dir>/<database>/<database>-<UTC>.dump``.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit, UnexpectedExit
from invoke.tasks import task
from rich.table import Table

from mahaops.hosts import HostSpec, discover, kind_of
from mahaops.settings import GroupData, SettingsError, from_data
from mahaops.settings.db import PostgresClientSettings, PostgresSettings
from mahaops.tasks._common import ENV_HELP, connect, masked_console

HOST_HELP = "db host to work on (default: the first of db_servers)"
SERVICE = "maha-pg-backup.service"
VERIFY_SERVICE = "maha-pg-backup-verify.service"


@dataclass(frozen=True)
class DbHost:
    spec: HostSpec
    settings: PostgresSettings
    port: int


@dataclass(frozen=True)
class Dump:
    database: str
    path: str
    size: int
    taken: datetime


def db_host(env: str, name: str = "") -> DbHost:
    """The db host of ``env`` named ``name`` (or the first), with its checked settings."""
    group_data = GroupData()
    hosts = [h for h in discover(kind_of(env, group_data.files), env) if "db_servers" in h.groups]
    if not hosts:
        raise Exit(f"error: no db host in environment {env!r} (is it up?)", code=1)
    if name:
        hosts = [h for h in hosts if h.name == name]
        if not hosts:
            raise Exit(f"error: no db host named {name!r} in environment {env!r}", code=1)
    spec = sorted(hosts, key=lambda h: h.name)[0]
    data = group_data.merged(spec.groups, spec.data)
    return DbHost(
        spec,
        from_data(PostgresSettings, data),
        from_data(PostgresClientSettings, data).postgresql_port,
    )


def _as_postgres(command: str) -> str:
    # From / so that postgres, who cannot read the login user's home, starts without a warning.
    return "sh -c " + shlex.quote(f"cd / && exec runuser -u postgres -- {command}")


def list_dumps(conn: object, backup_dir: str) -> list[Dump]:
    """Every complete dump on the host, oldest first."""
    listing = conn.sudo(  # type: ignore[attr-defined]
        f"find {shlex.quote(backup_dir)} -mindepth 2 -maxdepth 2 -name '*.dump' "
        "-printf '%T@ %s %p\\n'",
        hide=True,
        warn=True,
    ).stdout
    dumps = []
    for line in listing.splitlines():
        stamp, size, path = line.split(" ", 2)
        database = path.rsplit("/", 2)[-2]
        dumps.append(Dump(database, path, int(size), datetime.fromtimestamp(float(stamp), UTC)))
    return sorted(dumps, key=lambda d: d.taken)


def _table(title: str, dumps: list[Dump]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("database", "dump", "size", "taken (UTC)"):
        table.add_column(column, justify="right" if column == "size" else "left")
    for dump in dumps:
        table.add_row(
            dump.database,
            dump.path.rsplit("/", 1)[-1],
            f"{dump.size:,} B",
            dump.taken.strftime("%Y-%m-%d %H:%M:%S"),
        )
    return table


def _run_unit(conn: object, name: str, unit: str, what: str) -> None:
    """Start a oneshot unit (`start` returns once it is done); its journal when it failed."""
    try:
        conn.sudo(f"systemctl start {unit}", hide=True)  # type: ignore[attr-defined]
    except UnexpectedExit:
        log = conn.sudo(  # type: ignore[attr-defined]
            f"journalctl -u {unit} -n 20 --no-pager", hide=True, warn=True
        ).stdout
        raise Exit(f"error: {what} failed on {name}:\n{log}", code=1) from None


def verify_table(title: str, checked: dict[str, Any]) -> Table:
    """The restore check's figures: rows of each table at dump time and once restored."""
    table = Table(title=title, title_justify="left")
    for column in ("database", "table", "rows dumped", "rows restored", "check"):
        table.add_column(column, justify="right" if column.startswith("rows") else "left")
    for db in checked.get("databases", []):
        if "error" in db:
            table.add_row(db["database"], "", "", "", f"[red]{db['error']}[/]")
            continue
        for t in db["tables"] or [{"table": "(no tables)", "source": 0, "restored": 0}]:
            table.add_row(
                db["database"],
                t["table"],
                f"{t['source']:,}" if t["source"] is not None else "-",
                f"{t['restored']:,}" if t["restored"] is not None else "-",
                "ok" if t["source"] == t["restored"] else "[red]differs[/]",
            )
    return table


@task(
    help={
        "env": ENV_HELP,
        "host": HOST_HELP,
        "verify": "then restore the new dumps into scratch databases and compare row counts",
    }
)
def backup(c: Context, env: str = "local", host: str = "", verify: bool = False) -> None:
    """Back up every database now: pg_dump -Fc, exactly as the nightly timer does."""
    console = masked_console()
    target = db_host(env, host)
    name = target.spec.name
    backup_dir = target.settings.postgresql_backup_dir
    with connect(target.spec) as conn:
        with console.status(f"Backing up on {name}"):
            _run_unit(conn, name, SERVICE, "the backup")
        dumps = list_dumps(conn, backup_dir)
        newest = {d.database: d for d in dumps}  # sorted oldest first: the last one wins
        console.print(_table(f"Backups on {name} (newest)", list(newest.values())))
        if not verify:
            return
        with console.status(f"Restoring the new dumps into scratch databases on {name}"):
            failed = conn.sudo(f"systemctl start {VERIFY_SERVICE}", hide=True, warn=True).failed
            found = conn.sudo(
                f"cat {shlex.quote(backup_dir + '/verify.json')}", hide=True, warn=True
            ).stdout
    try:
        checked = json.loads(found)
    except json.JSONDecodeError:
        raise Exit(f"error: the restore check left no figures on {name}", code=1) from None
    restored = ", ".join(d.get("dump", "?") for d in checked.get("databases", []))
    title = f"Restore check on {name} ({checked.get('checked', '')}: {restored})"
    console.print(verify_table(title, checked))
    if failed or not checked.get("ok"):
        raise Exit(f"error: the restore check failed on {name} (journalctl -u {VERIFY_SERVICE})")
    console.print("Every table restored with the rows it had when it was dumped.")


@task(
    help={
        "env": ENV_HELP,
        "host": HOST_HELP,
        "database": "database to restore (default: every database of the db role)",
        "file": "dump file name in the backup directory (default: the newest of each database)",
        "yes": "do not ask for confirmation",
    }
)
def restore(
    c: Context,
    env: str = "local",
    host: str = "",
    database: str = "",
    file: str = "",
    yes: bool = False,
) -> None:
    """Restore databases from their dumps, replacing what they hold now (asks first)."""
    console = masked_console()
    try:
        target = db_host(env, host)
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    known = [d.name for d in target.settings.postgresql_databases]
    wanted = [database] if database else known
    if database and database not in known:
        raise Exit(f"error: {database!r} is not a database of the db role ({known})", code=2)
    with connect(target.spec) as conn:
        dumps = list_dumps(conn, target.settings.postgresql_backup_dir)
        chosen = []
        for name in wanted:
            mine = [d for d in dumps if d.database == name]
            if file:
                mine = [d for d in mine if d.path.rsplit("/", 1)[-1] == file]
            if not mine:
                what = f"dump {file!r}" if file else "dump"
                raise Exit(f"error: no {what} of {name!r} on {target.spec.name}", code=1)
            chosen.append(mine[-1])
        console.print(_table(f"To restore on {target.spec.name}", chosen))
        if not yes:
            if not sys.stdin.isatty():
                raise Exit("error: restoring replaces data: confirm with --yes", code=1)
            answer = input("Replace these databases' current contents? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                raise Exit("aborted", code=1)
        for dump in chosen:
            with console.status(f"Restoring {dump.database}"):
                # One transaction: a failed restore leaves the database as it was.
                conn.sudo(
                    _as_postgres(
                        f"pg_restore -p {target.port} --clean --if-exists --single-transaction "
                        f"--exit-on-error -d {shlex.quote(dump.database)} "
                        f"{shlex.quote(dump.path)}"
                    ),
                    hide=True,
                )
            console.print(f"Restored [bold]{dump.database}[/] from {dump.path}")


ns = Collection("db", backup, restore)
