"""Release builds: reproducible bytes, a checksum that verifies, the right contents."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from mahaops import release
from mahaops.release import APP_DIR, Release, assets

from .harness import App


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Release, Release]:
    """The app built twice from the same tree, into separate directories."""
    if not shutil.which("npm"):
        pytest.skip("npm is needed to build releases")
    first = release.build(tmp_path_factory.mktemp("first"))
    second = release.build(tmp_path_factory.mktemp("second"))
    return first, second


def test_release_build_produces_identical_bytes_twice(two_builds: tuple[Release, Release]) -> None:
    first, second = two_builds

    assert first.tarball.read_bytes() == second.tarball.read_bytes()
    assert first.sha256 == second.sha256


def test_release_checksum_verifies_and_catches_a_changed_byte(
    two_builds: tuple[Release, Release], tmp_path: Path
) -> None:
    built = two_builds[0]
    tampered = tmp_path / built.tarball.name
    data = bytearray(built.tarball.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    shutil.copy(built.checksum_file, release.checksum_path(tampered))

    assert release.verify(built.tarball)
    assert not release.verify(tampered)
    assert Release.from_tarball(built.tarball) == built


def test_release_is_named_by_build_time_and_commit(two_builds: tuple[Release, Release]) -> None:
    built = two_builds[0]

    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{7,40}(-dirty)?", built.id)
    assert built.tarball.name == f"maha-{built.id}.tar.gz"
    assert built.checksum_file.read_text() == f"{built.sha256}  {built.tarball.name}\n"


def test_release_holds_the_app_and_production_dependencies_only(
    two_builds: tuple[Release, Release],
) -> None:
    with tarfile.open(two_builds[0].tarball) as tar:
        members = tar.getmembers()
    names = {member.name for member in members}

    expected = {"package.json", "package-lock.json", "src/web.js", "src/worker.js"}
    expected |= {"src/migrate.js", "migrations/001_campaigns.sql", "public/app.js"}
    expected |= {"node_modules/pg/package.json", "node_modules/ioredis/package.json"}
    expected |= {"node_modules/ws/package.json"}
    assert expected <= names
    assert all(not name.startswith(("/", "..")) for name in names)
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "root", "root")}
    assert len({m.mtime for m in members}) == 1


def test_release_of_uncommitted_work_is_marked_dirty_and_leaves_secrets_and_tests_out(
    tmp_path: Path,
) -> None:
    if not shutil.which("npm"):
        pytest.skip("npm is needed to build releases")
    app = tmp_path / "checkout" / "app"
    shutil.copytree(APP_DIR, app, ignore=shutil.ignore_patterns("node_modules"))
    git = ["git", "-C", str(app.parent), "-c", "user.name=t", "-c", "user.email=t@example.test"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "app"], check=True)
    (app / "tests").mkdir()
    (app / "tests" / "web.test.js").write_text("// not for hosts\n")
    (app / ".env").write_text("DATABASE_URL=postgres://maha:real-secret@db/maha\n")
    (app / "npm-debug.log").write_text("noise\n")

    built = release.build(tmp_path / "out", app_dir=app)

    assert built.id.endswith("-dirty")
    with tarfile.open(built.tarball) as tar:
        names = tar.getnames()
    assert "src/web.js" in names
    assert not [name for name in names if name.split("/")[0] in {"tests", ".env", "npm-debug.log"}]


def test_release_names_its_assets_by_content_and_pages_load_them_from_the_asset_base(
    two_builds: tuple[Release, Release], migrated: App, tmp_path: Path
) -> None:
    with tarfile.open(two_builds[0].tarball) as tar:
        tar.extractall(tmp_path / "release", filter="data")
    root = tmp_path / "release"
    manifest = json.loads((root / "public" / "manifest.json").read_text())
    assert set(manifest) >= {"app.css", "app.js"}
    for original, hashed in manifest.items():
        content = (root / "public" / original).read_bytes()
        assert (root / "public" / hashed).read_bytes() == content
        assert hashed == assets.hashed_name(original, content)

    cdn = migrated.start_web("app-cdn", cwd=root, MAHA_ASSET_BASE_URL="https://cdn.example.test")
    own = migrated.start_web("app-own", cwd=root)
    try:
        linked = _asset_urls(cdn.get("/").body.decode())
        assert sorted(linked) == sorted(
            f"https://cdn.example.test/static/{manifest[name]}" for name in ("app.css", "app.js")
        )
        for url in _asset_urls(own.get("/").body.decode()):
            assert url.startswith("/static/") and assets.HASHED.search(url)
            answer = own.get(url)
            assert answer.status == 200
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert answer.body == (root / "public" / url.removeprefix("/static/")).read_bytes()
    finally:
        cdn.proc.stop()
        own.proc.stop()


def _asset_urls(html: str) -> list[str]:
    return re.findall(r'<(?:link rel="stylesheet" href|script src)="([^"]+)"', html)
