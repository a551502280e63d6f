"""Fixtures of the sim's modules: a MAHA_HOME and HOME of their own (the server's state
and the sim key pair) and the stand-in's server, stopped with its hosts at the end.

The server and the sim environment on it are the package's, not each module's: the
environment test_sim.py's provisioning test makes is the one test_sim_lifecycle.py
trims to app, db and cache, deploys and scales (one provision of the sim environment,
not two). So the order of the tests that use the environment matters, and it is set
here (``pytest_collection_modifyitems``), not left to file names: the others first,
then provisioning, the lifecycle test, teardown, and the test that kills the server.
A module run alone works too: the lifecycle test provisions what it needs, and the
server's finalizer removes whatever hosts are left.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops.sim import server

HERE = Path(__file__).resolve().parent

# The tests that use the sim environment, in this order after the package's other tests
# (which launch instances of their own on a server without it, as each module used to):
# provisioning from group_data's counts, then test_sim_lifecycle.py's (which set their
# own counts), then teardown; last the test that kills the server.
PROVISIONING = "test_provisioning_the_sim_environment_makes_its_hosts"
USES_THE_ENVIRONMENT = "test_sim_lifecycle.py"  # every test of that module
TEARDOWN = "test_teardown_removes_the_sim_environment_and_its_hosts"
KILLS_THE_SERVER = "test_a_server_that_died_is_said_lost_not_replaced_by_an_empty_one"


def _rank(item: pytest.Item) -> int:
    name = getattr(item, "originalname", item.name)
    if name == PROVISIONING:
        return 1
    if item.path.name == USES_THE_ENVIRONMENT:
        return 2
    if name == TEARDOWN:
        return 3
    if name == KILLS_THE_SERVER:
        return 4
    return 0


@pytest.hookimpl(trylast=True)  # after tests/conftest.py has placed the package's tests
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    places = [i for i, item in enumerate(items) if HERE in item.path.resolve().parents]
    ordered = sorted((items[i] for i in places), key=_rank)  # stable: file order kept
    for place, item in zip(places, ordered, strict=True):
        items[place] = item


@pytest.fixture(scope="package")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MAHA_HOME and HOME of the package's own: the server's state and the sim key pair."""
    root = tmp_path_factory.mktemp("sim")
    saved = {k: os.environ.get(k) for k in ("MAHA_HOME", "HOME")}
    os.environ["MAHA_HOME"] = str(root / "maha-home")
    os.environ["HOME"] = str(root / "home")
    try:
        yield root
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="package")
def sim(homes: Path) -> Iterator[server.Server]:
    server.ensure_keys()
    state = server.ensure_server()
    try:
        yield state
    finally:
        server.stop()
        server.remove_hosts(state.token)


@pytest.fixture(scope="package")
def provisioned(sim: server.Server) -> subprocess.CompletedProcess[str]:
    """``invoke provision --env sim`` from group_data's counts, once for the package: the
    environment the provisioning test checks and the teardown test removes (the lifecycle
    test between them trims and deploys it). Its outcome is the provisioning test's to
    judge."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), "provision", "--env", "sim"],
        cwd=PROJECT_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
