"""The wheelhouse tarball (mahaops/wheelhouse.py): the same wheels give the same bytes, so a
second deploy puts nothing; the requirements are pinned with hashes; builds are found by
digest (no download when one exists)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from mahaops import wheelhouse


def _wheels(root: Path) -> Path:
    wheels = root / "wheels"
    wheels.mkdir()
    for name in ("b-1.0-py3-none-any.whl", "a-2.0-py3-none-any.whl", "requirements.txt"):
        (wheels / name).write_bytes(name.encode() * 100)
    return wheels


def test_the_same_wheels_pack_to_the_same_bytes(tmp_path: Path) -> None:
    wheels = _wheels(tmp_path)
    wheelhouse._pack(wheels, tmp_path / "one.tar")
    (wheels / "a-2.0-py3-none-any.whl").touch()  # a new mtime changes nothing
    wheelhouse._pack(wheels, tmp_path / "two.tar")
    assert (tmp_path / "one.tar").read_bytes() == (tmp_path / "two.tar").read_bytes()
    with tarfile.open(tmp_path / "one.tar") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [
        "wheels",
        "wheels/a-2.0-py3-none-any.whl",
        "wheels/b-1.0-py3-none-any.whl",
        "wheels/requirements.txt",
    ]
    assert {(m.mtime, m.uid, m.uname) for m in members} == {(0, 0, "root")}


def test_every_storage_requirement_is_pinned_with_a_hash() -> None:
    text = wheelhouse.STORAGE_REQUIREMENTS.read_text().replace("\\\n", " ")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert any(line.startswith("moto[s3]==5.2.5 ") for line in lines)
    for line in lines:
        assert "==" in line and "--hash=sha256:" in line, line


def test_a_build_of_the_same_requirements_is_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requirements = tmp_path / "req.txt"
    requirements.write_text("x==1 --hash=sha256:00\n")
    calls: list[Path] = []

    def download(req: Path, dest: Path, plat: str) -> None:
        calls.append(req)
        _wheels(dest.parent)  # dest is <tmp>/wheels

    monkeypatch.setattr(wheelhouse, "_download", download)
    first = wheelhouse.tarball("t", requirements, tmp_path / "out", "manylinux2014_x86_64")
    again = wheelhouse.tarball("t", requirements, tmp_path / "out", "manylinux2014_x86_64")
    assert first == again and len(calls) == 1
    requirements.write_text("x==2 --hash=sha256:00\n")
    other = wheelhouse.tarball("t", requirements, tmp_path / "out", "manylinux2014_x86_64")
    assert other != first and not first.exists() and len(calls) == 2


def test_the_hosts_platform_follows_this_machine() -> None:
    assert wheelhouse.target_platform("x86_64") == "manylinux2014_x86_64"
    assert wheelhouse.target_platform("arm64") == "manylinux2014_aarch64"
