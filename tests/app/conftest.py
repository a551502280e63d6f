"""Fixtures for the sample app's tests: real PostgreSQL, Redis, web server and workers.

Session-scoped: one PostgreSQL, one Redis, one web server for the module;
workers are started per test (``workers``) so each test controls who holds
its job. Everything started is stopped when the session ends.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import (
    APP_DIR,
    LOCALHOST,
    App,
    Postgres,
    Proc,
    Processes,
    Redis,
    Web,
    free_port,
    postgres_bin,
    wait_for,
)

# -- processes -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    registry = Processes(tmp_path_factory.mktemp("logs"))
    try:
        yield registry
    finally:
        registry.stop_all()


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres(processes: Processes) -> Iterator[Postgres]:
    pg_bin = postgres_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server not installed (apt-get install postgresql)")
    # initdb refuses to run as root: run the server as the postgres user, in
    # a directory it owns outside pytest's private (0700) temp tree.
    user = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and no 'postgres' user to run PostgreSQL as")
        user = "postgres"
    root = Path(tempfile.mkdtemp(prefix="maha-test-pg-"))
    try:
        if user:
            os.chown(root, owner.pw_uid, owner.pw_gid)
        pg = Postgres(pg_bin, root, free_port())
        _init_cluster(pg, root, user)
        # Throwaway data: durability only costs time here.
        settings = ["-k", str(root), f"--listen_addresses={LOCALHOST}", "--fsync=off"]
        settings += ["--synchronous_commit=off", "--full_page_writes=off"]
        server = processes.start(
            "postgres",
            [str(pg_bin / "postgres"), "-D", str(root / "data"), "-p", str(pg.port), *settings],
            user=user,
            stop_signal=signal.SIGINT,  # "fast" shutdown
        )
        wait_for(
            lambda: server.popen.poll() is None and pg.sql("select 1", "postgres") == "1",
            30,
            f"PostgreSQL to start (log: {server.log})",
        )
        pg.sql(f"create role {pg.user} login password '{pg.password}'", "postgres")
        pg.sql(f"create database {pg.database} owner {pg.user}", "postgres")
        yield pg
        server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _init_cluster(pg: Postgres, root: Path, user: str | None) -> None:
    password_file = root / "superuser-password"
    password_file.write_text("maha-test-superuser\n")
    if user:
        shutil.chown(password_file, user)
    options = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={password_file}"]
    options += ["-E", "UTF8", "--no-locale", "--no-sync"]
    subprocess.run(
        [str(pg.bin / "initdb"), "-D", str(root / "data"), "-U", "postgres", *options],
        check=True,
        capture_output=True,
        user=user,
    )


# -- Redis -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def start_redis(
    processes: Processes, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[], Redis]:
    """Starts a password-protected, memory-only redis-server on a free port."""
    if not (shutil.which("redis-server") and shutil.which("redis-cli")):
        pytest.skip("redis-server not installed (apt-get install redis-server)")

    def start() -> Redis:
        port = free_port()
        settings = ["--requirepass", Redis.password, "--save", "", "--appendonly", "no"]
        settings += ["--dir", str(tmp_path_factory.mktemp("redis"))]
        proc = processes.start(
            "redis",
            ["redis-server", "--port", str(port), "--bind", LOCALHOST, *settings],
        )
        redis = Redis(proc, port)
        wait_for(lambda: redis.cli("ping") == "PONG", 10, f"redis-server (log: {proc.log})")
        return redis

    return start


@pytest.fixture(scope="session")
def redis(start_redis: Callable[[], Redis]) -> Redis:
    return start_redis()


# -- the app ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def node_modules() -> Path:
    """``npm ci`` in app/, once per package-lock.json (a stamp file remembers which)."""
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed to run the app")
    lock_digest = hashlib.sha256((APP_DIR / "package-lock.json").read_bytes()).hexdigest()
    modules = APP_DIR / "node_modules"
    stamp = modules / ".maha-test-stamp"
    if not (stamp.is_file() and stamp.read_text() == lock_digest):
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--prefer-offline"],
            cwd=APP_DIR,
            check=True,
            capture_output=True,
        )
        stamp.write_text(lock_digest)
    return modules


@pytest.fixture(scope="session")
def migrated(node_modules: Path, postgres: Postgres, redis: Redis, processes: Processes) -> App:
    app = App(processes, postgres, redis)
    done = app.node("migrate")
    assert done.returncode == 0, done.stdout + done.stderr
    return app


@pytest.fixture(scope="session")
def web(migrated: App) -> Web:
    return migrated.start_web()


@pytest.fixture
def workers(migrated: App) -> Iterator[Callable[..., Proc]]:
    """Starts workers for one test; whatever is still running is stopped after it."""
    started: list[Proc] = []

    def start(**env: str | int) -> Proc:
        proc = migrated.start_worker(**env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
