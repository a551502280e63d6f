"""Builds remembered by content, and the one decision of which release a run deploys.

Every build into a directory is recorded in its index (``by-source.json``: digest of
app/'s content -> tarball name, beside the tarballs), whether ``invoke build`` made it
or a deploy did: a tree already built is not built again, so converging twice pushes
the same release id and changes nothing.

Builds and index updates hold ``.build.lock`` in that directory, so two runs at once
build once. The lock is polled, never waited on with a blocking ``flock``: the deploy
runner asks from gevent greenlets of one process, and a blocking call there would stop
the greenlet holding the lock as well as the one waiting for it.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mahaops.release import tarball
from mahaops.release.tarball import (
    APP_DIR,
    DEFAULT_OUT_DIR,
    Release,
    ReleaseError,
    checksum_path,
    verify,
)

INDEX_NAME = "by-source.json"  # source digest -> tarball name, beside the tarballs
LOCK_NAME = ".build.lock"
LOCK_TIMEOUT = 900.0  # seconds: a cold `npm ci` takes minutes, not a quarter of an hour
LOCK_POLL = 0.1  # seconds between attempts
BUILD_FORMAT = b"2"  # raised when a build makes something else of the same app/ (2: hashed assets)


def source_digest(app_dir: Path = APP_DIR) -> str:
    """A digest of everything a release build reads: names, modes and bytes of app/."""
    digest = hashlib.sha256(b"format " + BUILD_FORMAT + b"\0")
    for root, dirs, files in os.walk(app_dir):
        dirs[:] = sorted(d for d in dirs if not tarball.excluded(d))
        for name in sorted(files):
            if tarball.excluded(name):
                continue
            path = Path(root) / name
            digest.update(str(path.relative_to(app_dir)).encode() + b"\0")
            if path.is_symlink():
                digest.update(b"link:" + os.readlink(path).encode())
            else:
                digest.update(b"x" if os.access(path, os.X_OK) else b"-")
                digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def current_build(app_dir: Path = APP_DIR, out_dir: Path = DEFAULT_OUT_DIR) -> Release:
    """The release of ``app_dir`` as it is now: an earlier build of the same tree, or a new one."""
    key = source_digest(app_dir)
    with _build_lock(out_dir):
        known = out_dir / _index(out_dir).get(key, "-")
        if known.is_file() and verify(known):
            return Release.from_tarball(known)
        return _build_and_record(key, app_dir, out_dir)


def build(out_dir: Path = DEFAULT_OUT_DIR, *, app_dir: Path = APP_DIR) -> Release:
    """Build ``app_dir`` now, even if built before, and record it for later runs to reuse."""
    key = source_digest(app_dir)
    with _build_lock(out_dir):
        return _build_and_record(key, app_dir, out_dir)


def chosen(tarball_path: str | Path = "", keep_in: Path = DEFAULT_OUT_DIR) -> Release:
    """The release to deploy: ``tarball_path`` (checked against its .sha256), or app/ as it is.

    The only place that decides between an operator's tarball and a build of app/. A
    tarball from elsewhere is also kept in ``keep_in``, where later commands look for the
    release a role runs (a host added or re-converged keeps it, not a build of app/).
    """
    if not tarball_path:
        return current_build()
    path = Path(tarball_path).expanduser().resolve()
    release = Release.from_tarball(path)
    if not verify(path):
        raise ReleaseError(f"{path} does not match its checksum file: rebuild it")
    kept = keep_in.resolve() / path.name
    if kept != path and not (kept.is_file() and verify(kept)):
        keep_in.mkdir(parents=True, exist_ok=True)
        for source, target in ((path, kept), (checksum_path(path), checksum_path(kept))):
            partial = target.with_name(f".{target.name}.{os.getpid()}")
            shutil.copyfile(source, partial)
            partial.replace(target)  # whole or absent, for a reader at the same time
    return release


@functools.cache
def for_run(tarball_path: str = "") -> Release:
    """The release this run deploys (see ``chosen``), resolved once per process."""
    return chosen(tarball_path)


# -- the index and its lock ----------------------------------------------------------------------


def _index(out_dir: Path) -> dict[str, str]:
    path = out_dir / INDEX_NAME
    return json.loads(path.read_text()) if path.exists() else {}


def _build_and_record(key: str, app_dir: Path, out_dir: Path) -> Release:
    """Build (the caller holds the lock) and record the tarball under ``key``."""
    built = tarball.build(out_dir, app_dir=app_dir)
    index = _index(out_dir)  # read again: entries for other trees may have been added
    index[key] = built.tarball.name
    path = out_dir / INDEX_NAME
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(index, indent=1, sort_keys=True))
    partial.replace(path)
    return built


@contextmanager
def _build_lock(out_dir: Path) -> Iterator[None]:
    """``out_dir`` to this caller alone: other processes, threads and greenlets wait.

    Each call opens the lock file anew, so even two callers in one process hold different
    open file descriptions and exclude each other; the wait between attempts yields.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + LOCK_TIMEOUT
    with (out_dir / LOCK_NAME).open("w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise ReleaseError(
                        f"another build has held {out_dir / LOCK_NAME} for "
                        f"{LOCK_TIMEOUT:.0f} s: is a build stuck?"
                    ) from None
                _pause(LOCK_POLL)
        yield  # closing the file releases the lock, whatever happens inside


def _pause(seconds: float) -> None:
    # With gevent loaded (the deploy runner), its sleep lets the greenlet holding the lock
    # finish; gevent's monkey patching makes time.sleep do the same, but is not required.
    gevent = sys.modules.get("gevent")
    if gevent is not None:
        gevent.sleep(seconds)
    else:
        time.sleep(seconds)
