"""The db role on real hosts: PostgreSQL for app servers and workers only, data that
survives re-deploys, restarts and setting changes, restart-or-reload, backups, secrets."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT, tls
from mahaops.local.hosts import LocalHost
from mahaops.secrets import LocalSecretStore
from tests.checks import converge, ports
from tests.checks import db as checks
from tests.conftest import ServiceTier, Testbed, service_tier

pytestmark = pytest.mark.testbed

# Operations pyinfra marks non-idempotent that the db role uses, and why that is safe.
JUSTIFIED_NON_IDEMPOTENT = {
    "systemd.daemon_reload": "guarded by _if on the backup unit file changing",
}

# What a change to a reload-only setting plans and does.
RELOADED = [
    "PostgreSQL | Tune PostgreSQL and listen on the private address",
    "PostgreSQL | Reload PostgreSQL for new settings",
]


def password(testbed: Testbed) -> str:
    value = LocalSecretStore(testbed.env).get("postgresql_password_maha_app")
    assert value, "the db deploy did not create the maha_app password"
    return value


def app_sql(testbed: Testbed, tier: ServiceTier, sql: str) -> str:
    """``sql`` as the app's database user, from the app server; it must succeed."""
    code, out = checks.psql(
        testbed, tier.app, tier.server.private_address, sql, password=password(testbed)
    )
    assert code == 0, out
    return out.strip()


@pytest.fixture(scope="module")
def tier(testbed: Testbed) -> ServiceTier:
    tier, first = service_tier(testbed, "db", "dbt")
    assert first.named("Restart PostgreSQL", host=tier.server.name), "new settings need a restart"
    return tier


def test_fresh_host_converges_to_the_db_promises(testbed: Testbed, tier: ServiceTier) -> None:
    checks.check_db(testbed, tier.server, tier.app, password(testbed))


def test_second_converge_changes_nothing(testbed: Testbed, tier: ServiceTier) -> None:
    converge.assert_idempotent(
        testbed,
        [tier.server.name],
        ["base", "db"],
        justified=JUSTIFIED_NON_IDEMPOTENT,
        record=tier.record,
    )


def test_hosts_outside_app_servers_and_workers_are_refused(
    testbed: Testbed, tier: ServiceTier
) -> None:
    # The firewall drops them first...
    assert "timeout expired" in checks.outsider_error(
        testbed, tier.server, tier.outsider, password(testbed)
    )
    # ...and with the port opened to everyone, pg_hba.conf still refuses them.
    opened = tier.record(
        testbed.deploy(
            roles=["base"],
            limit=[tier.server.name],
            overrides={"base_firewall_extra_ports": [5432]},
        )
    )
    assert opened.ok, opened.output
    try:
        refused = checks.outsider_error(testbed, tier.server, tier.outsider, password(testbed))
        assert "no pg_hba.conf entry" in refused, refused
    finally:
        closed = tier.record(testbed.deploy(roles=["base"], limit=[tier.server.name]))
        assert closed.ok, closed.output


def test_dry_run_shows_the_diff_and_changes_nothing(testbed: Testbed, tier: ServiceTier) -> None:
    conf = "/etc/postgresql/15/main/conf.d/90-maha.conf"
    converge.assert_dry_run(
        testbed,
        tier.server,
        conf,
        roles=["db"],
        overrides={"postgresql_work_mem": "8MB"},
        changed=RELOADED,
        shows=[f"Will modify {conf}", "+ work_mem = 8MB", "- work_mem = "],
        record=tier.record,
    )


def test_backup_and_restore_bring_rows_back(testbed: Testbed, tier: ServiceTier) -> None:
    secret = password(testbed)
    app_sql(
        testbed,
        tier,
        "CREATE TABLE IF NOT EXISTS campaigns (id int PRIMARY KEY, name text);"
        "INSERT INTO campaigns VALUES (1, 'spring'), (2, 'summer') ON CONFLICT DO NOTHING",
    )

    backup = invoke("db.backup", "--env", testbed.env, "--host", tier.server.name)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    assert "maha-" in backup.stdout and ".dump" in backup.stdout

    # Damage: rows gone, table altered, another table dropped.
    app_sql(
        testbed,
        tier,
        "DELETE FROM campaigns WHERE id = 1; ALTER TABLE campaigns ADD COLUMN junk int",
    )

    unconfirmed = invoke("db.restore", "--env", testbed.env, "--host", tier.server.name)
    assert unconfirmed.returncode != 0 and "--yes" in unconfirmed.stderr + unconfirmed.stdout

    restore = invoke("db.restore", "--env", testbed.env, "--host", tier.server.name, "--yes")
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert (
        app_sql(testbed, tier, "SELECT string_agg(name, ',' ORDER BY id) FROM campaigns")
        == "spring,summer"
    )
    columns = checks.superuser_sql(
        testbed,
        tier.server,
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'campaigns'",
        database="maha",
    )
    assert columns == "2", "the restore kept the altered table"
    assert secret not in backup.stdout + restore.stdout + backup.stderr + restore.stderr


BACKUP_DIR = "/var/lib/postgresql/backups"
CONF = "/etc/postgresql/15/main/conf.d/90-maha.conf"


