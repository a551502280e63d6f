"""Shared fixtures: a Docker test bed of real SSH hosts, and deploys run against them.

The test bed is one environment (``maha.env=t<random>``) per test session, with its
own deploy key and secrets under a temporary MAHA_HOME. Hosts it hands out are
removed at the end of the session, after failures too.
"""

from __future__ import annotations

import fcntl
import os
import secrets as _random
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

# Isolate keys and secrets before any project module reads MAHA_HOME.
_HOME = tempfile.mkdtemp(prefix="maha-test-home-")
os.environ["MAHA_HOME"] = _HOME

from mahaops.local.hosts import Environment, LocalHost  # noqa: E402
from mahaops.runner import DeployResult, run_deploy  # noqa: E402

# The modules sharing one local platform (tests/platform/harness.py), in the order they
# run: each leaves it as the next expects, and the lifecycle tests (which replace its
# hosts) come last. They run first in the session, and the platform goes after the last.
SHARED_PLATFORM = (
    "tests/platform/test_local_platform.py",
    "tests/platform/test_zero_downtime.py",
    "tests/platform/test_release_faults.py",
    "tests/lifecycle/",
)

# Test modules that must run on one pytest-xdist worker, one after the other (path prefix
# -> unit of work): tests/app's modules share `npm ci` in app/ (two at once would trample
# node_modules) and one PostgreSQL and Redis; the shared platform's modules share it.
ONE_WORKER = {
    "tests/app/": "tests/app",
    "tests/sim/": "sim",  # one stand-in server per machine: its modules one after another
    **{prefix: "shared platform" for prefix in SHARED_PLATFORM},
}


def _shared_rank(item: pytest.Item) -> int | None:
    return next((i for i, p in enumerate(SHARED_PLATFORM) if item.nodeid.startswith(p)), None)


# The next longest units of work (about 20 and 10 minutes), started right after the shared
# platform's: one ending last would keep a worker busy alone at the end of the session.
LONG_UNITS = ("tests/ansible/test_roles.py", "tests/sim/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The shared platform's modules first, together, in SHARED_PLATFORM's order (the
    longest unit of work starts first), then LONG_UNITS; the rest keep file order."""

    def key(item: pytest.Item) -> int:
        rank = _shared_rank(item)
        if rank is not None:
            return rank
        long = next((i for i, p in enumerate(LONG_UNITS) if item.nodeid.startswith(p)), None)
        return len(SHARED_PLATFORM) + (len(LONG_UNITS) if long is None else long)

    items.sort(key=key)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """The shared platform is removed once its last module is done, not at the session's
    end: its hosts would otherwise idle (and health-check) under every later test."""
    yield
    if _shared_rank(item) is not None and (nextitem is None or _shared_rank(nextitem) is None):
        _close_shared_platform()


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent when run without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadfile`` (``invoke test``): a module is a unit of work, and so are the
    modules ONE_WORKER groups, so session fixtures they share are made once. (Not
    xdist_group marks: pytest-xdist 3.8 cannot tag node ids on pytest 9.)"""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ModuleOrGroup(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = super()._split_scope(nodeid)
            return next((u for p, u in ONE_WORKER.items() if module.startswith(p)), module)

    return ModuleOrGroup(config, log)


class Testbed:
    """Hands out fresh hosts and runs deploys on them."""

    __test__ = False  # a fixture, not a test class

    def __init__(self, environment: Environment, image: str) -> None:
        self.environment = environment
        self.image = image
        self.env = environment.env
        self.home = Path(_HOME)

    def host(self, role: str, name: str | None = None, image: str | None = None) -> LocalHost:
        """A fresh host of the test bed's image (or ``image``, one built on it)."""
        host = self.environment.create(role, name=name, image=image or self.image)
        _created.append((self, host))
        return host

    def deploy(
        self,
        roles: Sequence[str] = ("base",),
        limit: Sequence[str] = (),
        dry: bool = False,
        overrides: Mapping[str, Any] | None = None,
        group_data: Path | None = None,
    ) -> DeployResult:
        return run_deploy(
            self.env,
            roles=roles,
            limit=limit,
            dry=dry,
            overrides=overrides,
            group_data=group_data,
        )

    def exec(self, host: LocalHost, command: str, check: bool = True) -> str:
        container = self.environment.client.containers.get(host.container)
        code, output = container.exec_run(["sh", "-c", command])
        text = output.decode(errors="replace")
        if check and code != 0:
            raise AssertionError(f"{host.name}: `{command}` exited {code}: {text}")
        return text

    def remove(self, host: LocalHost) -> None:
        self.environment.remove([host.name], volumes=True)


def _remove_abandoned_testbeds(environment: Environment, older_than_hours: float = 6) -> None:
    """Test beds of sessions that were killed before their clean-up (never a live one)."""
    import datetime
    import re

    cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=older_than_hours)
    client = environment.client
    stale: set[str] = set()
    for container in client.containers.list(all=True, filters={"label": "maha.project=maha"}):
        env = container.labels.get("maha.env", "")
        created = datetime.datetime.fromisoformat(container.attrs["Created"][:19] + "+00:00")
        if re.fullmatch(r"t[0-9a-f]{6}", env) and created < cutoff:
            stale.add(env)
    for env in stale:
        Environment(env, client).remove(volumes=True)


