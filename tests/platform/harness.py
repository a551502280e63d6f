"""The local platform the platform and lifecycle tests share: built once, as `invoke up`
makes it (a load balancer over two app servers, a worker, PostgreSQL, Redis, the log and
mail hosts), in its own environment.

tests/conftest.py's ``plat`` fixture builds it for the first test that asks and removes it
after the last of the modules in ``SHARED_PLATFORM``, which run together and in that order:
each leaves the platform as the next expects it (one release served on every host, the
settings' defaults) and the lifecycle tests, which replace hosts, come last.
"""

from __future__ import annotations

import functools
import io
import json
import secrets as _random
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from mahaops import release as release_build
from mahaops.local import platform
from mahaops.local.hosts import Environment, LocalHost
from mahaops.release import APP_DIR
from mahaops.secrets import LocalSecretStore, get_or_create
from tests.checks import app as app_checks
from tests.users import User


@dataclass
class Platform:
    env: str
    environment: Environment
    first: platform.UpResult

    def host(self, name: str) -> LocalHost:
        return next(h for h in self.environment.hosts() if h.name == name)

    @property
    def url(self) -> str:
        address = platform.url(self.environment.hosts())
        assert address, "the load balancer publishes no port"
        return address.rstrip("/")

    def exec(self, name: str, command: str) -> str:
        container = self.environment.client.containers.get(self.host(name).container)
        code, output = container.exec_run(["sh", "-c", command])
        text = str(output.decode(errors="replace"))
        assert code == 0, f"{name}: `{command}` exited {code}: {text}"
        return text

    @functools.cached_property
    def user(self) -> User:
        """The signed-in user API requests are made as (signed up on first use)."""
        return User.sign_up(self.url)

    def request(
        self, path: str, body: dict[str, Any] | None = None, timeout: float = 10
    ) -> tuple[int, dict[str, str], str]:
        """GET, or POST ``body``; under /api/ as ``user``, with its CSRF token on a POST."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if path.startswith("/api/"):
            headers.update(self.user.headers("POST" if data is not None else "GET"))
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                headers = {k.lower(): v for k, v in response.headers.items()}
                return response.status, headers, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read().decode()

    def servers(self, count: int = 6) -> set[str]:
        return {self.request("/health")[1].get("x-maha-server", "?") for _ in range(count)}

    def wait_for_both(self, timeout: float = 60) -> None:
        """Until both app servers answer behind the load balancer (it checks every second)."""
        deadline = time.monotonic() + timeout
        while self.servers() != {"app-1", "app-2"}:
            assert time.monotonic() < deadline, "both app servers never answered through the LB"
            time.sleep(1)

    def served_releases(self, count: int = 8) -> set[str]:
        return {self.request("/health")[1].get("x-maha-release", "?") for _ in range(count)}


def standins(environment: Environment, env: str) -> None:
    """Until the db and cache roles exist: their promises on db-1 and cache-1 by hand."""
    store = LocalSecretStore(env)
    image = environment.prepare()
    for role, name, install, secret_name in (
        ("db", "db-1", app_checks.standin_postgres, "postgresql_password_maha_app"),
        ("cache", "cache-1", app_checks.standin_redis, "redis_password"),
    ):
        host = environment.create(role, name=name, image=image)
        container = environment.client.containers.get(host.container)

        def run(command: str, container: Any = container) -> str:
            code, output = container.exec_run(["sh", "-c", command])
            assert code == 0, output.decode(errors="replace")
            return str(output.decode(errors="replace"))

        install(run, get_or_create(store, secret_name))


def build() -> Platform:
    """A fresh environment converged by ``platform.up``, both app servers answering."""
    env = f"p{_random.token_hex(3)}"
    environment = Environment(env)
    try:
        roles = platform.deployable_roles()
        if "db" not in roles or "cache" not in roles:
            standins(environment, env)
        first = platform.up(env, console=Console(file=io.StringIO()), capture=True, quiet=True)
        assert first.deploy.ok, first.deploy.output[-6000:]
        plat = Platform(env, environment, first)
        plat.wait_for_both()
        return plat
    except BaseException:
        environment.remove(volumes=True)
        raise


def build_variant(tmp: Path, change: str) -> release_build.Release:
    """A release of a modified copy of app/: ``change`` is a shell command run in the copy."""
    copy = tmp / "app"
    shutil.copytree(APP_DIR, copy, ignore=shutil.ignore_patterns("node_modules"))
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["sh", "-c", change], cwd=copy, check=True)
    subprocess.run(["git", "init", "-q"], cwd=copy, check=True)
    subprocess.run(["git", "add", "-A"], cwd=copy, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "variant"], cwd=copy, check=True)
    time.sleep(1)  # ids carry the build second: keep them distinct and ordered
    return release_build.build(tmp / "out", app_dir=copy)