def test_backups_read_back_hold_the_roles_and_restore_with_their_rows(
    testbed: Testbed, tier: ServiceTier
) -> None:
    app_sql(
        testbed,
        tier,
        "CREATE TABLE IF NOT EXISTS campaigns (id int PRIMARY KEY, name text);"
        "INSERT INTO campaigns VALUES (1, 'spring'), (2, 'summer') ON CONFLICT DO NOTHING;"
        "CREATE TABLE IF NOT EXISTS orders AS SELECT g AS n FROM generate_series(1, 300) g",
    )
    rows = {
        "public.campaigns": int(app_sql(testbed, tier, "SELECT count(*) FROM campaigns")),
        "public.orders": int(app_sql(testbed, tier, "SELECT count(*) FROM orders")),
    }

    verified = invoke("db.backup", "--env", testbed.env, "--host", tier.server.name, "--verify")

    out = verified.stdout + verified.stderr
    assert verified.returncode == 0, out
    assert "Restore check on" in out and "differs" not in out, out
    for table, count in rows.items():
        line = next((x for x in out.splitlines() if table in x), "")
        assert line.count(f"{count:,}") == 2 and "ok" in line, out  # dumped and restored
    newest = testbed.exec(tier.server, f"ls -t {BACKUP_DIR}/maha/*.dump | head -1").strip()
    listed = testbed.exec(tier.server, f"runuser -u postgres -- pg_restore --list {newest}")
    assert "TABLE DATA public campaigns" in listed and "TABLE DATA public orders" in listed
    globals_sql = testbed.exec(tier.server, f"cat $(ls -t {BACKUP_DIR}/globals/*.sql | head -1)")
    assert "CREATE ROLE maha_app" in globals_sql
    modes = testbed.exec(tier.server, f"stat -c '%a %U' {newest} $(ls {BACKUP_DIR}/globals/*.sql)")
    assert set(modes.split("\n")) - {""} == {"600 postgres"}, modes
    # The scratch database is gone again.
    assert "maha_restorecheck" not in checks.superuser_sql(
        testbed, tier.server, "SELECT string_agg(datname, ',') FROM pg_database"
    )


def _errors_since(testbed: Testbed, tier: ServiceTier, since: str) -> str:
    return testbed.exec(
        tier.server, f"journalctl -p err --since '{since}' --no-pager -o cat", check=False
    )


def test_a_failed_backup_prunes_nothing_and_is_logged_at_error_level(
    testbed: Testbed, tier: ServiceTier
) -> None:
    old = f"{BACKUP_DIR}/maha/maha-20000101T000000Z.dump"
    testbed.exec(
        tier.server,
        f"cp $(ls -t {BACKUP_DIR}/maha/*.dump | head -1) {old} && "
        f"chown postgres: {old} && touch -d '30 days ago' {old}",
    )
    since = testbed.exec(tier.server, "date '+%Y-%m-%d %H:%M:%S'").strip()
    # Nothing may connect to the database: pg_dump fails as it would on a broken server.
    checks.superuser_sql(testbed, tier.server, "ALTER DATABASE maha ALLOW_CONNECTIONS false")
    try:
        run = testbed.exec(
            tier.server, "systemctl start maha-pg-backup.service; echo rc=$?", check=False
        )
    finally:
        checks.superuser_sql(testbed, tier.server, "ALTER DATABASE maha ALLOW_CONNECTIONS true")
    assert "rc=0" not in run, run
    assert testbed.exec(tier.server, f"ls {old}").strip() == old, "pruned without a good dump"

    def reported() -> bool:
        return "maha-pg-backup.service failed" in _errors_since(testbed, tier, since)

    assert wait_until(reported, 20), _errors_since(testbed, tier, since)
    testbed.exec(tier.server, f"rm -f {old}")


def test_a_corrupted_dump_fails_the_restore_check_at_error_level(
    testbed: Testbed, tier: ServiceTier
) -> None:
    newest = testbed.exec(tier.server, f"ls -t {BACKUP_DIR}/maha/*.dump | head -1").strip()
    since = testbed.exec(tier.server, "date '+%Y-%m-%d %H:%M:%S'").strip()
    # Damage in the middle of the data, as a bad disk block would.
    size = int(testbed.exec(tier.server, f"stat -c %s {newest}"))
    testbed.exec(
        tier.server,
        f"head -c 512 /dev/urandom | dd of={newest} bs=1 seek={size // 2} conv=notrunc 2>/dev/null",
    )
    try:
        run = testbed.exec(
            tier.server, "systemctl start maha-pg-backup-verify.service; echo rc=$?", check=False
        )
        assert "rc=0" not in run, run

        def reported() -> bool:
            return "maha-pg-backup-verify.service failed" in _errors_since(testbed, tier, since)

        assert wait_until(reported, 20), _errors_since(testbed, tier, since)
        verdict = testbed.exec(tier.server, f"cat {BACKUP_DIR}/verify.json")
        assert '"ok": false' in verdict, verdict
    finally:
        testbed.exec(tier.server, f"rm -f {newest}")


