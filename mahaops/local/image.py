"""The host image: Debian 12 with systemd, sshd, python3 and sudo, built without a registry.

Where a registry answers, ``debian:bookworm`` is pulled and set up in a container.
Otherwise the root filesystem is bootstrapped with debootstrap from this machine's own
Debian mirror (read from its apt sources) and imported with ``docker import``. Either
way the image is tagged with a hash of its recipe and rebuilt only when that changes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound

from mahaops.local.engine import apt_install

SUITE = "bookworm"
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "sudo",
    "iproute2", "ca-certificates", "procps", "apt-transport-https", "gnupg",
)  # fmt: skip
SETUP_SCRIPT = Path(__file__).with_name("host-setup.sh")
IMAGE_REPO = "maha/host"
RECIPE_VERSION = "1"  # bump to force a rebuild when the recipe changes in a way not hashed


@dataclass(frozen=True)
class Mirror:
    debian: str
    security: str | None


def _deb822_entries(text: str) -> list[dict[str, str]]:
    entries = []
    for block in re.split(r"\n\s*\n", text):
        entry: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith("#") or ":" not in line or line.startswith(" "):
                continue
            key, _, value = line.partition(":")
            entry[key.strip().lower()] = value.strip()
        if entry:
            entries.append(entry)
    return entries


def _apt_sources(root: Path = Path("/etc/apt")) -> list[tuple[str, str]]:
    """(uri, suite) pairs of every enabled deb source on this machine."""
    pairs: list[tuple[str, str]] = []
    lists = [root / "sources.list", *sorted((root / "sources.list.d").glob("*.list"))]
    for path in lists:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # type: ignore[assignment]
            if len(line) >= 3 and line[0] == "deb":
                pairs.append((line[1], line[2]))
    for path in sorted((root / "sources.list.d").glob("*.sources")):
        for entry in _deb822_entries(path.read_text()):
            if entry.get("enabled", "yes").lower() == "no" or "deb" not in entry.get("types", ""):
                continue
            for uri in entry.get("uris", "").split():
                for suite in entry.get("suites", "").split():
                    pairs.append((uri, suite))
    return pairs


_CODENAMES = ("buster", "bullseye", "bookworm", "trixie", "forky", "sid", "stable", "testing")


def find_mirror(root: Path = Path("/etc/apt")) -> Mirror:
    """This machine's Debian mirror, from its apt sources (MAHA_DEBIAN_MIRROR overrides)."""
    override = os.environ.get("MAHA_DEBIAN_MIRROR")
    if override:
        return Mirror(override.rstrip("/"), os.environ.get("MAHA_DEBIAN_SECURITY_MIRROR"))
    debian = security = None
    for uri, suite in _apt_sources(root):
        base = suite.split("-")[0].split("/")[0]
        if base not in _CODENAMES:
            continue
        if suite.endswith("-security") or suite.endswith("/updates"):
            security = security or uri.rstrip("/")
        elif "-" not in suite:
            debian = debian or uri.rstrip("/")
    if debian is None:
        raise RuntimeError(
            "no Debian mirror in this machine's apt sources; set MAHA_DEBIAN_MIRROR "
            "(e.g. to your organisation's Debian mirror URL)"
        )
    return Mirror(debian, security)


def _through_cache(url: str) -> str:
    """Hosts name the mirror in plain HTTP: the package cache speaks HTTP to them and
    fetches from the mirror over whatever scheme it has (mahaops/local/pkgcache.py)."""
    return "http://" + url.removeprefix("https://").removeprefix("http://")


def sources_list(mirror: Mirror) -> str:
    debian = _through_cache(mirror.debian)
    lines = [f"deb {debian} {SUITE} main", f"deb {debian} {SUITE}-updates main"]
    if mirror.security:
        lines.append(f"deb {_through_cache(mirror.security)} {SUITE}-security main")
    return "\n".join(lines) + "\n"


def recipe_hash(mirror: Mirror, deploy_user: str) -> str:
    digest = hashlib.sha256()
    for part in (RECIPE_VERSION, SUITE, " ".join(PACKAGES), sources_list(mirror), deploy_user):
        digest.update(part.encode() + b"\0")
    digest.update(SETUP_SCRIPT.read_bytes())
    return digest.hexdigest()[:12]


def image_tag(mirror: Mirror, deploy_user: str) -> str:
    return f"{IMAGE_REPO}:{SUITE}-{recipe_hash(mirror, deploy_user)}"


def ensure_image(
    client: docker.DockerClient,
    deploy_user: str = "maha",
    progress: Callable[[str], None] = lambda _msg: None,
) -> str:
    """The host image's tag, building it when no image of the current recipe exists."""
    mirror = find_mirror()
    tag = image_tag(mirror, deploy_user)
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    if _pull_base(client):
        progress("Building the host image from debian:bookworm")
        _build_from_pulled(client, tag, mirror, deploy_user)
    else:
        progress(f"Building the host image with debootstrap from {mirror.debian} (about a minute)")
        _build_with_debootstrap(client, tag, mirror, deploy_user)
    return tag


def _pull_base(client: docker.DockerClient) -> bool:
    try:
        client.images.pull("debian", tag=SUITE)
        return True
    except APIError:
        return False  # no registry here: build from the Debian mirror instead


_IMAGE_CHANGES = ['CMD ["/sbin/init"]', "ENV container=docker", "LABEL maha.project=maha"]


def _build_with_debootstrap(
    client: docker.DockerClient, tag: str, mirror: Mirror, deploy_user: str
) -> None:
    if shutil.which("debootstrap") is None:
        apt_install("debootstrap")
    with tempfile.TemporaryDirectory(prefix="maha-rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        subprocess.run(
            [
                "debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                SUITE, str(rootfs), mirror.debian,
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        (rootfs / "etc/apt/sources.list").write_text(sources_list(mirror))
        shutil.copy(SETUP_SCRIPT, rootfs / "tmp/host-setup.sh")
        # No daemons may start inside the chroot while packages are configured.
        subprocess.run(
            ["chroot", str(rootfs), "/bin/sh", "/tmp/host-setup.sh", deploy_user],
            check=True, capture_output=True,
        )  # fmt: skip
        (rootfs / "tmp/host-setup.sh").unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        cmd = ["docker", "import"]
        for change in _IMAGE_CHANGES:
            cmd += ["--change", change]
        subprocess.run([*cmd, "-", tag], stdin=tar.stdout, check=True, capture_output=True)
        if tar.wait() != 0:
            raise RuntimeError("tar of the host root filesystem failed")


def _build_from_pulled(
    client: docker.DockerClient, tag: str, mirror: Mirror, deploy_user: str
) -> None:
    container = client.containers.run(
        f"debian:{SUITE}", ["sleep", "infinity"], detach=True, labels={"maha.project": "maha"}
    )
    try:
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(SETUP_SCRIPT, arcname="host-setup.sh")
        container.put_archive("/tmp", archive.getvalue())
        script = (
            "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -q; "
            f"apt-get install -y -q --no-install-recommends {' '.join(PACKAGES)}; "
            f"sh /tmp/host-setup.sh {deploy_user}; rm /tmp/host-setup.sh"
        )
        code, output = container.exec_run(["sh", "-c", script])
        if code != 0:
            raise RuntimeError(f"host image set-up failed: {output.decode()[-2000:]}")
        container.commit(
            repository=tag.split(":")[0], tag=tag.split(":")[1],
            changes=_IMAGE_CHANGES,
        )  # fmt: skip
    finally:
        container.remove(force=True)
