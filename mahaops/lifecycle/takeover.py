"""Replacing a host that keeps data (db, cache, log, storage): the new host on the old one's
volumes.

There is one host of each of these roles, so the old one stops first (two PostgreSQL
servers must never open one data directory), then the new one is created on its data
volumes (``invoke down`` keeps them the same way), converges (the db role adopts kept
data whose configuration is gone), and the hosts that use it move to it: the app servers'
and workers' URLs, every host's log shipping. Clients fail while the data host is away.

How a host gets the old one's data is the kind's (``Lifecycle.create_on_data``): locally
the new container mounts the old one's Docker volumes; on AWS (and the sim) the old db
instance is stopped, its EBS data volume detached, and the new instance launched in the
volume's zone with the volume attached (only db hosts have one there).

For the db host the deploy lock and the audit log (``/var/lib/maha`` on the lock host)
move with it, and the rows of the app's tables are counted before and after.
"""

from __future__ import annotations

import io
import tarfile
import time
from typing import Any

from mahaops.lifecycle import plan as planning
from mahaops.lifecycle.local import Lifecycle, LifecycleError, Row
from mahaops.settings import from_data
from mahaops.settings.app import ReleaseSettings

SERVICES = {"db": "postgresql", "cache": "redis-server", "log": "rsyslog", "storage": "maha-s3"}

# Every table of the public schema with its row count, in one query (no table names typed).
COUNT_ROWS = (
    "select table_name, (xpath('/row/c/text()', query_to_xml(format("
    "'select count(*) as c from %I.%I', table_schema, table_name), false, true, '')))[1]"
    "::text from information_schema.tables where table_schema = 'public' and "
    "table_type = 'BASE TABLE' order by 1"
)


def row_counts(life: Lifecycle, name: str) -> dict[str, int]:
    """Table -> rows in the app's database on db host ``name`` (empty when unreadable)."""
    database = from_data(ReleaseSettings, life.data_of("app")).app_database_name
    code, output = life._exec(
        name, f'cd / && su postgres -c "psql -d {database} -tAF\' \' -c \\"{COUNT_ROWS}\\""'
    )
    if code != 0:
        life.say(f"warning: could not count rows on {name}: {output.strip()[-300:]}")
        return {}
    counts = {}
    for line in output.splitlines():
        table, _, count = line.strip().partition(" ")
        if table and count.isdigit():
            counts[table] = int(count)
    return counts


def kept_state(archive: bytes) -> bytes:
    """Of ``/var/lib/maha`` as a tar archive (``Lifecycle.read_state``), the lock and the
    audit log: the old host's owed restarts stay behind (they were for its own services)."""
    kept = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as source,
        tarfile.open(fileobj=kept, mode="w") as target,
    ):
        for member in source.getmembers():
            parts = member.name.split("/")
            if len(parts) == 1 or parts[1] in ("lock", "audit.jsonl"):
                target.addfile(member, source.extractfile(member) if member.isfile() else None)
    return kept.getvalue()


def takeover(life: Lifecycle, changes: planning.Changes, dry: bool = False) -> None:
    """A new host of ``changes.role`` on the kept volumes of ``changes.remove[0]``."""
    old, new, role_name = changes.remove[0], changes.create[0], changes.role
    peers = list(life.peers(role_name).values())
    if dry:
        life.outcome.rows.append(Row(old, role_name, "would be stopped", "", "then removed"))
        life.outcome.rows.append(
            Row(new, role_name, "would be created", "", f"on {old}'s data volumes")
        )
        names, roles = life.peer_hosts(role_name, peers, [old])
        for name in names:
            life.outcome.rows.append(
                Row(name, "", "would be re-converged", "", f"{', '.join(roles)}: moves to {new}")
            )
        return
    lost = old in changes.lost or not life.reachable(old)
    before: dict[str, int] = {}
    if role_name == "db" and not lost:
        before = row_counts(life, old)
        life.say(f"Rows before, on {old}: {_counts_text(before)}")
    archive = None if lost else life.read_state(old)
    mark = time.monotonic()
    if not lost:
        life.say(f"Stopping {old} ({SERVICES[role_name]} first): its data goes to {new}")
        life._exec(old, f"timeout 120 systemctl stop {SERVICES[role_name]}")
    life.say(f"Creating host {new} on {old}'s data volumes")
    try:
        address = life.create_on_data(role_name, old, new)
    except LifecycleError:
        raise
    except Exception as exc:
        raise LifecycleError(
            f"creating {new} on {old}'s data failed: {exc}. {old} is stopped, its data "
            "untouched: start it again to go back"
        ) from exc
    if archive is not None:
        life.write_state(new, kept_state(archive))  # the lock this run holds, the audit log
    life.outcome.timings["create"] = time.monotonic() - mark
    result = life._deploy(f"Converging base and {role_name}", ["base", role_name], [new])
    if not result.ok:
        raise LifecycleError(
            f"{new} failed its converge on {old}'s data (see the tables above); {old} is "
            f"stopped, its volumes untouched: `docker start` it to go back"
        )
    overrides: dict[str, Any] = {}
    for client in ("app", "worker"):
        overrides.update(life.release_overrides(client))  # clients keep their release
    names, roles = life.peer_hosts(role_name, peers, [old])
    if names:
        result = life._deploy(
            f"Moving its clients to {new}", roles, names, hosts=life.specs([old]),
            overrides=overrides,
        )  # fmt: skip
        if not result.ok:
            raise LifecycleError(
                f"moving clients to {new} failed on "
                f"{', '.join(life._blame(result, names))}: see the tables above"
            )
    life.say(f"Removing {old} (its data volumes stay, now {new}'s)")
    life.discard_replaced(old)
    life.outcome.rows.append(Row(new, role_name, "created", address, f"on {old}'s data"))
    life.outcome.rows.append(Row(old, role_name, "removed", "", "lost" if lost else "stopped"))
    if role_name == "db":
        after = row_counts(life, new)
        life.say(f"Rows after, on {new}: {_counts_text(after)}")
        for table in sorted(set(before) | set(after)):
            same = before.get(table) == after.get(table)
            life.outcome.rows.append(
                Row(
                    table,
                    "table",
                    "rows",
                    "",
                    f"{before.get(table, '?')} before, {after.get(table, '?')} after"
                    + ("" if same or not before else "  DIFFERENT"),
                )
            )
    if "app" in {p.role for p in peers}:
        life.gate("app", [h.name for h in life.hosts() if h.role == "app"])


def _counts_text(counts: dict[str, int]) -> str:
    return ", ".join(f"{t} {n}" for t, n in sorted(counts.items())) or "none read"