def test_an_invalid_setting_fails_the_run_naming_it_and_the_server_keeps_serving(
    testbed: Testbed, tier: ServiceTier
) -> None:
    before = testbed.exec(tier.server, f"sha1sum {CONF}")
    started = checks.started_at(testbed, tier.server)
    for extra, message in (
        ({"wrok_mem": "8MB"}, 'unrecognized configuration parameter "wrok_mem"'),
        # shared_buffers needs a restart: only a full parse, as at a start, sees it is wrong
        ({"shared_buffers": "lots"}, 'invalid value for parameter "shared_buffers"'),
    ):
        run = tier.record(
            testbed.deploy(
                roles=["db"],
                limit=[tier.server.name],
                overrides={"postgresql_extra_settings": extra},
            )
        )
        assert not run.ok, run.output
        assert message in run.output and CONF in run.output, run.output
        assert [op.name for op in run.failed][:1] == [
            "PostgreSQL | Tune PostgreSQL and listen on the private address"
        ], run.failed
        assert not [op for op in run.changed if "PostgreSQL" in op.name and "Re" in op.name]
        assert testbed.exec(tier.server, f"sha1sum {CONF}") == before
        assert testbed.exec(tier.server, f"ls {CONF}.maha-new", check=False).find("No such") > -1
        assert checks.started_at(testbed, tier.server) == started
        assert app_sql(testbed, tier, "SELECT 1") == "1"
    assert not tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name])).changed


def test_a_reload_a_failed_run_left_owed_is_done_by_the_next_run(
    testbed: Testbed, tier: ServiceTier
) -> None:
    """A run writes a reload-only setting, then its reload does not happen (systemd's reload
    fails, as a run killed there would leave it: the new file on disk, the server on the old
    value); the next plain run, with no file left to write, reloads the server."""
    owed = "/var/lib/maha/pending-restart/postgresql@15-main.reload"
    refuse = "/etc/systemd/system/postgresql@15-main.service.d/99-test-refuse-reload.conf"
    new = {"postgresql_work_mem": "6MB"}
    before = checks.superuser_sql(testbed, tier.server, "SHOW work_mem")
    assert before != "6MB"
    testbed.exec(tier.server, f"mkdir -p {refuse.rpartition('/')[0]}")
    testbed.exec(
        tier.server, f"printf '[Service]\\nExecReload=\\nExecReload=/bin/false\\n' > {refuse}"
    )
    testbed.exec(tier.server, "systemctl daemon-reload")
    try:
        died = tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name], overrides=new))
        assert not died.ok
        assert [op.status for op in died.named("Reload PostgreSQL for new settings")] == [
            "failed"
        ], died.output
        assert "\nwork_mem = 6MB\n" in testbed.exec(tier.server, f"cat {CONF}")
        assert checks.superuser_sql(testbed, tier.server, "SHOW work_mem") == before
        assert testbed.exec(tier.server, f"test -f {owed} && echo owed").strip() == "owed"
    finally:
        testbed.exec(tier.server, f"rm -f {refuse} && systemctl daemon-reload")

    done = tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name], overrides=new))
    assert done.ok, done.output
    assert "PostgreSQL | Reload PostgreSQL for new settings" in [op.name for op in done.changed]
    assert checks.superuser_sql(testbed, tier.server, "SHOW work_mem") == "6MB"
    assert testbed.exec(tier.server, f"test -f {owed} || echo cleared").strip() == "cleared"
    back = tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name]))
    assert back.ok and [op.name for op in back.changed] == RELOADED, back.output


def test_rows_survive_redeploy_restart_and_setting_changes(
    testbed: Testbed, tier: ServiceTier
) -> None:

    def rows() -> str:
        return app_sql(testbed, tier, "SELECT count(*) FROM keep")

    app_sql(testbed, tier, "CREATE TABLE keep AS SELECT g AS n FROM generate_series(1, 1000) g")

    again = tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name]))
    assert again.ok and not again.changed, again.output
    assert rows() == "1000"

    testbed.exec(tier.server, "systemctl restart postgresql@15-main")
    assert rows() == "1000"

    # A reload-only setting reloads: the server keeps running.
    started = checks.started_at(testbed, tier.server)
    reloaded = tier.record(
        testbed.deploy(
            roles=["db"], limit=[tier.server.name], overrides={"postgresql_work_mem": "8MB"}
        )
    )
    assert reloaded.ok, reloaded.output
    assert [op.name for op in reloaded.changed] == RELOADED
    assert checks.superuser_sql(testbed, tier.server, "SHOW work_mem") == "8MB"
    assert checks.started_at(testbed, tier.server) == started
    assert rows() == "1000"

    # A restart-only setting restarts, and says why.
    restarted = tier.record(
        testbed.deploy(
            roles=["db"],
            limit=[tier.server.name],
            # group_data/local.py sizes for 1 GiB, i.e. 256MB of shared buffers: ask for more
            overrides={"postgresql_work_mem": "8MB", "postgresql_shared_buffers": "320MB"},
        )
    )
    assert restarted.ok, restarted.output
    assert [op.name for op in restarted.changed] == [
        "PostgreSQL | Tune PostgreSQL and listen on the private address",
        "PostgreSQL | Restart PostgreSQL for shared_buffers",
    ]
    assert checks.superuser_sql(testbed, tier.server, "SHOW shared_buffers") == "320MB"
    assert checks.started_at(testbed, tier.server) != started
    assert rows() == "1000"


