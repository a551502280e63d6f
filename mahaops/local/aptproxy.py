"""The caching apt proxy the hosts install packages through (apt-cacher-ng on this machine).

Containers here have no route out; apt-cacher-ng on the host, its Debian backend set
to this machine's own mirror, fetches for them and caches, so the second host (and
the second test run) installs from cache. Hosts learn it from ``apt_proxy``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

from mahaops.local.engine import apt_install
from mahaops.local.image import find_mirror

PORT = 3142
CONF_DIR = Path("/etc/apt-cacher-ng")


def answers(host: str = "127.0.0.1", port: int = PORT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def ensure_apt_proxy(bind: list[str], wait: float = 20.0) -> None:
    """apt-cacher-ng answering on ``bind`` addresses (port 3142), installed and started if needed.

    Binds only loopback and the Docker bridge gateway, so the cache is not offered to
    the machine's other networks.
    """
    if os.geteuid() != 0:
        if answers():
            return
        raise RuntimeError(
            "no apt proxy answers on 127.0.0.1:3142 and installing one needs root; "
            "run as root, or set apt_proxy = None in group_data/local.py if your "
            "containers can reach a Debian mirror themselves"
        )
    apt_install("apt-cacher-ng")
    mirror = find_mirror()
    wanted = {
        "backends_debian": f"{mirror.debian}/\n",
        "zz_maha.conf": (
            "# Written by the Maha platform's set-up (mahaops/local/aptproxy.py).\n"
            f"Port: {PORT}\n"
            f"BindAddress: {' '.join(bind)}\n"
            # Index files (dists/) pass straight through: refreshing a cached InRelease
            # while several hosts ask for it at once can leave a client hanging for good.
            # Packages (pool/) are what is worth caching.
            "DontCacheRequested: /dists/\n"
        ),
    }
    changed = False
    for name, content in wanted.items():
        path = CONF_DIR / name
        if not path.exists() or path.read_text() != content:
            path.write_text(content)
            changed = True
    running = subprocess.run(["pgrep", "-x", "apt-cacher-ng"], capture_output=True).returncode == 0
    if running and changed:
        subprocess.run(["/etc/init.d/apt-cacher-ng", "restart"], check=False, capture_output=True)
    elif not running:
        subprocess.run(["/etc/init.d/apt-cacher-ng", "start"], check=False, capture_output=True)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if answers():
            return
        time.sleep(0.3)
    raise RuntimeError("apt-cacher-ng did not answer on 127.0.0.1:3142; see /var/log/apt-cacher-ng")
