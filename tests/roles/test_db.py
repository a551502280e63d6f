"""The db role on real hosts: PostgreSQL for app servers and workers only, data that
survives re-deploys, restarts and setting changes, restart-or-reload, backups, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops.secrets import LocalSecretStore
from tests.checks import converge
from tests.checks import db as checks
from tests.conftest import ServiceTier, Testbed, service_tier

pytestmark = pytest.mark.testbed

# Operations pyinfra marks non-idempotent that the db role uses, and why that is safe.
JUSTIFIED_NON_IDEMPOTENT = {
    "operations.postgresql.reload": "guarded by _if on the settings drop-in changing",
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


def test_no_secret_appears_in_any_output(testbed: Testbed, tier: ServiceTier) -> None:
    store = LocalSecretStore(testbed.env)
    secrets = [store.get(name) for name in ("postgresql_password_maha_app",)]
    assert all(secrets) and tier.outputs
    remembered = [p.read_text() for p in (testbed.home / testbed.env / "facts").glob("*.json")]
    assert remembered, "deploys remember their fact commands"
    for output in [*tier.outputs, *remembered]:
        for value in secrets:
            assert value and value not in output


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


def invoke(*args: str) -> subprocess.CompletedProcess[str]:
    """An invoke task as an operator runs it, without a terminal (so nothing is asked)."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
        check=False,
    )
