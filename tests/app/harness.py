"""The test harness for the sample app: processes, HTTP, PostgreSQL, Redis, web and workers.

Everything listens on 127.0.0.1 only and lives in temp directories. Every
process is registered with ``Processes`` so the session can stop it at the
end, failures included; processes also get SIGKILL from the kernel should
pytest itself die (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mahaops import PROJECT_ROOT
from tests.users import User, call

APP_DIR = PROJECT_ROOT / "app"
LOCALHOST = "127.0.0.1"
RELEASE = "test-release-1"
# Short leases so a killed worker's job comes back within seconds.
TEST_LEASE_MS = 2000


# -- processes -------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child: get SIGKILL when the test session dies, however it dies."""
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        """The app's JSON log lines (other lines, e.g. from Node itself, are skipped)."""
        events = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return events

    def stop(self, sig: int | None = None, timeout: float = 15) -> int:
        """Signal the process (its usual stop signal by default) and wait; SIGKILL if stuck."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig or self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


@dataclass
class Processes:
    """Every process the session starts, stopped in reverse order at the end."""

    log_dir: Path
    started: list[Proc] = field(default_factory=list)

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> Proc:
        log = self.log_dir / f"{len(self.started):02d}-{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=cwd,
                user=user,
                preexec_fn=_die_with_parent,
            )
        proc = Proc(name, popen, log, stop_signal)
        self.started.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


# -- small helpers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (OSError, subprocess.SubprocessError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# Proxies never apply: every request goes straight to 127.0.0.1.


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(method: str, url: str, payload: Any = None, **kwargs: Any) -> Response:
    """One request through tests/users.py's ``call`` (same arguments); header names lower-cased."""
    return Response(*call(method, url, payload, **kwargs))


# -- PostgreSQL ------------------------------------------------------------------------------


def postgres_bin() -> Path | None:
    """The newest installed PostgreSQL server's bin directory (Debian layout)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


@dataclass
class Postgres:
    bin: Path
    socket_dir: Path
    port: int
    user: str = "maha"
    password: str = "maha-test-db-password"
    database: str = "maha"

    def url(self, database: str | None = None) -> str:
        return (
            f"postgres://{self.user}:{self.password}@{LOCALHOST}:{self.port}/"
            f"{database or self.database}"
        )

    def sql(self, query: str, database: str | None = None) -> str:
        """Run ``query`` as the superuser over the Unix socket; unaligned output."""
        connection = ["-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres"]
        connection += ["-d", database or self.database]
        done = subprocess.run(
            [
                str(self.bin / "psql"),
                *connection,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-F",
                "|",
                "-c",
                query,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip()

    def scalar(self, query: str) -> int:
        return int(self.sql(query))


# -- Redis -----------------------------------------------------------------------------------


@dataclass
class Redis:
    proc: Proc
    port: int
    password: str = "maha-test-redis-password"

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{LOCALHOST}:{self.port}/0"

    def cli(self, *args: str) -> str:
        connection = [
            "-h",
            LOCALHOST,
            "-p",
            str(self.port),
            "--no-auth-warning",
            "-a",
            self.password,
        ]
        done = subprocess.run(
            ["redis-cli", *connection, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return done.stdout.strip()


# -- the app ---------------------------------------------------------------------------------


@dataclass
class App:
    """Starts the app's processes against one PostgreSQL and one Redis."""

    processes: Processes
    postgres: Postgres
    redis: Redis

    def env(self, **overrides: str | int) -> dict[str, str]:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": os.environ.get("HOME", "/root"),
            "DATABASE_URL": self.postgres.url(),
            "REDIS_URL": self.redis.url,
            "MAHA_RELEASE": RELEASE,
            "WORKER_LEASE_MS": str(TEST_LEASE_MS),
        }
        env.update({key: str(value) for key, value in overrides.items()})
        return env

    def node(self, script: str, **env: str | int) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["node", f"src/{script}.js"],
            cwd=APP_DIR,
            env=self.env(**env),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def start_web(
        self, server_name: str = "app-test-1", cwd: Path = APP_DIR, **env: str | int
    ) -> Web:
        """The web server of ``cwd`` (app/, or an unpacked release), with ``env`` on top."""
        port = free_port()
        proc = self.processes.start(
            "web",
            ["node", "src/web.js"],
            cwd=cwd,
            env=self.env(PORT=port, MAHA_SERVER_NAME=server_name, **env),
        )
        web = Web(proc, f"http://{LOCALHOST}:{port}", f"ws://{LOCALHOST}:{port}")
        wait_for(lambda: web.get("/health").status == 200, 20, f"web (log: {proc.log})")
        return web

    def start_worker(self, **env: str | int) -> Proc:
        proc = self.processes.start(
            "worker", ["node", "src/worker.js"], cwd=APP_DIR, env=self.env(**env)
        )
        wait_for(
            lambda: any(e["msg"] == "worker started" for e in proc.log_events()),
            10,
            f"worker (log: {proc.log})",
        )
        return proc


@dataclass
class Web:
    proc: Proc
    url: str
    ws_url: str

    @functools.cached_property
    def user(self) -> User:
        """The signed-in user the campaign helpers act as (signed up on first use)."""
        return User.sign_up(self.url)

    def get(self, path: str, *, user: User | None = None) -> Response:
        """GET, anonymous unless ``user`` is given."""
        return http("GET", self.url + path, headers=user.headers("GET") if user else None)

    def post(
        self, path: str, payload: Any = None, *, body: bytes | None = None, user: User | None = None
    ) -> Response:
        """POST, anonymous unless ``user`` is given (then with its CSRF token)."""
        headers = user.headers("POST") if user else None
        return http("POST", self.url + path, payload, body=body, headers=headers)

    def campaign(self, campaign_id: int, user: User | None = None) -> dict[str, Any]:
        response = self.get(f"/api/campaigns/{campaign_id}", user=user or self.user)
        assert response.status == 200, response.body
        result: dict[str, Any] = response.json()
        return result

    def start_campaign(
        self, recipients: int, name: str = "test campaign", user: User | None = None
    ) -> int:
        payload = {"name": name, "recipients": recipients}
        response = self.post("/api/campaigns", payload, user=user or self.user)
        assert response.status == 202, response.body
        return int(response.json()["id"])

    def wait_until_done(self, campaign_id: int, timeout: float = 30) -> dict[str, Any]:
        return wait_for(
            lambda: (c := self.campaign(campaign_id))["status"] == "done" and c,
            timeout,
            f"campaign {campaign_id} to be done",
        )
