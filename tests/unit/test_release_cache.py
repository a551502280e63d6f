"""Builds remembered by content: recorded by `invoke build`, reused by deploys, built once
even when greenlets of one process ask at the same time. The build itself is faked here
(tests/app/test_release.py builds for real)."""

from __future__ import annotations

import fcntl
import hashlib
from pathlib import Path

import gevent
import pytest
from invoke.context import Context

from mahaops.release import cache, tarball
from mahaops.release.tarball import Release, ReleaseError, checksum_path, verify
from mahaops.tasks import release as release_tasks


class FakeBuild:
    """Stands in for the tarball build: a small file and its checksum, counted."""

    def __init__(self, pause: float = 0.0) -> None:
        self.calls = 0
        self.pause = pause  # seconds to hold the lock, yielding to other greenlets

    def __call__(self, out_dir: Path, *, app_dir: Path) -> Release:
        self.calls += 1
        gevent.sleep(self.pause)
        path = out_dir / f"maha-r{self.calls}.tar.gz"
        path.write_bytes(f"release {self.calls} of {app_dir}".encode())
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        checksum_path(path).write_text(f"{digest}  {path.name}\n")
        return Release.from_tarball(path)


@pytest.fixture
def fake_build(monkeypatch: pytest.MonkeyPatch) -> FakeBuild:
    fake = FakeBuild()
    monkeypatch.setattr(tarball, "build", fake)
    return fake


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    (app / "src").mkdir(parents=True)
    (app / "src" / "web.js").write_text("// v1\n")
    (app / "node_modules").mkdir()  # not part of the content
    return app


def test_invoke_build_records_its_release_for_a_later_deploy(
    fake_build: FakeBuild, tmp_path: Path
) -> None:
    out = tmp_path / "releases"

    release_tasks.build(Context(), out=str(out))
    later = cache.current_build(out_dir=out)

    assert fake_build.calls == 1
    assert later.tarball == out / "maha-r1.tar.gz"
    assert cache.INDEX_NAME in {p.name for p in out.iterdir()}


def test_a_tree_is_built_once_per_content(
    fake_build: FakeBuild, app_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "releases"

    first = cache.current_build(app_dir, out)
    (app_dir / "node_modules" / "left-pad.js").write_text("// ignored\n")
    again = cache.current_build(app_dir, out)
    (app_dir / "src" / "web.js").write_text("// v2\n")
    changed = cache.current_build(app_dir, out)

    assert fake_build.calls == 2
    assert again == first
    assert changed.id != first.id


def test_greenlets_of_one_process_wait_for_one_build(
    fake_build: FakeBuild, app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "LOCK_TIMEOUT", 5.0)
    fake_build.pause = 0.3  # the first holds the lock, yielding, while the others ask
    out = tmp_path / "releases"

    greenlets = [gevent.spawn(cache.current_build, app_dir, out) for _ in range(3)]
    gevent.joinall(greenlets, raise_error=True, timeout=10)

    assert fake_build.calls == 1
    assert len({g.value for g in greenlets}) == 1


def test_a_build_lock_held_too_long_fails_clearly(
    fake_build: FakeBuild, app_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cache, "LOCK_TIMEOUT", 0.3)
    out = tmp_path / "releases"
    out.mkdir()

    with (out / cache.LOCK_NAME).open("w") as other:  # another run, building
        fcntl.flock(other, fcntl.LOCK_EX)
        with pytest.raises(ReleaseError, match="another build has held"):
            cache.current_build(app_dir, out)

    assert fake_build.calls == 0


def test_a_given_tarball_is_checked_against_its_checksum(
    fake_build: FakeBuild, app_dir: Path, tmp_path: Path
) -> None:
    built = cache.build(tmp_path, app_dir=app_dir)
    kept = tmp_path / "kept"

    assert cache.chosen(str(built.tarball), keep_in=kept) == built
    built.tarball.write_bytes(b"changed")
    with pytest.raises(ReleaseError, match="does not match its checksum"):
        cache.chosen(built.tarball, keep_in=kept)


def test_a_given_tarball_is_kept_where_later_commands_find_the_running_release(
    fake_build: FakeBuild, app_dir: Path, tmp_path: Path
) -> None:
    # `invoke release --tarball` of a build made elsewhere: a later scale or replace looks
    # for the release its hosts run in the releases directory, and must not fall back to
    # building app/ (which would switch the hosts to another release).
    built = cache.build(tmp_path / "elsewhere", app_dir=app_dir)
    kept = tmp_path / "releases"

    assert cache.chosen(built.tarball, keep_in=kept) == built
    copy = kept / built.tarball.name
    assert copy.read_bytes() == built.tarball.read_bytes()
    assert verify(copy)
    assert sorted(p.name for p in kept.iterdir()) == [copy.name, copy.name + ".sha256"]
    assert cache.chosen(copy, keep_in=kept) == Release.from_tarball(copy)  # kept: no copy
