"""Python wheels for hosts that cannot reach PyPI, built once on the operator's machine.

Hosts reach only the Debian mirror (through the package cache). A role that needs Python
packages Debian does not carry (the storage role's moto) gets them as a *wheelhouse*:
``pip download`` of a pinned requirements file for the hosts' platform (Debian 12:
CPython 3.11, manylinux2014), packed as one tarball that ``files.put`` sends and
``pip install --no-index --find-links`` installs from.

Builds are remembered by content, like release builds (``mahaops/release/cache.py``):
``build/wheelhouse/<name>-<digest>.tar``, the digest of the requirements file, the target
and the format; a new build removes the older ones of the same name. Every requirement is
pinned with its wheel's hash, checked by ``pip download`` here and ``pip install`` there.
The same requirements give the same file (sorted entries, mtime 0, root's, uncompressed:
wheels are compressed already), so a second deploy puts nothing. Builds hold
``.build.lock`` in the directory, polled as the release cache does (gevent greenlets).
"""

from __future__ import annotations

import hashlib
import io
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from mahaops import PROJECT_ROOT
from mahaops.release.cache import _build_lock

DEFAULT_DIR = PROJECT_ROOT / "build" / "wheelhouse"
FORMAT = b"1"  # raised when a build makes something else of the same requirements
PYTHON_VERSION = "3.11"  # Debian 12's python3
ABI = "cp311"


class WheelhouseError(RuntimeError):
    pass


def target_platform(machine: str | None = None) -> str:
    """pip's platform tag for the hosts: they run on this machine's architecture (Docker)."""
    arch = {"amd64": "x86_64", "arm64": "aarch64"}.get(
        (machine or platform.machine()).lower(), (machine or platform.machine()).lower()
    )
    return f"manylinux2014_{arch}"


def digest(requirements: Path, plat: str) -> str:
    h = hashlib.sha256(b"wheelhouse " + FORMAT + b"\0")
    h.update(f"{plat} {PYTHON_VERSION} {ABI}\0".encode())
    h.update(requirements.read_bytes())
    return h.hexdigest()


def tarball(
    name: str, requirements: Path, out_dir: Path = DEFAULT_DIR, plat: str | None = None
) -> Path:
    """The wheelhouse of ``requirements`` as one tarball (``wheels/*.whl`` and
    ``wheels/requirements.txt``): an earlier build of the same requirements, or a new one."""
    plat = plat or target_platform()
    key = digest(requirements, plat)[:16]
    path = out_dir / f"{name}-{key}.tar"
    with _build_lock(out_dir):
        if path.is_file():
            return path
        with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=out_dir) as tmp:
            wheels = Path(tmp) / "wheels"
            _download(requirements, wheels, plat)
            (wheels / "requirements.txt").write_bytes(requirements.read_bytes())
            partial = Path(tmp) / path.name
            _pack(wheels, partial)
            partial.replace(path)
        for stale in out_dir.glob(f"{name}-*.tar"):  # older requirements' builds
            if stale != path:
                stale.unlink()
    return path


def _download(requirements: Path, dest: Path, plat: str) -> None:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--platform", plat, "--python-version", PYTHON_VERSION,
        "--implementation", "cp", "--abi", ABI, "--require-hashes",
        "-d", str(dest), "-r", str(requirements),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise WheelhouseError(
            f"pip download of {requirements.name} for {plat} failed ({done.returncode}):\n"
            f"{done.stderr.strip() or done.stdout.strip()}"
        )


def _pack(directory: Path, out: Path) -> None:
    """Same files, same bytes: sorted names, mtime 0, root's, modes 0644/0755."""
    with (
        out.open("wb") as raw,
        tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        top = tarfile.TarInfo(directory.name)
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, 0
        top.uid = top.gid = 0
        top.uname = top.gname = "root"
        tar.addfile(top)
        for path in sorted(directory.iterdir(), key=lambda p: p.name):
            info = tarfile.TarInfo(f"{directory.name}/{path.name}")
            data = path.read_bytes()
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))


STORAGE_REQUIREMENTS = Path(__file__).with_name("storage_requirements.txt")


def storage_server() -> Path:
    """The storage role's wheelhouse (moto's S3 server and its dependencies)."""
    return tarball("maha-s3", STORAGE_REQUIREMENTS)
