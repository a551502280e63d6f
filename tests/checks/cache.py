"""What the app servers and workers expect of a host with the cache role (Redis).

Functions of (test bed, hosts), shared by the pyinfra tests and the exported-Ansible
tests. Passwords reach redis-cli through REDISCLI_AUTH, never its arguments.
"""

from __future__ import annotations

from typing import Any

from mahaops.local.hosts import LocalHost
from tests.checks.db import CA_FILE, OTHER_CA_FILE, run

QUEUE_PORT = 6380  # redis_queue_port's default
DENIED = ("FLUSHALL", "FLUSHDB", "CONFIG GET maxmemory", "DEBUG SLEEP 0", "KEYS *", "SHUTDOWN")


def redis(
    testbed: Any,
    client: LocalHost,
    server: str,
    *command: str,
    password: str = "",
    user: str = "",
    port: int = 6379,
    tls: bool = True,
    cacert: str = CA_FILE,
) -> tuple[int, str]:
    """``redis-cli`` on ``client`` against ``server``; (exit code, output). Over TLS by
    default, the server's certificate checked against ``cacert``."""
    # redis-cli has no connect timeout of its own: a dropped SYN would wait minutes.
    argv = ["timeout", "5", "redis-cli", "-h", server, "-p", str(port), "--no-auth-warning"]
    if tls:
        argv += ["--tls", "--cacert", cacert]
    if user:
        argv += ["--user", user]
    env = {"REDISCLI_AUTH": password} if password else {}
    return run(testbed, client, [*argv, *command], env)


def check_auth(testbed: Any, cache: LocalHost, client: LocalHost, password: str) -> None:
    """An app server gets in with the password, and is refused without it."""
    code, out = redis(testbed, client, cache.private_address, "PING", password=password)
    assert code == 0 and out.strip() == "PONG", out
    _, out = redis(testbed, client, cache.private_address, "GET", "anything")
    assert "NOAUTH" in out, out
    _, out = redis(testbed, client, cache.private_address, "PING", password="wrong-pass")
    assert "WRONGPASS" in out or "invalid username-password" in out, out


def check_dangerous_commands_denied(
    testbed: Any, cache: LocalHost, client: LocalHost, password: str, admin_password: str
) -> None:
    """Clients may not run FLUSHALL, CONFIG, KEYS...; the admin user still may (CONFIG)."""
    for command in DENIED:
        _, out = redis(testbed, client, cache.private_address, *command.split(), password=password)
        # DEBUG is also switched off outright (enable-debug-command no).
        assert "NOPERM" in out or "DEBUG command not allowed" in out, f"{command}: {out}"
    _, out = redis(
        testbed,
        cache,
        "127.0.0.1",
        "CONFIG",
        "GET",
        "appendonly",
        user="admin",
        password=admin_password,
    )
    assert out.split() == ["appendonly", "yes"], out


def check_server(
    testbed: Any,
    cache: LocalHost,
    admin_password: str,
    port: int = 6379,
    *,
    policy: str = "allkeys-lru",
    conf: str = "/etc/redis/redis.conf",
    service: str = "redis-server",
) -> None:
    """Bound to the private address and localhost, AOF everysec, its eviction policy,
    config 0640 redis. The defaults are the cache instance's."""
    listening = testbed.exec(cache, f"ss -Htln 'sport = :{port}'")
    addresses = sorted(line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines())
    assert addresses == sorted(["127.0.0.1", cache.private_address]), listening
    settings = {}
    for key in ("protected-mode", "appendonly", "appendfsync", "maxmemory-policy"):
        _, out = redis(
            testbed,
            cache,
            "127.0.0.1",
            "CONFIG",
            "GET",
            key,
            user="admin",
            password=admin_password,
            port=port,
        )
        settings[key] = out.split()[1]
    assert settings["protected-mode"] == "yes"
    assert settings["appendonly"] == "yes" and settings["appendfsync"] == "everysec"
    assert settings["maxmemory-policy"] == policy, settings
    owner = testbed.exec(cache, f"stat -c '%U %G %a' {conf}").strip()
    assert owner == "redis redis 640"
    limit = testbed.exec(cache, f"systemctl show {service} -p LimitNOFILE").strip()
    assert int(limit.split("=")[1]) >= 65535


def check_queue(
    testbed: Any, cache: LocalHost, client: LocalHost, password: str, admin_password: str
) -> None:
    """The job queue's own instance: same users and binding, never evicts, and an app
    server gets in with the clients' password."""
    check_server(
        testbed,
        cache,
        admin_password,
        QUEUE_PORT,
        policy="noeviction",
        conf="/etc/redis/redis-queue.conf",
        service="redis-server@queue",
    )
    code, out = redis(
        testbed, client, cache.private_address, "PING", password=password, port=QUEUE_PORT
    )
    assert code == 0 and out.strip() == "PONG", out
    _, out = redis(
        testbed, client, cache.private_address, "KEYS", "*", password=password, port=QUEUE_PORT
    )
    assert "NOPERM" in out, out


def check_tls_only(testbed: Any, cache: LocalHost, client: LocalHost, password: str) -> None:
    """Both instances speak TLS only: a plain client gets no answer, and a server
    certificate is accepted only from the environment's CA."""
    for port in (6379, QUEUE_PORT):
        code, out = redis(
            testbed,
            client,
            cache.private_address,
            "PING",
            password=password,
            port=port,
            tls=False,
        )
        assert code != 0 or "PONG" not in out, f"plain TCP answered on {port}: {out}"
        code, out = redis(
            testbed,
            client,
            cache.private_address,
            "PING",
            password=password,
            port=port,
            cacert=OTHER_CA_FILE,
        )
        assert "PONG" not in out and "certificate verify failed" in out, out
    key = testbed.exec(cache, "stat -c '%U %a' /etc/maha/tls/redis/server.key").strip()
    assert key == "redis 600", key


def check_password_not_in_config(testbed: Any, cache: LocalHost, password: str) -> None:
    """Only SHA-256 digests of the passwords are written on the host."""
    # -e: a generated password may begin with "-" (grep would take it for an option)
    code, _ = run(testbed, cache, ["grep", "-rqF", "-e", password, "/etc/redis"])
    assert code == 1, "the Redis password is stored in clear under /etc/redis"


def check_cache(
    testbed: Any,
    cache: LocalHost,
    client: LocalHost,
    password: str,
    admin_password: str,
    port: int = 6379,
) -> None:
    """The cache role's promises, checked on a converged cache host and an app server."""
    check_server(testbed, cache, admin_password, port)
    check_queue(testbed, cache, client, password, admin_password)
    check_auth(testbed, cache, client, password)
    check_tls_only(testbed, cache, client, password)
    check_dangerous_commands_denied(testbed, cache, client, password, admin_password)
    check_password_not_in_config(testbed, cache, password)
