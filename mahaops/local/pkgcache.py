"""The package cache the local hosts install through: nginx as a caching mirror.

Containers here have no route out. Hosts keep their ordinary Debian sources and send
apt through ``apt_proxy``; nginx on this machine answers those proxy requests for the
mirror hosts it knows (this machine's own Debian mirror, read from its apt sources) and
refuses every other host, so it is no open proxy.

Why nginx, on evidence (see docs/package-cache.md): apt-cacher-ng forwards a client's
own headers after its own for the paths it passes through, so a strict mirror gets two
``Host:`` headers and answers 400; and without pass-through, concurrent refreshes of the
same index left hosts waiting for good. nginx builds each upstream request itself (one
``Host``, no client hop headers), collapses concurrent misses of one file into one
fetch (``proxy_cache_lock``), and bounds every wait: connect, read, the lock, and the
client side. The worst a host sees is a 504 within ``upstream_timeout`` seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from mahaops.local.engine import apt_install

PORT = 3150  # apt-cacher-ng's 3142 is left alone: a machine may run one of its own
STATE_DIR = Path("/var/lib/maha-pkgcache")
LOG_DIR = Path("/var/log/maha-pkgcache")


class PackageCacheError(RuntimeError):
    pass


@dataclass(frozen=True)
class Upstream:
    """A mirror host the cache serves: ``name`` as the hosts' sources spell it (always
    http: the cache speaks plain HTTP to hosts), ``origin`` where it really is."""

    name: str  # e.g. deb.debian.org
    origin: str  # e.g. http://deb.debian.org or https://mirror.example.org:8443

    @classmethod
    def from_url(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PackageCacheError(f"mirror {url!r} is not an http(s) URL")
        return cls(parts.hostname, f"{parts.scheme}://{parts.netloc}")


@dataclass
class PackageCache:
    """One nginx instance: its configuration, cache and pid under ``state_dir``.

    ``index_ttl``: seconds an index file (``dists/``, but not ``by-hash``) is served
    before it is revalidated; packages and by-hash files never change, they are kept.
    ``upstream_timeout``: the longest the cache waits on the mirror (connect and each
    read) before it answers 504; a host waiting behind another's fetch of the same file
    waits at most this long too before fetching it itself.
    """

    upstreams: list[Upstream]
    bind: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    port: int = PORT
    state_dir: Path = STATE_DIR
    log_dir: Path = LOG_DIR
    index_ttl: int = 60
    upstream_timeout: int = 30
    max_size: str = "20g"

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "nginx.conf"

    @property
    def pid_path(self) -> Path:
        return self.state_dir / "nginx.pid"

    @property
    def cache_dir(self) -> Path:
        return self.state_dir / "cache"

    @property
    def access_log(self) -> Path:
        return self.log_dir / "access.log"

    @property
    def error_log(self) -> Path:
        return self.log_dir / "error.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> str:
        """nginx.conf for this cache."""
        if not self.upstreams:
            raise PackageCacheError("a package cache needs at least one mirror")
        tmp = self.state_dir / "tmp"
        names = sorted({u.name for u in self.upstreams})
        origins = {u.name: u.origin for u in self.upstreams}
        upstream_blocks = []
        pass_map = []
        for index, name in enumerate(names):
            origin = urlsplit(origins[name])
            port = origin.port or (443 if origin.scheme == "https" else 80)
            server = f"server {origin.hostname}:{port}; keepalive 8;"
            upstream_blocks.append(f"  upstream maha_mirror_{index} {{ {server} }}")
            pass_map.append(f"    {name} {origin.scheme}://maha_mirror_{index};")
        user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
        listens = "\n".join(f"    listen {address}:{self.port};" for address in self.bind)
        t = self.upstream_timeout
        return f"""\
