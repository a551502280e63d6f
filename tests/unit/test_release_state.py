"""What a host's releases say (issue 14): restarts owed, the release a process runs, and
the rollback target chosen across a fleet that stopped half way."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mahaops.release.rollout import HostRelease, RollbackError, default_target
from operations.release import Releases, ReleaseState


def fact_on(root: Path) -> ReleaseState:
    """The Releases fact's own command run on ``root`` (no systemd here: nothing runs)."""
    out = subprocess.run(
        ["sh", "-c", Releases().command(str(root))], capture_output=True, text=True, check=True
    ).stdout
    return Releases().process(out.splitlines())


def test_the_fact_reads_pending_restarts_and_the_last_switch(tmp_path: Path) -> None:
    for release in ("r1", "r2"):
        (tmp_path / "releases" / release).mkdir(parents=True)
        (tmp_path / "releases" / release / ".maha-release").touch()
    (tmp_path / "current").symlink_to("releases/r2")
    (tmp_path / "pending").mkdir()
    (tmp_path / "pending" / "maha-web").write_text("r2\n")
    (tmp_path / "release-history").write_text("100 r1 -\n200 r2 r1\n")

    state = fact_on(tmp_path)

    assert state.current == "r2" and state.releases == ["r1", "r2"]
    assert state.pending == {"maha-web": "r2"}
    assert (state.last_release, state.last_before, state.last_at) == ("r2", "r1", 200)
    assert state.needs_restart("maha-web")


def test_a_restart_is_owed_when_the_process_runs_another_release() -> None:
    settled = ReleaseState(current="r2", running={"maha-web": "r2"})
    stale = ReleaseState(current="r2", running={"maha-web": "r1"})
    stopped = ReleaseState(current="r2")

    assert not settled.needs_restart("maha-web")
    assert stale.needs_restart("maha-web")
    assert stopped.needs_restart("maha-web")


def host(name: str, current: str, last: str, before: str | None, at: int) -> HostRelease:
    return HostRelease(name, current, ("r0", "r1", "r2"), {}, {}, last, before, at)


def test_the_default_target_is_the_release_before_the_last_one_began() -> None:
    # The rollout of r2 stopped after app-1: app-2 and the worker never moved.
    fleet = [
        host("app-1", "r2", "r2", "r1", 300),
        host("app-2", "r1", "r1", "r0", 100),
        host("worker-1", "r1", "r1", "r0", 110),
    ]

    assert default_target(fleet) == "r1"


def test_no_default_target_when_the_hosts_ran_different_releases_before() -> None:
    fleet = [host("app-1", "r2", "r2", "r1", 300), host("app-2", "r2", "r2", "r0", 310)]

    with pytest.raises(RollbackError, match="--to"):
        default_target(fleet)
    with pytest.raises(RollbackError, match="--to"):
        default_target([HostRelease("app-1", None, (), {}, {}, None, None, 0)])