def test_rows_survive_the_host_being_replaced(testbed: Testbed, tier: ServiceTier) -> None:
    """``invoke down`` then ``up``: a new container on the kept data volumes."""
    app_sql(testbed, tier, "CREATE TABLE replaced AS SELECT g AS n FROM generate_series(1, 500) g")

    testbed.environment.remove([tier.server.name])  # the container goes, its volumes stay
    tier.server = testbed.host("db", name=tier.server.name)
    rebuilt = tier.record(testbed.deploy(roles=["base", "db"], limit=[tier.server.name]))
    assert rebuilt.ok, rebuilt.output

    assert app_sql(testbed, tier, "SELECT count(*) FROM replaced") == "500"
    again = tier.record(testbed.deploy(roles=["base", "db"], limit=[tier.server.name]))
    assert again.ok and not again.changed, [op.name for op in again.changed]
    assert not tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name], dry=True)).changed


def test_kept_data_without_its_configuration_is_adopted(
    testbed: Testbed, tier: ServiceTier
) -> None:
    """Only the data volume kept (an EC2 instance replaced on its EBS data volume, or a
    volume from before /etc/postgresql had one): the role rebuilds the configuration."""
    container = testbed.environment.container_name(tier.server.name)
    testbed.environment.remove([tier.server.name])
    testbed.environment.client.volumes.get(f"{container}-data-etc-postgresql").remove()
    tier.server = testbed.host("db", name=tier.server.name)

    adopted = tier.record(testbed.deploy(roles=["base", "db"], limit=[tier.server.name]))
    assert adopted.ok, adopted.output
    assert adopted.named("Adopt data kept from a former host")[0].status == "changed"
    assert app_sql(testbed, tier, "SELECT count(*) FROM replaced") == "500"
    again = tier.record(testbed.deploy(roles=["base", "db"], limit=[tier.server.name]))
    assert again.ok and not again.changed, [op.name for op in again.changed]


def test_app_servers_get_in_over_verified_tls_only(testbed: Testbed, tier: ServiceTier) -> None:
    checks.check_client_connects(testbed, tier.server, tier.app, password(testbed))
    checks.check_tls_only(testbed, tier.server, tier.app, password(testbed))


def test_every_port_beyond_loopback_speaks_tls_or_ssh(testbed: Testbed, tier: ServiceTier) -> None:
    ports.assert_tls_or_ssh(testbed, "db", tier.server, {22: "ssh", 5432: "tls"})


def served_serial(testbed: Testbed, client: LocalHost, server: LocalHost) -> int:
    """The serial number of the certificate PostgreSQL presents to ``client``."""
    out = testbed.exec(
        client,
        f"openssl s_client -starttls postgres -connect {server.private_address}:5432 "
        "</dev/null 2>/dev/null | openssl x509 -noout -serial",
    ).strip()
    return int(out.removeprefix("serial="), 16)


def serial(pem: str) -> int:
    from cryptography import x509

    return int(x509.load_pem_x509_certificate(pem.encode()).serial_number)


def test_a_certificate_near_expiry_is_renewed_by_a_run_without_showing_its_key(
    testbed: Testbed, tier: ServiceTier
) -> None:
    store = LocalSecretStore(testbed.env)
    cert_name, key_name = tls.stored_names(tier.server.name)
    current = store.get(cert_name)
    assert current and served_serial(testbed, tier.app, tier.server) == serial(current)
    # The stored certificate, as if issued 340 days ago: 25 days left, inside the 30.
    ca_cert, ca_key = tls.ca(store)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=340)
    short, short_key = tls.issue(ca_cert, ca_key, tls.names_of(current), days=365, now=old)
    store.put(cert_name, short)
    store.put(key_name, short_key)
    key_file = "/etc/postgresql/15/main/tls/server.key"
    planned = tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name], dry=True))
    assert planned.ok and f"Will modify {key_file}" in planned.output, planned.output
    renewed_key = store.get(key_name)
    assert renewed_key and renewed_key != short_key
    body = [line for line in renewed_key.splitlines() if not line.startswith("-----")]
    assert body and not [line for line in body if line in planned.output]
    run = tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name]))
    assert run.ok, run.output
    assert run.named("Reload PostgreSQL for new settings")[0].status == "changed"
    renewed = store.get(cert_name)
    assert renewed and renewed != short
    assert served_serial(testbed, tier.app, tier.server) == serial(renewed)
    checks.check_client_connects(testbed, tier.server, tier.app, password(testbed))
    again = tier.record(testbed.deploy(roles=["db"], limit=[tier.server.name]))
    assert again.ok and not again.changed, [op.name for op in again.changed]


def test_no_secret_appears_in_any_output(testbed: Testbed, tier: ServiceTier) -> None:
    store = LocalSecretStore(testbed.env)
    secrets = [store.get(name) for name in ("postgresql_password_maha_app",)]
    assert all(secrets) and tier.outputs
    remembered = [p.read_text() for p in (testbed.home / testbed.env / "facts").glob("*.json")]
    assert remembered, "deploys remember their fact commands"
    for output in [*tier.outputs, *remembered]:
        for value in secrets:
            assert value and value not in output


