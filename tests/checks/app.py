"""What an operator expects of an app server (nginx + maha-web), and what the app role
needs around it on a test bed.

Shared by the pyinfra tests and the exported-Ansible tests: both must make these pass.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from mahaops import tls
from mahaops.local.hosts import LocalHost
from mahaops.local.pkgcache import PORT as PACKAGE_CACHE_PORT
from mahaops.secrets import LocalSecretStore, get_or_create

APP_ROOT = "/srv/maha"
APP_USER = "maha-app"

_BACKING: dict[str, dict[str, Any]] = {}

_INSTALL = (
    "export DEBIAN_FRONTEND=noninteractive; "
    f"P='-o Acquire::http::Proxy=http://host.docker.internal:{PACKAGE_CACHE_PORT}'; "
    "apt-get $P update -q >/dev/null && "
    "apt-get $P install -y -q --no-install-recommends {packages} >/dev/null"
)


def standin_postgres(
    run: Callable[[str], str], password: str, tls_dir: str = "", install: bool = True
) -> None:
    """PostgreSQL as the db role promises it: database ``maha`` owned by ``maha_app``; with
    ``tls_dir`` (server.crt and server.key from the environment's CA), over TLS only.
    ``install=False``: the caller installed the package already."""
    if install:
        run(_INSTALL.format(packages="postgresql"))
    hba = "host"
    if tls_dir:
        hba = "hostssl"
        run(
            "c=/etc/postgresql/15/main; "
            f"install -o postgres -m 600 {tls_dir}/server.key $c/maha.key && "
            f"install -o postgres -m 644 {tls_dir}/server.crt $c/maha.crt && "
            "echo \"ssl = on\nssl_cert_file = '$c/maha.crt'\nssl_key_file = '$c/maha.key'\" "
            ">> $c/postgresql.conf"
        )
    run(
        "c=/etc/postgresql/15/main; echo \"listen_addresses='*'\" >> $c/postgresql.conf && "
        f"echo '{hba} maha maha_app 0.0.0.0/0 scram-sha-256' >> $c/pg_hba.conf && "
        "systemctl restart postgresql && "
        f'su postgres -c "psql -q -c \\"create user maha_app password \'{password}\'\\" '
        "-c 'create database maha owner maha_app'\""
    )


def standin_redis(
    run: Callable[[str], str], password: str, tls_dir: str = "", install: bool = True
) -> None:
    """Redis as the cache role promises it: requirepass, the cache on 6379 and the job
    queue's instance on 6380 (with ``tls_dir``: TLS only). Transient units: the test bed
    needs a Redis, not the cache role's hardened one. ``install=False``: the caller
    installed the package already."""
    if install:
        run(_INSTALL.format(packages="redis-server"))
    run("systemctl disable --now redis-server >/dev/null 2>&1 || true")
    for unit, port in (("redis-standin", 6379), ("redis-standin-queue", 6380)):
        listen = f"--port {port}"
        if tls_dir:
            listen = (
                f"--port 0 --tls-port {port} --tls-cert-file {tls_dir}/server.crt "
                f"--tls-key-file {tls_dir}/server.key --tls-auth-clients no"
            )
        run(
            f"systemd-run --unit={unit} /usr/bin/redis-server --bind 0.0.0.0 {listen} "
            f"--protected-mode no --requirepass {password} --dir /tmp "
            f"--dbfilename {unit}.rdb >/dev/null"
        )


def backing_services(testbed: Any) -> dict[str, Any]:
    """A PostgreSQL and a Redis on one plain host, as the db and cache roles promise them,
    so the app tier's role tests do not depend on those roles. Returns the settings that
    point deploys at it. The host is of ``standin_image`` (the packages installed once per
    machine); each module configures its own, as before.
    """
    # Hosts made during a test module are removed when it ends (tests/conftest.py): reuse
    # the stand-in only while it is still there.
    alive = {h.name for h in testbed.environment.hosts()}
    if testbed.env in _BACKING and "appdeps-1" in alive:
        return _BACKING[testbed.env]
    store = LocalSecretStore(testbed.env)
    host = testbed.host("base", name="appdeps-1", image=standin_image(testbed))

    def run(command: str) -> str:
        return str(testbed.exec(host, command))

    tls_dir = standin_certificate(testbed, host, store)
    password = get_or_create(store, "postgresql_password_maha_app")
    standin_postgres(run, password, tls_dir, install=False)
    standin_redis(run, get_or_create(store, "redis_password"), tls_dir, install=False)
    _BACKING[testbed.env] = {
        "app_database_host": host.private_address,
        "app_redis_host": host.private_address,
    }
    return _BACKING[testbed.env]


_STANDIN_PACKAGES = "postgresql redis-server"


def standin_image(testbed: Any) -> str:
    """The test bed's host image with the stand-in's packages installed (not configured:
    ``backing_services`` does that on each host, as before). Built once per machine and
    host image (its tag names the host image's id), under the test bed's setup lock: each
    module that needs the stand-in made it from scratch, apt installs included."""
    from docker.errors import ImageNotFound

    from tests.conftest import machine_setup_lock

    client = testbed.environment.client
    base = client.images.get(testbed.image)
    tag = f"maha-standin:{base.id.split(':')[-1][:16]}"
    with machine_setup_lock():
        try:
            client.images.get(tag)
            return tag
        except ImageNotFound:
            pass
        # No daemon starts while the packages install (policy-rc.d): the image holds
        # PostgreSQL's new cluster stopped, and the hosts' systemd starts what is enabled.
        script = (
            "printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d && "
            "chmod 755 /usr/sbin/policy-rc.d && "
            + _INSTALL.format(packages=_STANDIN_PACKAGES)
            + " && rm -f /usr/sbin/policy-rc.d && apt-get clean"
        )
        container = client.containers.run(
            base.id,
            ["sh", "-c", script],
            detach=True,
            extra_hosts={"host.docker.internal": "host-gateway"},
        )
        try:
            result = container.wait(timeout=900)
            if result.get("StatusCode") != 0:
                log = container.logs().decode(errors="replace")
                raise AssertionError(f"building {tag} failed: {log[-4000:]}")
            container.commit(
                repository=tag.split(":")[0],
                tag=tag.split(":")[1],
                changes=['CMD ["/sbin/init"]'],
            )
        finally:
            container.remove(force=True)
    return tag


def standin_certificate(testbed: Any, host: LocalHost, store: LocalSecretStore) -> str:
    """A server certificate for the stand-in host from the environment's CA, as the db and
    cache roles serve theirs (clients verify it); returns the directory holding it."""
    from tests.checks.db import run

    issued = tls.server_certificate(
        store, host.name, [host.private_address, host.name, "127.0.0.1"], 365, 30
    )
    directory = "/etc/maha/tls/standin"
    code, out = run(
        testbed,
        host,
        [
            "sh",
            "-c",
            f"umask 077 && mkdir -p {directory} && printf '%s' \"$CERT\" > {directory}/server.crt"
            f" && printf '%s' \"$KEY\" > {directory}/server.key",
        ],
        {"CERT": issued.cert, "KEY": issued.key},
    )
    assert code == 0, out
    return directory


def http(th: Any, url: str, *options: str) -> tuple[int, dict[str, str], str]:
    """GET ``url`` from the host itself: status, headers (lower-cased) and body."""
    out = th.check_output(f"curl -s -i --max-time 5 {' '.join(options)} {url}")
    head, _, body = out.replace("\r\n", "\n").partition("\n\n")
    lines = head.splitlines()
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def wait_healthy(th: Any, url: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = http(th, url)
        if status == 200 or time.monotonic() > deadline:
            assert status == 200, f"{url}: {status} {body}"
            return dict(json.loads(body))
        time.sleep(0.5)


def current_release(th: Any) -> str:
    target = th.check_output(f"readlink {APP_ROOT}/current")
    assert target.startswith("releases/"), target
    return str(target.removeprefix("releases/"))


def check_release_layout(th: Any) -> str:
    """The release layout: current -> a complete release, the 0600 env file linked in."""
    release = current_release(th)
    directory = f"{APP_ROOT}/releases/{release}"
    assert th.file(f"{directory}/src/web.js").exists
    assert th.file(f"{directory}/maha.env").linked_to == f"{APP_ROOT}/shared/maha.env"
    assert th.file(f"{directory}/release.env").content_string.strip() == f"MAHA_RELEASE={release}"
    env = th.file(f"{APP_ROOT}/shared/maha.env")
    assert (env.mode, env.user) == (0o600, APP_USER)
    assert 'DATABASE_URL="postgres://maha_app:' in th.check_output(
        f"cat {APP_ROOT}/shared/maha.env"
    )
    assert th.file(f"{directory}/src/web.js").user == "root"  # the app cannot change its code
    user = th.user(APP_USER)
    assert user.shell in ("/usr/sbin/nologin", "/bin/false")
    return release


def unit_property(th: Any, unit: str, name: str) -> str:
    return str(th.check_output(f"systemctl show -p {name} --value {unit}")).strip()


def check_hardened_unit(th: Any, unit: str) -> None:
    assert th.service(unit).is_running and th.service(unit).is_enabled
    assert unit_property(th, unit, "User") == APP_USER
    assert unit_property(th, unit, "Restart") == "on-failure"
    assert unit_property(th, unit, "NoNewPrivileges") == "yes"
    assert unit_property(th, unit, "ProtectSystem") == "strict"
    assert unit_property(th, unit, "PrivateTmp") == "yes"
    pid = unit_property(th, unit, "MainPID")
    assert th.check_output(f"ps -o user= -p {pid}").strip() == APP_USER


def check_app(host: LocalHost, th: Any) -> None:
    """The app role's promises, checked on a converged app server."""
    release = check_release_layout(th)
    check_hardened_unit(th, "maha-web")
    # Node listens on loopback only; nginx is the way in.
    listening = th.check_output("ss -Htlnp")
    assert "127.0.0.1:3000" in listening and "0.0.0.0:3000" not in listening
    assert th.run("nginx -t").rc == 0
    assert th.service("nginx").is_running

    health = wait_healthy(th, "http://127.0.0.1/health")
    assert health["release"] == release and health["server"] == host.name
    status, headers, _ = http(th, "http://127.0.0.1/health")
    assert headers["x-maha-server"] == host.name
    assert headers["x-content-type-options"] == "nosniff"
    assert "x-frame-options" in headers and "content-security-policy" in headers

    status, headers, _ = http(th, "http://127.0.0.1/static/app.css", "-H 'Accept-Encoding: gzip'")
    assert status == 200
    assert "max-age=31536000" in headers["cache-control"]
    assert headers["x-maha-server"] == host.name
    nginx = th.check_output("nginx -T 2>/dev/null")
    assert "real_ip_header X-Forwarded-For" in nginx  # trusted from the load balancers only
    assert "proxy_set_header Upgrade $http_upgrade" in nginx
