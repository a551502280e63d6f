"""The release build: the app and its production dependencies as one reproducible tarball.

The operator's machine builds a release once (``invoke build``, or a deploy through
``cache.current_build``); deploys push
those exact bytes to every host, which unpacks them into
``/srv/maha/releases/<id>`` (entries are relative: ``tar -xzf … -C <dir>``).
Hosts therefore need neither npm nor registry access.

Same input, same bytes: entries are sorted, owners are root, modes are
normalised, every mtime is the time of the last commit touching ``app/``
(or ``SOURCE_DATE_EPOCH``), and the gzip header carries no name or time.
The release id (build time and commit) lives only in the file name, so two
builds of one tree differ in name, never in content.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mahaops import PROJECT_ROOT
from mahaops.release import assets

APP_DIR = PROJECT_ROOT / "app"
DEFAULT_OUT_DIR = PROJECT_ROOT / "build" / "releases"
TARBALL_PREFIX = "maha-"
TARBALL_SUFFIX = ".tar.gz"

# Never shipped: dependencies are installed fresh, tests stay home, and a
# developer's .env may hold real secrets.
EXCLUDED_NAMES = frozenset({"node_modules", "test", "tests", ".git", ".env", ".DS_Store"})
EXCLUDED_SUFFIXES = (".log",)


class ReleaseError(RuntimeError):
    """The release could not be built (not a git checkout, npm failed, …)."""


@dataclass(frozen=True)
class Release:
    id: str
    tarball: Path
    sha256: str

    @property
    def checksum_file(self) -> Path:
        return checksum_path(self.tarball)

    @property
    def size(self) -> int:
        return self.tarball.stat().st_size

    @classmethod
    def from_tarball(cls, tarball: Path) -> Release:
        """The release a built tarball holds, read from its name and checksum file."""
        name = tarball.name
        if not (name.startswith(TARBALL_PREFIX) and name.endswith(TARBALL_SUFFIX)):
            raise ReleaseError(f"{tarball} is not named {TARBALL_PREFIX}<id>{TARBALL_SUFFIX}")
        digest = _recorded_digest(tarball)
        if digest is None:
            raise ReleaseError(f"{checksum_path(tarball)} is missing or malformed")
        return cls(name[len(TARBALL_PREFIX) : -len(TARBALL_SUFFIX)], tarball, digest)


def build(out_dir: Path = DEFAULT_OUT_DIR, *, app_dir: Path = APP_DIR) -> Release:
    """Build ``maha-<id>.tar.gz`` and its ``.sha256`` in ``out_dir``.

    The id is ``<UTC build time>-<git short sha>``, with ``-dirty`` when
    ``app_dir`` has uncommitted changes. Needs git, node and npm.
    """
    release_id = _release_id(app_dir)
    mtime = _source_date_epoch(app_dir)
    with tempfile.TemporaryDirectory(prefix="maha-release-") as tmp:
        staging = Path(tmp) / "app"
        _copy_app(app_dir, staging)
        if (staging / assets.PUBLIC).is_dir():
            assets.fingerprint(staging / assets.PUBLIC)  # hashed names, cached for a year
        _install_production_dependencies(staging)
        out_dir.mkdir(parents=True, exist_ok=True)
        tarball = out_dir / f"{TARBALL_PREFIX}{release_id}{TARBALL_SUFFIX}"
        _write_tarball(staging, tarball, mtime)
    digest = _sha256(tarball)
    _write_atomically(checksum_path(tarball), f"{digest}  {tarball.name}\n".encode())
    return Release(release_id, tarball, digest)


def verify(tarball: Path) -> bool:
    """True when ``tarball`` matches the digest in its ``.sha256`` file."""
    recorded = _recorded_digest(tarball)
    return recorded is not None and tarball.is_file() and _sha256(tarball) == recorded


def checksum_path(tarball: Path) -> Path:
    return tarball.with_name(tarball.name + ".sha256")


# -- identity ------------------------------------------------------------------------------------


def _git(app_dir: Path, *args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=app_dir, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ReleaseError(f"git {' '.join(args)} failed in {app_dir}: {exc}") from exc
    return done.stdout.strip()


def _release_id(app_dir: Path) -> str:
    built = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    sha = _git(app_dir, "rev-parse", "--short", "HEAD")
    dirty = _git(app_dir, "status", "--porcelain", "--", ".") != ""
    return f"{built}-{sha}{'-dirty' if dirty else ''}"


def _source_date_epoch(app_dir: Path) -> int:
    # The reproducible-builds convention first; else the app's last commit,
    # so mtimes (and nginx's Last-Modified/ETag for static files) move
    # forward with every change to the app.
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    last = _git(app_dir, "log", "-1", "--format=%ct", "--", ".")
    return int(last) if last else 0


# -- staging -------------------------------------------------------------------------------------


def excluded(name: str) -> bool:
    """True for a file or directory name a release never ships (nor its content digest reads)."""
    return name in EXCLUDED_NAMES or name.endswith(EXCLUDED_SUFFIXES)


def _excluded(_directory: str, names: list[str]) -> set[str]:
    return {name for name in names if excluded(name)}


def _copy_app(app_dir: Path, staging: Path) -> None:
    if not (app_dir / "package-lock.json").is_file():
        raise ReleaseError(f"{app_dir} has no package-lock.json: npm ci needs one")
    shutil.copytree(app_dir, staging, ignore=_excluded, symlinks=True)


def _install_production_dependencies(staging: Path) -> None:
    npm = shutil.which("npm")
    if npm is None:
        raise ReleaseError("npm not found: install Node.js and npm to build releases")
    # --ignore-scripts: no package code runs on the operator's machine, and
    # the app's dependencies are pure JavaScript with nothing to compile.
    command = [npm, "ci", "--omit=dev", "--ignore-scripts", "--no-audit", "--no-fund"]
    command.append("--prefer-offline")  # the npm cache makes rebuilds fast and offline
    done = subprocess.run(
        command,
        cwd=staging,
        capture_output=True,
        text=True,
        env={**os.environ, "NPM_CONFIG_UPDATE_NOTIFIER": "false"},
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise ReleaseError(f"npm ci failed (exit {done.returncode}):\n{tail}")


# -- the tarball ---------------------------------------------------------------------------------


def _entries(root: Path) -> Iterator[Path]:
    """Every path under ``root`` in a fixed order: sorted by name, parents first."""
    for child in sorted(root.iterdir(), key=lambda path: path.name):
        yield child
        if child.is_dir() and not child.is_symlink():
            yield from _entries(child)


def _tarinfo(root: Path, path: Path, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.relative_to(root).as_posix())
    info.mtime = mtime
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if path.is_symlink():
        target = os.readlink(path)
        if not (path.parent / target).resolve().is_relative_to(root.resolve()):
            raise ReleaseError(f"{path} links outside the release: {target}")
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    elif path.is_dir():
        info.type, info.mode = tarfile.DIRTYPE, 0o755
    else:
        executable = path.stat().st_mode & 0o111
        info.size, info.mode = path.stat().st_size, 0o755 if executable else 0o644
    return info


def _write_tarball(root: Path, tarball: Path, mtime: int) -> None:
    partial = tarball.with_name(tarball.name + ".part")
    # mtime=0 and an empty name keep the gzip header free of time and paths.
    with (
        partial.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in _entries(root):
            info = _tarinfo(root, path, mtime)
            if info.isreg():
                with path.open("rb") as content:
                    tar.addfile(info, content)
            else:
                tar.addfile(info)
    partial.replace(tarball)


# -- checksums -----------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _recorded_digest(tarball: Path) -> str | None:
    """The digest in ``<tarball>.sha256`` (``sha256sum`` format), or None."""
    try:
        fields = checksum_path(tarball).read_text().split()
    except OSError:
        return None
    digest = fields[0].lower() if fields else ""
    valid = len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
    return digest if valid else None


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    partial.replace(path)