@contextlib.contextmanager
def process_snapshots(
    testbed: Testbed, host: LocalHost, interval: float = 0.05
) -> Iterator[list[str]]:
    """Every process's command line on ``host``, read every ``interval`` seconds while the
    block runs (what any local user sees in ps); the text is in the list afterwards."""
    out, stop = "/root/maha-ps-snapshots", "/root/maha-ps-stop"
    testbed.exec(host, f"rm -f {out} {stop}")
    container = testbed.environment.client.containers.get(host.container)
    loop = f"while [ ! -e {stop} ]; do ps -eo args >> {out}; sleep {interval}; done"
    container.exec_run(["sh", "-c", loop], detach=True)
    seen: list[str] = []
    try:
        yield seen
    finally:
        testbed.exec(host, f"touch {stop}; sleep {interval * 4}")
        seen.append(testbed.exec(host, f"cat {out}; rm -f {out} {stop}"))


# Runs on the host: each entry created in /tmp, stat'ed the moment inotify reports it.
TMP_WATCH = r"""
import ctypes, os, stat, struct, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
fd = libc.inotify_init()
libc.inotify_add_watch(fd, b"/tmp", 0x100)  # IN_CREATE
out = open(sys.argv[1], "a", buffering=1)
out.write(f"watching {os.getpid()}\n")
while True:
    buf, i = os.read(fd, 65536), 0
    while i < len(buf):
        _wd, _mask, _cookie, size = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16 : i + 16 + size].rstrip(b"\0").decode()
        i += 16 + size
        try:
            st = os.lstat("/tmp/" + name)
            kind = "d" if stat.S_ISDIR(st.st_mode) else "f"
            out.write(f"{kind} {stat.S_IMODE(st.st_mode):o} {st.st_size} {name}\n")
        except FileNotFoundError:
            out.write(f"gone - - {name}\n")
"""


@contextlib.contextmanager
def tmp_entries(testbed: Testbed, host: LocalHost) -> Iterator[list[str]]:
    """``kind mode size name`` of each entry made in the host's /tmp while the block runs,
    read the moment it appears (inotify); the lines are in the list afterwards."""
    out, script = "/root/maha-tmp-watch", "/root/maha-tmp-watch.py"
    container = testbed.environment.client.containers.get(host.container)
    testbed.exec(host, f"rm -f {out} && cat > {script} <<'EOF'\n{TMP_WATCH}\nEOF")
    container.exec_run(["python3", script, out], detach=True)
    seen: list[str] = []
    assert wait_until(lambda: "watching" in testbed.exec(host, f"cat {out}", check=False), 10)
    try:
        yield seen
    finally:
        time.sleep(0.3)
        lines = testbed.exec(host, f"cat {out}").splitlines()
        testbed.exec(host, f"kill {lines[0].split()[1]}; rm -f {out} {script}", check=False)
        seen.extend(lines[1:])


def every_secret(testbed: Testbed) -> dict[str, str]:
    """Every value of the environment's secrets store, by name."""
    store = LocalSecretStore(testbed.env)
    return {k: v for k, v in json.loads(store.path.read_text()).items() if v}


def leaks(values: dict[str, str], texts: dict[str, str]) -> list[str]:
    """``name in where`` for each secret found in a text (never the value itself)."""
    return [
        f"{name} in {where}" for name, v in values.items() for where, t in texts.items() if v in t
    ]


def test_no_secret_reaches_a_command_line_or_the_journal(
    testbed: Testbed, tier: ServiceTier
) -> None:
    # A stale stored password makes the role send a new verifier, the db role's one secret.
    checks.superuser_sql(testbed, tier.server, "ALTER ROLE maha_app PASSWORD 'stale-one'")
    since = testbed.exec(tier.server, "date '+%Y-%m-%d %H:%M:%S'").strip()
    with process_snapshots(testbed, tier.server) as seen:
        run = tier.record(testbed.deploy(roles=["base", "db"], limit=[tier.server.name]))
    assert run.ok, run.output
    assert run.named("PostgreSQL user maha_app")[0].status == "changed"
    journal = testbed.exec(tier.server, f"journalctl --since '{since}' --no-pager -o cat")
    assert "COMMAND=" in journal, "sudo logs each command line it runs"
    assert seen[0].count("sudo -H -n") > 3, "the snapshots saw the deploy's commands"
    values = {
        **every_secret(testbed),
        "maha_app's SCRAM verifier": checks.superuser_sql(
            testbed, tier.server, "SELECT rolpassword FROM pg_authid WHERE rolname = 'maha_app'"
        ),
    }
    assert leaks(values, {"ps": seen[0], "the journal": journal, "the output": run.output}) == []
    assert app_sql(testbed, tier, "SELECT 1") == "1"  # the new verifier is the password's


def _gpg(home: str, *args: str) -> str:
    return subprocess.run(
        ["gpg", "--batch", "--homedir", home, *args], capture_output=True, text=True, check=True
    ).stdout