# Held while a session starts dockerd or builds the host image: pytest-xdist workers (and
# other test runs on this machine) each set up their own test bed, but the engine, the
# package cache and the image are the machine's, made once.
_SETUP_LOCK = Path(tempfile.gettempdir()) / "maha-testbed-setup.lock"


@contextmanager
def machine_setup_lock() -> Iterator[None]:
    with _SETUP_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    with machine_setup_lock():
        environment = Environment(f"t{_random.token_hex(3)}")
        _remove_abandoned_testbeds(environment)
    try:
        with machine_setup_lock():
            image = environment.prepare()
        yield Testbed(environment, image)
    finally:
        environment.remove(volumes=True)


# Hosts made during a test module, removed when the module ends: each systemd host holds
# inotify instances and memory, and the whole suite would otherwise keep dozens alive.
_created: list[tuple[Testbed, LocalHost]] = []


@pytest.fixture(scope="module", autouse=True)
def _remove_module_hosts() -> Iterator[None]:
    start = len(_created)
    yield
    made = _created[start:]
    del _created[start:]
    for bed, host in made:
        bed.environment.remove([host.name], volumes=True)


_shared_platform: list[Any] = []  # the shared platform while it stands, else empty


def _close_shared_platform() -> None:
    while _shared_platform:
        _shared_platform.pop().environment.remove(volumes=True)


@pytest.fixture(scope="session")
def plat(testbed: Testbed) -> Iterator[Any]:
    """The local platform the modules in SHARED_PLATFORM share (tests/platform/harness.py),
    built for the first of them that runs; removed after the last, even on failure."""
    from tests.platform import harness

    built = harness.build()
    _shared_platform.append(built)
    try:
        yield built
    finally:
        _close_shared_platform()


@pytest.fixture(scope="session")
def make_host(testbed: Testbed) -> Callable[..., LocalHost]:
    return testbed.host


def infra(host: LocalHost) -> Any:
    """A testinfra host for assertions, reaching the container through Docker."""
    import testinfra

    return testinfra.get_host(f"docker://{host.container}")


@dataclass
class ServiceTier:
    """A data-tier server (db, cache), an app server it must admit and an outsider (base
    only) it must refuse, both with the PostgreSQL and Redis clients. Every deploy's
    output is kept, for the checks that no secret was ever printed."""

    server: LocalHost
    app: LocalHost
    outsider: LocalHost
    outputs: list[str] = field(default_factory=list)

    def record(self, result: DeployResult) -> DeployResult:
        self.outputs.append(result.output)
        return result


def service_tier(testbed: Testbed, role: str, prefix: str) -> tuple[ServiceTier, DeployResult]:
    """Hosts ``<prefix>-app-1``, ``<prefix>-out-1`` and ``<prefix>-<role>-1``, converged."""
    from tests.checks.db import install_clients

    # The clients exist before the server's deploy, so its access rules list the app server.
    app = testbed.host("app", name=f"{prefix}-app-1")
    outsider = testbed.host("base", name=f"{prefix}-out-1")
    server = testbed.host(role, name=f"{prefix}-{role}-1")
    tier = ServiceTier(server, app, outsider)
    first = tier.record(
        testbed.deploy(roles=["base", role], limit=[server.name, app.name, outsider.name])
    )
    assert first.ok, first.output
    for client in (app, outsider):
        install_clients(testbed, client)
    return tier, first
