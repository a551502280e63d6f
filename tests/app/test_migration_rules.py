"""Migrations against old code (issue 14): a migration marked breaking is refused unless
allowed, and the schema version a rollback compares with is read without changing it."""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from .harness import APP_DIR, App, Postgres

BREAKING_SQL = "-- maha: breaking\nalter table campaigns drop column attempts;\n"


@pytest.fixture
def app_copy(tmp_path: Path, migrated: App) -> Path:
    """app/ with one more migration, marked breaking, sharing app/'s node_modules."""
    copy = tmp_path / "app"
    shutil.copytree(APP_DIR / "src", copy / "src")
    shutil.copytree(APP_DIR / "migrations", copy / "migrations")
    (copy / "node_modules").symlink_to(APP_DIR / "node_modules")
    last = max(int(p.name[:3]) for p in (copy / "migrations").glob("[0-9][0-9][0-9]_*.sql"))
    (copy / "migrations" / f"{last + 1:03d}_drop_attempts.sql").write_text(BREAKING_SQL)
    return copy


@pytest.fixture
def database(postgres: Postgres) -> str:
    name = f"maha_rules_{secrets.token_hex(4)}"
    postgres.sql(f"create database {name} owner {postgres.user}", "postgres")
    return name


def run(
    app: App, cwd: Path, script: str, database: str, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", f"src/{script}.js"],
        cwd=cwd,
        env=app.env(DATABASE_URL=app.postgres.url(database), **env),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_breaking_migration_is_refused_unless_allowed_and_nothing_is_applied(
    migrated: App, app_copy: Path, database: str, postgres: Postgres
) -> None:
    refused = run(migrated, app_copy, "migrate", database)

    assert refused.returncode != 0
    assert "marked breaking" in refused.stdout + refused.stderr
    # Checked before anything is applied: the schema is as it was (here: empty).
    assert run(migrated, app_copy, "schema-version", database).stdout.strip() == "000"
    columns = postgres.sql(
        "select count(*) from information_schema.columns where table_name = 'campaigns'", database
    )
    assert columns == "0"

    allowed = run(migrated, app_copy, "migrate", database, MAHA_ALLOW_BREAKING="1")

    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    newest = max(p.name[:3] for p in (app_copy / "migrations").glob("*.sql"))
    assert run(migrated, app_copy, "schema-version", database).stdout.strip() == newest
    # Once applied, it is history: later releases migrate without the flag.
    assert run(migrated, app_copy, "migrate", database).returncode == 0


def test_the_schema_version_is_the_newest_applied_migration(migrated: App) -> None:
    done = migrated.node("schema-version")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == max(p.name[:3] for p in (APP_DIR / "migrations").glob("*.sql"))