def stand_in_pgdg(codename: str = "bookworm") -> tuple[bytes, dict[str, tuple[str, str]]]:
    """An empty apt repository (a tar of it) signed like PGDG's, by a key made here, and
    that key and another one: name -> (armored key, fingerprint)."""
    home = tempfile.mkdtemp(prefix="maha-gpg-")
    try:
        keys = {}
        for name in ("vendor", "intruder"):
            _gpg(home, "--passphrase", "", "--quick-gen-key", f"{name}@example.test",
                 "ed25519", "sign", "never")  # fmt: skip
            colons = _gpg(home, "--with-colons", "--list-keys", f"{name}@example.test")
            fpr = next(x.split(":")[9] for x in colons.splitlines() if x.startswith("fpr:"))
            keys[name] = (_gpg(home, "--armor", "--export", fpr), fpr)
        root = Path(home) / "repo"
        suite = root / "dists" / f"{codename}-pgdg"
        (suite / "main" / "binary-amd64").mkdir(parents=True)
        (suite / "main" / "binary-amd64" / "Packages").write_text("")
        release = subprocess.run(
            ["apt-ftparchive",
             "-o", f"APT::FTPArchive::Release::Suite={codename}-pgdg",
             "-o", f"APT::FTPArchive::Release::Codename={codename}-pgdg",
             "-o", "APT::FTPArchive::Release::Components=main",
             "-o", "APT::FTPArchive::Release::Architectures=amd64",
             "release", str(suite)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        (suite / "Release").write_text(release)
        _gpg(home, "--local-user", keys["vendor"][1], "--clearsign",
             "-o", str(suite / "InRelease"), str(suite / "Release"))  # fmt: skip
        for name, (armored, _fpr) in keys.items():
            (root / f"{name}.asc").write_text(armored)
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(root, arcname="maha-test-pgdg")
        return archive.getvalue(), keys
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_a_vendor_key_is_trusted_only_with_its_pinned_fingerprint(
    testbed: Testbed, tier: ServiceTier
) -> None:
    archive, keys = stand_in_pgdg()
    repo = "/srv/maha-test-pgdg"
    container = testbed.environment.client.containers.get(tier.server.container)
    container.put_archive("/srv", archive)
    sources, keyring = "/etc/apt/sources.list.d/pgdg.sources", "/etc/apt/keyrings/postgresql.asc"
    overrides = {
        "postgresql_distribution_version": 14,  # so 15 comes from the "PGDG" repository
        "postgresql_pgdg_url": f"file:{repo}",
        "postgresql_pgdg_key_url": f"file://{repo}/served.asc",
        "postgresql_pgdg_key_fingerprint": keys["vendor"][1],
    }
    try:
        testbed.exec(tier.server, f"cp {repo}/intruder.asc {repo}/served.asc")
        refused = tier.record(
            testbed.deploy(roles=["db"], limit=[tier.server.name], overrides=overrides)
        )
        assert not refused.ok, refused.output
        output = " ".join(refused.output.split())
        assert "Add the PGDG apt repository: the signing key" in output, refused.output
        assert "postgresql_pgdg_key_fingerprint" in output and keys["intruder"][1] in output
        assert (
            testbed.exec(tier.server, f"ls {sources} {keyring} 2>&1", check=False).count(
                "No such file"
            )
            == 2
        ), "a refused key, or the repository it signs, is in place"

        testbed.exec(tier.server, f"cp {repo}/vendor.asc {repo}/served.asc")
        trusted = tier.record(
            testbed.deploy(roles=["db"], limit=[tier.server.name], overrides=overrides)
        )
        assert trusted.ok, trusted.output
        assert trusted.named("Read the PGDG package lists")[0].status == "changed"
        assert "Signed-By: " + keyring in testbed.exec(tier.server, f"cat {sources}")
        again = testbed.deploy(roles=["db"], limit=[tier.server.name], overrides=overrides)
        assert again.ok and again.named("Add the PGDG signing key")[0].status == "unchanged"

        # A key already in place is checked too (one put there before the pin, or under
        # another pin): download alone would keep it and the repository would trust it.
        testbed.exec(tier.server, f"cp {repo}/intruder.asc {keyring}")
        testbed.exec(tier.server, f"cp {repo}/intruder.asc {repo}/served.asc")
        stale = tier.record(
            testbed.deploy(roles=["db"], limit=[tier.server.name], overrides=overrides)
        )
        assert not stale.ok, stale.output
        assert keys["intruder"][1] in " ".join(stale.output.split()), stale.output
        assert "No such file" in testbed.exec(tier.server, f"ls {keyring} 2>&1", check=False)
    finally:
        testbed.exec(tier.server, f"rm -rf {repo} {sources} {keyring}")


def test_other_majors_come_from_pgdg_planned_on_a_fresh_host(testbed: Testbed) -> None:
    fresh = testbed.host("db", name="dbt-pgdg-1")
    try:
        plan = testbed.deploy(
            roles=["db"],
            limit=[fresh.name],
            dry=True,
            overrides={"postgresql_version": 16, "postgresql_backup_s3_bucket": "maha-backups"},
        )
        assert plan.ok, plan.output
        names = [op.name for op in plan.changed]
        for expected in (
            "PostgreSQL | Add the PGDG signing key",
            "PostgreSQL | Add the PGDG apt repository",
            "PostgreSQL | Read the PGDG package lists",
            "PostgreSQL | Install PostgreSQL 16",
            "PostgreSQL | Tune PostgreSQL and listen on the private address",
        ):
            assert expected in names, names
        assert names.index("PostgreSQL | Add the PGDG apt repository") < names.index(
            "PostgreSQL | Install PostgreSQL 16"
        )
        output = " ".join(plan.output.split())
        assert "Will create /etc/apt/sources.list.d/pgdg.sources" in output
        for line in (
            "+ URIs: https://apt.postgresql.org/pub/repos/apt",
            "+ Suites: bookworm-pgdg",
            "+ Signed-By: /etc/apt/keyrings/postgresql.asc",
            "+ BACKUP_S3_BUCKET=maha-backups",
        ):
            assert line in output, line
        assert "pgdg" not in testbed.exec(fresh, "ls /etc/apt/sources.list.d/")
    finally:
        testbed.remove(fresh)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("postgresql_version = 11", "PostgreSQL 11 is not supported"),
        ("postgresql_version = 18", "PostgreSQL 18 is not supported"),
    ],
)
def test_unsupported_major_stops_before_any_host_is_touched(
    testbed: Testbed, tier: ServiceTier, tmp_path: Path, line: str, message: str
) -> None:
    group_data = converge.group_data_with(tmp_path, "db_servers.py", line)
    output = converge.assert_stopped_before_login(testbed, tier.server, ["db"], group_data)
    assert "db_servers.py: postgresql_version:" in output and message in output, output


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    """An invoke task as an operator runs it, without a terminal (so nothing is asked)."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "160"},  # tables printed whole, as on a wide terminal
        timeout=300,
        check=False,
    )


# -- off-host copies: the log server's put-only store ----------------------------------------
# Last in this module: the log server it adds joins the inventory of every later deploy.

STORE_ARCHIVE = "/var/lib/maha-backup/archive"
OFFHOST_KEY = "/var/lib/postgresql/.ssh/maha-backup-offhost"


@pytest.fixture(scope="module")
def store(testbed: Testbed, tier: ServiceTier) -> LocalHost:
    """A log server in the tier's inventory, and the db host converged to push to it."""
    log = testbed.host("log", name="dbt-log-1")
    first = tier.record(
        testbed.deploy(roles=["base", "log", "db"], limit=[log.name, tier.server.name])
    )
    assert first.ok, first.output
    assert first.named("Admit the db hosts' backup key", host=log.name)
    return log


