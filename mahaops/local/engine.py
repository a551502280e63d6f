"""A Docker engine to talk to: the one already running, or one we start (root on Debian/Ubuntu)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import docker
from docker.errors import DockerException

DOCKERD_LOG = Path("/var/log/maha-dockerd.log")


class EngineError(RuntimeError):
    pass


def _client() -> docker.DockerClient | None:
    try:
        client = docker.from_env(timeout=120)
        client.ping()
        return client
    except DockerException:
        return None


def apt_install(*packages: str) -> None:
    """Install Debian packages (root only): the engine, debootstrap, the package cache."""
    missing = [p for p in packages if not _dpkg_installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise EngineError(f"need root to install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # apt lists may be missing on a fresh machine; update once, tolerating unreachable extras.
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
        env=env,
        check=True,
        capture_output=True,
    )


def _dpkg_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() == "install ok installed"


def ensure_engine(wait: float = 60.0) -> docker.DockerClient:
    """A client for a running Docker engine, starting ``dockerd`` when none answers.

    On a laptop with Docker running this does nothing. On a bare Debian/Ubuntu machine
    (as root) it installs ``docker.io`` and starts ``dockerd --iptables=false`` in the
    background, logging to /var/log/maha-dockerd.log: this machine's firewall is not ours
    to change, and published ports on 127.0.0.1 work through docker-proxy without it.
    """
    client = _client()
    if client is not None:
        return client
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        raise EngineError(
            "no Docker engine answers; start Docker (or run as root on Debian/Ubuntu "
            "to let the project start one)"
        )
    if shutil.which("dockerd") is None:
        apt_install("docker.io")
    with DOCKERD_LOG.open("ab") as log:
        subprocess.Popen(
            ["dockerd", "--iptables=false"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives the task that started it
        )
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        client = _client()
        if client is not None:
            return client
        time.sleep(0.5)
    raise EngineError(f"dockerd did not answer within {wait:.0f}s; see {DOCKERD_LOG}")


# systemd in every host container takes inotify instances from the same (root) user; past
# ~20 hosts the kernel's default of 128 runs out and new hosts exit at once.
INOTIFY_MINIMUMS = {
    "/proc/sys/fs/inotify/max_user_instances": 1024,
    "/proc/sys/fs/inotify/max_user_watches": 524288,
}


def raise_inotify_limits() -> list[str]:
    """Raise this machine's inotify limits for many systemd containers (root only).

    Returns what it could not raise, for the caller to report.
    """
    short = []
    for path, minimum in INOTIFY_MINIMUMS.items():
        try:
            current = int(Path(path).read_text())
            if current < minimum:
                Path(path).write_text(str(minimum))
        except (OSError, ValueError):
            short.append(f"{path} (want {minimum})")
    return short
