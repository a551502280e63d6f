"""A strict stand-in Debian mirror on loopback, for testing the package cache.

It behaves like the strict mirrors some machines have: a request carrying any header
twice is answered 400 (RFC 9110 lets a server refuse it; for ``Host`` RFC 9112 says it
must). It can answer every request 400 or hold responses back for a while, and it
records every request it got. What it serves is a real, signed repository: a few real
``.deb`` files fetched once from this machine's own mirror (``apt-get download``),
indexed by ``apt-ftparchive`` and signed with a key made for the test session.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SUITE = "maha-test"
PACKAGES = ("hello", "tree")  # small, and need nothing beyond libc6


@dataclass
class Seen:
    method: str
    path: str
    headers: list[tuple[str, str]]
    status: int = 0

    @property
    def duplicated(self) -> list[str]:
        counts = Counter(name.lower() for name, _ in self.headers)
        return sorted(name for name, count in counts.items() if count > 1)


@dataclass
class Repository:
    root: Path  # serves root/debian/...
    public_key: bytes  # binary OpenPGP key for signed-by
    packages: tuple[str, ...]


def _run(*cmd: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> bytes:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.decode(errors='replace')[-800:]}")
    return result.stdout


def build_repository(where: Path) -> Repository:
    """A signed repository of PACKAGES under ``where``/debian."""
    debian = where / "debian"
    pool = debian / "pool" / "main"
    pool.mkdir(parents=True)
    _run("apt-get", "download", "-q", *PACKAGES, cwd=pool)
    arch = _run("dpkg", "--print-architecture").decode().strip()
    dist = debian / "dists" / SUITE
    binary = dist / "main" / f"binary-{arch}"
    binary.mkdir(parents=True)
    (binary / "Packages").write_bytes(_run("apt-ftparchive", "packages", "pool/main", cwd=debian))
    _run("gzip", "-k9", str(binary / "Packages"))
    release = _run(
        "apt-ftparchive",
        "-o", f"APT::FTPArchive::Release::Suite={SUITE}",
        "-o", f"APT::FTPArchive::Release::Codename={SUITE}",
        "-o", f"APT::FTPArchive::Release::Architectures={arch}",
        "-o", "APT::FTPArchive::Release::Components=main",
        "release", ".",
        cwd=dist,
    )  # fmt: skip
    (dist / "Release").write_bytes(release)
    gnupg = where / "gnupg"
    gnupg.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(gnupg)}
    gpg = ("gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--passphrase", "")
    _run(*gpg, "--quick-gen-key", "Maha test mirror <mirror@maha.test>", "ed25519", "sign", "1d",
         env=env)  # fmt: skip
    _run(*gpg, "--clearsign", "-o", str(dist / "InRelease"), str(dist / "Release"), env=env)
    _run(*gpg, "--detach-sign", "-o", str(dist / "Release.gpg"), str(dist / "Release"), env=env)
    key = _run("gpg", "--batch", "--export", env=env)
    return Repository(where, key, PACKAGES)


class StandinMirror:
    """The stand-in, serving ``repository`` on 127.0.0.1 (any free port)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.mode = "ok"  # ok | reject (400 to everything) | stall (hold every response)
        self.stall_seconds = 0.0  # with mode "stall", or for index files in mode "ok"
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> StandinMirror:
        self._thread.start()
        return self

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def reset(self, mode: str = "ok", stall_seconds: float = 0.0) -> None:
        with self._lock:
            self.mode, self.stall_seconds = mode, stall_seconds
            self.requests.clear()

    def seen(self) -> list[Seen]:
        with self._lock:
            return list(self.requests)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET(body=False)

            def do_GET(self, body: bool = True) -> None:
                seen = Seen(self.command, self.path, list(self.headers.items()))
                with mirror._lock:
                    mirror.requests.append(seen)
                    mode, stall = mirror.mode, mirror.stall_seconds
                if seen.duplicated:
                    return self._answer(seen, 400, b"duplicated header\n", body)
                if mode == "reject":
                    return self._answer(seen, 400, b"rejected by the stand-in\n", body)
                if mode == "stall" or (stall and "/dists/" in self.path):
                    mirror._closing.wait(stall)
                path = mirror.repository.root / self.path.split("?")[0].lstrip("/")
                root = mirror.repository.root.resolve()
                if not path.resolve().is_relative_to(root) or not path.is_file():
                    return self._answer(seen, 404, b"not found\n", body)
                self._answer(seen, 200, path.read_bytes(), body)

            def _answer(self, seen: Seen, status: int, data: bytes, body: bool) -> None:
                seen.status = status
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Last-Modified", self.date_time_string(time.time() - 60))
                    self.end_headers()
                    if body:
                        self.wfile.write(data)
                except OSError:
                    pass  # the client (the cache) gave up first: that is what a stall tests

        return Handler


def fresh_repository() -> Repository:
    return build_repository(Path(tempfile.mkdtemp(prefix="maha-standin-mirror-")))