def as_store_client(tier: ServiceTier, store: LocalHost, request: str, stdin: str = "") -> str:
    """``request`` sent to the store with the db host's own key, as its backups send it."""
    feed = f"printf %s {stdin!r} |" if stdin else "</dev/null"
    return (
        f"{feed} runuser -u postgres -- ssh -F /dev/null -i {OFFHOST_KEY} -o IdentitiesOnly=yes"
        f" -o BatchMode=yes -o UserKnownHostsFile={OFFHOST_KEY}.known_hosts"
        f" maha-backup@{store.private_address} {request}; echo rc=$?"
    )


def test_dumps_are_copied_to_the_log_server_where_the_db_host_cannot_delete_or_overwrite(
    testbed: Testbed, tier: ServiceTier, store: LocalHost
) -> None:
    run = testbed.exec(tier.server, "systemctl start maha-pg-backup.service; echo rc=$?")
    assert "rc=0" in run, run + testbed.exec(tier.server, "journalctl -u maha-pg-backup -n 30")
    newest = testbed.exec(tier.server, f"ls -t {BACKUP_DIR}/maha/*.dump | head -1").strip()
    name = os.path.basename(newest)
    copy = f"{STORE_ARCHIVE}/maha/{name}"
    local_sum = testbed.exec(tier.server, f"sha256sum < {newest}").split()[0]
    stored = testbed.exec(store, f"sha256sum < {copy}; stat -c '%a %U' {copy}").split()
    assert stored == [local_sum, "-", "400", "maha-backup"], stored
    assert testbed.exec(store, f"ls {STORE_ARCHIVE}/globals/").strip().endswith(".sql")

    def refused(request: str, stdin: str = "") -> str:
        out = testbed.exec(tier.server, as_store_client(tier, store, request, stdin), check=False)
        assert "rc=0" not in out, f"{request}: {out}"
        return out

    before = testbed.exec(store, f"ls -l --time-style=+%s {STORE_ARCHIVE}/*/")
    assert "refused" in refused(f"rm -f {copy}")
    assert "refused" in refused("sh -c id")
    assert "refused" in refused("")  # a login shell
    junk = "junk"
    junk_sum = hashlib.sha256(junk.encode()).hexdigest()
    assert "never overwritten" in refused(f"put maha/{name} 4 {junk_sum}", junk)
    assert "refused" in refused(f"put maha/../globals/{name} 4 {junk_sum}", junk)
    assert "refused" in refused(f"put maha/maha-20000101T000000Z.dump 4 {'0' * 64}", junk)
    sftp = testbed.exec(
        tier.server,
        f"runuser -u postgres -- sftp -F /dev/null -i {OFFHOST_KEY} -o BatchMode=yes"
        f" -o UserKnownHostsFile={OFFHOST_KEY}.known_hosts -b /dev/null"
        f" maha-backup@{store.private_address}; echo rc=$?",
        check=False,
    )
    assert "rc=0" not in sftp, sftp
    forward = testbed.exec(
        tier.server,
        as_store_client(tier, store, "").replace("ssh ", "ssh -W 127.0.0.1:1514 ", 1),
        check=False,
    )
    assert "rc=0" not in forward, forward
    # Everything stored is as it was; the junk put under a fresh name left nothing behind.
    assert testbed.exec(store, f"ls -l --time-style=+%s {STORE_ARCHIVE}/*/") == before
    assert testbed.exec(store, f"sha256sum < {copy}").split()[0] == local_sum
    assert "refused" in testbed.exec(
        store, "journalctl -t maha-backup-store -p warning --no-pager -o cat"
    )