# Written by the Maha platform's set-up (mahaops/local/pkgcache.py): do not edit.
{user}worker_processes 2;
pid {self.pid_path};
error_log {self.error_log} warn;
events {{ worker_connections 1024; }}
http {{
  log_format maha '$time_iso8601 $remote_addr "$request" $status $body_bytes_sent '
                  'cache=$upstream_cache_status upstream=$upstream_status '
                  'time=$request_time upstream_time=$upstream_response_time';
  access_log {self.access_log} maha;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  proxy_cache_path {self.cache_dir} levels=1:2 keys_zone=maha_packages:20m
                   max_size={self.max_size} inactive=60d use_temp_path=off;

  map $host $maha_origin {{
    hostnames;
    default "";
{chr(10).join(pass_map)}
  }}
{chr(10).join(upstream_blocks)}

  # Every wait has a bound: a host never waits on this cache without an answer.
  client_header_timeout 30s;
  send_timeout {t}s;
  keepalive_timeout 30s;
  proxy_connect_timeout 10s;
  proxy_read_timeout {t}s;
  proxy_send_timeout {t}s;

  server {{
{listens}
    server_tokens off;

    # One request to the mirror per missing file, however many hosts ask at once;
    # the others wait for it, at most the upstream timeout, then fetch it themselves.
    proxy_cache maha_packages;
    proxy_cache_key $host$uri;
    proxy_cache_lock on;
    proxy_cache_lock_timeout {t}s;
    proxy_cache_lock_age {t}s;
    proxy_cache_revalidate on;
    proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
    proxy_cache_background_update on;
    proxy_ignore_headers Cache-Control Expires Set-Cookie X-Accel-Expires Vary;

    # A clean request: nginx writes Host itself; hop-by-hop and range headers of the
    # client are not passed on (whole files are cached and ranges served from them).
    proxy_http_version 1.1;
    proxy_set_header Host $host;
    proxy_set_header Connection "";
    proxy_set_header Proxy-Connection "";
    proxy_set_header Range "";
    proxy_set_header If-Range "";
    proxy_ssl_server_name on;
    proxy_ssl_name $host;

    # Only the mirrors this cache serves: any other host is refused, not fetched.
    if ($maha_origin = "") {{
      return 403 "this package cache serves only: {" ".join(names)}\\n";
    }}
    location / {{
      proxy_pass $maha_origin;
      proxy_cache_valid 200 60d;  # pool/: a package file never changes under its name
    }}
    location ~ /by-hash/ {{  # before dists/, which holds it
      proxy_pass $maha_origin;
      proxy_cache_valid 200 60d;  # named by its own hash: immutable
    }}
    location ~ /dists/ {{
      proxy_pass $maha_origin;
      proxy_cache_valid 200 {self.index_ttl}s;
    }}
  }}
}}
"""

    # -- lifecycle --------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The master process's pid, if it runs."""
        try:
            pid = int(self.pid_path.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def ensure(self, wait: float = 20.0) -> None:
        """Configuration written; nginx started (or reloaded when it changed); answering."""
        if os.geteuid() == 0:
            apt_install("nginx")
        if shutil.which("nginx") is None:
            raise PackageCacheError(
                "nginx is not installed and installing it needs root; run as root, or set "
                "apt_proxy = None in group_data/local.py if your containers reach a mirror"
            )
        for path in (self.state_dir, self.cache_dir, self.state_dir / "tmp", self.log_dir):
            path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # workers run as nobody and write the cache
            for path in (self.cache_dir, self.state_dir / "tmp"):
                shutil.chown(path, "nobody", "nogroup")
        wanted = self.config()
        changed = not self.conf_path.exists() or self.conf_path.read_text() != wanted
        if changed:
            partial = self.conf_path.with_suffix(".part")
            partial.write_text(wanted)
            self._nginx("-t", conf=partial)  # never put a broken configuration in place
            partial.replace(self.conf_path)
        pid = self.pid()
        if pid is None:
            self._nginx()  # forks into the background and outlives this process
        elif changed:
            os.kill(pid, signal.SIGHUP)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if self.pid() and self.answers():
                return
            time.sleep(0.2)
        raise PackageCacheError(
            f"the package cache did not answer on 127.0.0.1:{self.port} within {wait:.0f}s; "
            f"see {self.error_log}"
        )

    def stop(self, wait: float = 10.0) -> None:
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while self.pid() and time.monotonic() < deadline:
            time.sleep(0.1)

    def purge(self) -> None:
        """Empty the cache (nginx keeps an index in memory, so it restarts around it)."""
        running = self.pid() is not None
        self.stop()
        shutil.rmtree(self.cache_dir, ignore_errors=True)
        if running:
            self.ensure()

    def _nginx(self, *args: str, conf: Path | None = None) -> None:
        result = subprocess.run(
            ["nginx", "-c", str(conf or self.conf_path), "-p", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            check=False,
            start_new_session=True,
        )
        if result.returncode != 0:
            raise PackageCacheError(
                f"nginx {' '.join(args) or 'start'} failed: {result.stderr.strip()}"
            )


def for_this_machine(bind: list[str]) -> PackageCache:
    """The platform's cache: this machine's Debian mirror (and its security mirror)."""
    from mahaops.local.image import find_mirror

    mirror = find_mirror()
    urls = [mirror.debian, *([mirror.security] if mirror.security else [])]
    return PackageCache(upstreams=[Upstream.from_url(url) for url in urls], bind=bind)


def ensure_package_cache(bind: list[str]) -> PackageCache:
    """The platform's package cache, answering on ``bind`` (loopback and Docker's bridge)."""
    cache = for_this_machine(bind)
    if os.geteuid() != 0 and cache.answers():
        return cache
    cache.ensure()
    return cache
