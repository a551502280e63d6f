"""Fixtures of the sim's modules: a MAHA_HOME and HOME of the module's own (the server's
state and the sim key pair) and the stand-in's server, stopped with its hosts at the end."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from mahaops.sim import server


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """MAHA_HOME and HOME of the module's own: the server's state and the sim key pair."""
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


@pytest.fixture(scope="module")
def sim(homes: Path) -> Iterator[server.Server]:
    server.ensure_keys()
    state = server.ensure_server()
    try:
        yield state
    finally:
        server.stop()
        server.remove_hosts(state.token)