def test_the_off_host_copy_restores_with_its_rows(
    testbed: Testbed, tier: ServiceTier, store: LocalHost
) -> None:
    app_sql(
        testbed,
        tier,
        "CREATE TABLE IF NOT EXISTS campaigns (id int PRIMARY KEY, name text);"
        "INSERT INTO campaigns VALUES (1, 'spring'), (2, 'summer') ON CONFLICT DO NOTHING",
    )
    run = testbed.exec(tier.server, "systemctl start maha-pg-backup.service; echo rc=$?")
    assert "rc=0" in run, run
    copy = testbed.exec(store, f"ls -t {STORE_ARCHIVE}/maha/*.dump | head -1").strip()
    # As an operator would: the copy fetched from the log server into the backup directory.
    archive = b"".join(
        testbed.environment.client.containers.get(store.container).get_archive(copy)[0]
    )
    fetched = "maha-20000102T000000Z.dump"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        member = tar.getmembers()[0]
        data = tar.extractfile(member)
        assert data is not None
        repacked = io.BytesIO()
        with tarfile.open(fileobj=repacked, mode="w") as out:
            member.name = fetched
            out.addfile(member, data)
    server = testbed.environment.client.containers.get(tier.server.container)
    server.put_archive(f"{BACKUP_DIR}/maha", repacked.getvalue())
    testbed.exec(tier.server, f"chown postgres: {BACKUP_DIR}/maha/{fetched}")
    try:
        app_sql(testbed, tier, "DELETE FROM campaigns")
        restore = invoke(
            "db.restore",
            "--env",
            testbed.env,
            "--host",
            tier.server.name,
            "--database",
            "maha",
            "--file",
            fetched,
            "--yes",
        )
        assert restore.returncode == 0, restore.stdout + restore.stderr
        assert (
            app_sql(testbed, tier, "SELECT string_agg(name, ',' ORDER BY id) FROM campaigns")
            == "spring,summer"
        )
    finally:
        testbed.exec(tier.server, f"rm -f {BACKUP_DIR}/maha/{fetched}")


def test_a_refused_off_host_copy_fails_the_backup_at_error_level(
    testbed: Testbed, tier: ServiceTier, store: LocalHost
) -> None:
    keys = "/var/lib/maha-backup/.ssh/authorized_keys"
    since = testbed.exec(tier.server, "date '+%Y-%m-%d %H:%M:%S'").strip()
    testbed.exec(store, f"mv {keys} {keys}.away")
    try:
        run = testbed.exec(
            tier.server, "systemctl start maha-pg-backup.service; echo rc=$?", check=False
        )
    finally:
        testbed.exec(store, f"mv {keys}.away {keys}")
    assert "rc=0" not in run, run

    def reported() -> bool:
        return "maha-pg-backup.service failed" in _errors_since(testbed, tier, since)

    assert wait_until(reported, 20), _errors_since(testbed, tier, since)


def test_the_store_converges_again_and_plans_without_change_and_never_shows_its_key(
    testbed: Testbed, tier: ServiceTier, store: LocalHost
) -> None:
    hosts = [store.name, tier.server.name]
    again = tier.record(testbed.deploy(roles=["base", "log", "db"], limit=hosts))
    assert again.ok, again.output
    assert [f"{op.host}: {op.name}" for op in again.changed] == [], again.output
    plan = tier.record(testbed.deploy(roles=["base", "log", "db"], limit=hosts, dry=True))
    assert plan.ok and plan.changed == [], plan.output
    key = LocalSecretStore(testbed.env).get("postgresql_backup_offhost_key")
    assert key and "PRIVATE KEY" in key
    body = [line for line in key.splitlines() if "PRIVATE KEY" not in line]
    for output in tier.outputs:
        assert not [line for line in body if line in output], "the store key was printed"


def test_the_store_exports_to_ansible_with_its_key_as_a_lookup(
    testbed: Testbed, tier: ServiceTier, store: LocalHost, tmp_path: Path
) -> None:
    from mahaops.ansible_export import export

    project = tmp_path / "project"
    exported = export(testbed.env, project, limit=[store.name, tier.server.name])
    assert exported.ok, exported.output
    texts = {
        str(p.relative_to(project)): p.read_text(errors="replace")
        for p in project.rglob("*")
        if p.is_file()
    }
    log_tasks = "".join(t for name, t in texts.items() if name.startswith("roles/log/"))
    assert "maha-backup-store" in log_tasks and "authorized_keys" in log_tasks
    db_role = "".join(t for name, t in texts.items() if name.startswith("roles/db/"))
    assert "maha_secret_postgresql_backup_offhost_key" in db_role
    key = LocalSecretStore(testbed.env).get("postgresql_backup_offhost_key") or ""
    body = [line for line in key.splitlines() if "PRIVATE KEY" not in line]
    assert body and not [n for n, t in texts.items() if any(line in t for line in body)]
