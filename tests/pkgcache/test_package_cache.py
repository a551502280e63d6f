"""The package cache (nginx, mahaops/local/pkgcache.py) in front of a strict stand-in mirror.

What the hosts rely on: a strict mirror gets clean requests (never a header twice); many
fresh hosts installing at once on a cold cache all finish, within the bound; and when the
mirror refuses or stalls, the deploy fails within the bound, saying which host, which URL
and which status, with no apt left running on the host.
"""

from __future__ import annotations

import re
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mahaops.local.hosts import LocalHost, _gateway
from mahaops.local.image import find_mirror
from mahaops.local.pkgcache import PackageCache, Upstream
from mahaops.templating import render
from operations.apt import bounded
from tests.conftest import Testbed
from tests.pkgcache.standin_mirror import StandinMirror, fresh_repository

TEST_HOST = "mirror.maha.test"  # the stand-in's own repository, as hosts name it
UPSTREAM_TIMEOUT = 5  # the test cache's bound on the stand-in
APT_BOUND = 60  # base_apt_timeout in these tests
ONLY_TEST_SOURCE = (
    "-o Dir::Etc::sourcelist=sources.list.d/maha-test.list -o Dir::Etc::sourceparts=- "
    "-o APT::Get::List-Cleanup=0"
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def mirror() -> Iterator[StandinMirror]:
    standin = StandinMirror(fresh_repository()).start()
    yield standin
    standin.close()


def _cache(mirror: StandinMirror, bind: list[str], root: Path) -> PackageCache:
    root.chmod(0o755)  # nginx's workers (nobody) reach the cache below it
    # The stand-in plays the test repository's host and this machine's Debian mirror
    # (the name the hosts' own sources use), so a deploy's apt meets it too.
    debian = urlsplit(find_mirror().debian).hostname or "deb.debian.org"
    return PackageCache(
        upstreams=[Upstream(TEST_HOST, mirror.origin), Upstream(debian, mirror.origin)],
        bind=bind,
        port=_free_port(),
        state_dir=root / "state",
        log_dir=root / "log",
        upstream_timeout=UPSTREAM_TIMEOUT,
    )


def _via(cache: PackageCache, url: str, headers: dict[str, str] | None = None) -> int:
    proxy = urllib.request.ProxyHandler({"http": cache.url})
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.build_opener(proxy).open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# -- host-free: the cache and the stand-in on loopback ---------------------------------------


def test_the_standin_is_strict(mirror: StandinMirror) -> None:
    """The control for every "no duplicated header" assertion: the stand-in refuses one."""
    mirror.reset()
    with socket.create_connection(("127.0.0.1", mirror.port), timeout=10) as sock:
        sock.sendall(
            b"GET /debian/dists/maha-test/InRelease HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nHost: mirror.maha.test\r\nConnection: close\r\n\r\n"
        )
        assert sock.recv(64).startswith(b"HTTP/1.1 400")
    assert mirror.seen()[0].duplicated == ["host"]


def test_cache_serves_its_mirrors_cleanly_and_refuses_other_hosts(mirror: StandinMirror) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache(mirror, ["127.0.0.1"], Path(tmp))
        cache.ensure()
        try:
            mirror.reset()
            url = f"http://{TEST_HOST}/debian/dists/maha-test/InRelease"
            # apt's own request headers, one of which nginx must not pass on twice
            assert _via(cache, url, {"User-Agent": "Debian APT-HTTP/1.3"}) == 200
            assert _via(cache, url) == 200  # from the cache
            assert _via(cache, "http://example.invalid/debian/x") == 403  # never fetched
            seen = mirror.seen()
            assert [s.path for s in seen] == ["/debian/dists/maha-test/InRelease"]
            assert seen[0].duplicated == []
            assert dict((k.lower(), v) for k, v in seen[0].headers)["host"] == TEST_HOST
        finally:
            cache.stop()


# -- real hosts --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def host_cache(testbed: Testbed, mirror: StandinMirror) -> Iterator[PackageCache]:
    bridge = _gateway(testbed.environment.client.networks.get("bridge").attrs)
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache(mirror, ["127.0.0.1", bridge], Path(tmp))
        cache.ensure()
        yield cache
        cache.stop()


def _proxy_for_hosts(cache: PackageCache) -> str:
    return f"http://host.docker.internal:{cache.port}"


def _prepare(testbed: Testbed, host: LocalHost, cache: PackageCache, key: bytes) -> None:
    """Point a host's apt at the test cache with the project's own apt templates."""
    proxy = render("base/apt-proxy.conf.j2", apt_proxy=_proxy_for_hosts(cache))
    bounds = render(
        "base/apt-bounds.conf.j2",
        base_apt_timeout=APT_BOUND,
        base_apt_fetch_timeout=30,
        base_apt_retries=3,
    )
    container = testbed.environment.client.containers.get(host.container)
    files = {
        "/etc/apt/apt.conf.d/01maha-proxy": proxy.encode(),
        "/etc/apt/apt.conf.d/02maha-bounds": bounds.encode(),
        "/etc/apt/keyrings/maha-test.gpg": key,
        "/etc/apt/sources.list.d/maha-test.list": (
            f"deb [signed-by=/etc/apt/keyrings/maha-test.gpg] http://{TEST_HOST}/debian "
            "maha-test main\n"
        ).encode(),
    }
    testbed.exec(host, "mkdir -p /etc/apt/keyrings")
    for path, data in files.items():
        container.put_archive(*_archive(path, data))


def _archive(path: str, data: bytes) -> tuple[str, bytes]:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(Path(path).name)
        info.size, info.mode = len(data), 0o644
        tar.addfile(info, io.BytesIO(data))
    return str(Path(path).parent), buffer.getvalue()


def _install_hello() -> str:
    """The bounded command the project's apt operations send (operations/apt.py)."""
    command = (
        f"apt-get {ONLY_TEST_SOURCE} update -q && DEBIAN_FRONTEND=noninteractive "
        f"apt-get {ONLY_TEST_SOURCE} install -y -q --no-install-recommends hello"
    )
    return str(bounded(command, APT_BOUND).get_raw_value())


def _apt_running(testbed: Testbed, host: LocalHost) -> str:
    return testbed.exec(
        host, "pgrep -a -f '[a]pt-get|/usr/lib/ap[t]/methods|[d]pkg' || true", check=False
    ).strip()


@pytest.mark.testbed
def test_fresh_host_installs_through_the_cache(
    testbed: Testbed, mirror: StandinMirror, host_cache: PackageCache
) -> None:
    host = testbed.host("base", name="pc-fresh")
    _prepare(testbed, host, host_cache, mirror.repository.public_key)
    mirror.reset()
    testbed.exec(host, _install_hello())
    assert testbed.exec(host, "hello").strip() == "Hello, world!"
    seen = mirror.seen()
    assert any(s.path.endswith(".deb") for s in seen), [s.path for s in seen]
    assert [(s.path, s.duplicated) for s in seen if s.duplicated] == []
    assert all(s.status == 200 for s in seen), [(s.path, s.status) for s in seen]


def _install_at_once(testbed: Testbed, hosts: list[LocalHost]) -> dict[str, tuple[int, float, str]]:
    """Each host runs the bounded install at the same moment: host -> (exit, seconds, tail)."""
    barrier = threading.Barrier(len(hosts))
    outcome: dict[str, tuple[int, float, str]] = {}

    def install(host: LocalHost) -> None:
        container = testbed.environment.client.containers.get(host.container)
        barrier.wait()
        started = time.monotonic()
        code, output = container.exec_run(["sh", "-c", _install_hello()])
        outcome[host.name] = (code, time.monotonic() - started, output.decode()[-600:])

    threads = [threading.Thread(target=install, args=(h,)) for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(APT_BOUND + 30)
    return outcome


@pytest.mark.testbed
@pytest.mark.slow
def test_eight_fresh_hosts_at_once_on_a_cold_cache(
    testbed: Testbed, mirror: StandinMirror, host_cache: PackageCache
) -> None:
    hosts = [testbed.host("base", name=f"pc-{index}") for index in range(1, 9)]
    for host in hosts:
        _prepare(testbed, host, host_cache, mirror.repository.public_key)
    rows = []
    for round_ in range(1, 6):
        host_cache.purge()  # cold: every file must come from the mirror again
        for host in hosts:
            testbed.exec(host, "apt-get remove -y -q hello >/dev/null; rm -rf /var/lib/apt/lists/*")
        # Index files arrive slowly, so the hosts' requests for them overlap for sure.
        mirror.reset(stall_seconds=2)
        outcome = _install_at_once(testbed, hosts)
        failed = {name: out for name, (code, _, out) in outcome.items() if code != 0}
        assert len(outcome) == len(hosts) and not failed, failed
        slowest = max(elapsed for _, elapsed, _ in outcome.values())
        assert slowest < APT_BOUND
        seen = mirror.seen()
        fetched = Counter(s.path for s in seen)
        assert [s.path for s in seen if s.duplicated] == []
        # One fetch per file however many hosts asked at once (proxy_cache_lock).
        assert max(fetched.values()) == 1, fetched
        rows.append((round_, len(hosts), slowest, len(seen)))
    print("\nround  hosts  slowest install  requests at the mirror")
    for round_, count, slowest, requests in rows:
        print(f"{round_:>5}  {count:>5}  {slowest:>14.1f}s  {requests:>22}")


@pytest.mark.testbed
@pytest.mark.parametrize("mode", ["reject", "stall"])
def test_refusing_or_stalling_mirror_fails_the_deploy_within_the_bound(
    testbed: Testbed, mirror: StandinMirror, host_cache: PackageCache, mode: str
) -> None:
    host = testbed.host("base", name=f"pc-{mode}")
    mirror.reset(mode=mode, stall_seconds=600)
    started = time.monotonic()
    result = testbed.deploy(
        roles=["base"],
        limit=[host.name],
        overrides={"apt_proxy": _proxy_for_hosts(host_cache), "base_apt_timeout": APT_BOUND},
    )
    elapsed = time.monotonic() - started
    mirror.reset()  # release the stalled responses
    assert not result.ok
    assert elapsed < APT_BOUND + 45, f"the run took {elapsed:.0f}s"
    failed = result.with_status("failed")
    assert [(op.host, op.name) for op in failed] == [(host.name, "Base | Install base packages")]
    debian = urlsplit(find_mirror().debian)
    url = f"http://{debian.hostname}{debian.path.rstrip('/')}"  # apt: "<url> bookworm InRelease"
    status = r"400\s+Bad Request" if mode == "reject" else r"504\s+Gateway Time"
    # The failure summary: the host, its operation, apt's own lines (URL and status).
    summary = result.output[result.output.rindex("\nFailed\n") :]
    assert f"{host.name} Base" in summary and "Install base packages" in summary, summary
    assert url in summary and re.search(status, summary), summary
    assert "maha-pkgcache" in summary or "apt_proxy" in summary, summary
    if mode == "stall" and "apt stopped after" not in summary:  # apt gave up by itself
        assert "Failed to fetch" in summary, summary
    assert _apt_running(testbed, host) == ""
    print(f"\n{mode}: the deploy failed after {elapsed:.1f}s (bound {APT_BOUND}s)")
