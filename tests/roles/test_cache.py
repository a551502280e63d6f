"""The cache role on real hosts: Redis with a password for app servers and workers only,
dangerous commands denied, keys that survive re-deploys, restarts and setting changes."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

import pytest
from cryptography import x509

from mahaops import tls
from mahaops.secrets import LocalSecretStore
from tests.checks import cache as checks
from tests.checks import converge, ports
from tests.conftest import ServiceTier, Testbed, service_tier

pytestmark = pytest.mark.testbed

# Operations pyinfra marks non-idempotent that the cache role uses, and why that is safe.
JUSTIFIED_NON_IDEMPOTENT = {
    "systemd.daemon_reload": "guarded by _if on the service drop-in changing",
    "server.shell": "only `sysctl -p`, guarded by _if on its file changing (not in containers)",
}

# What a change to redis.conf plans and does.
CONFIGURED = [
    "Redis | Configure Redis (bind, auth, memory, AOF)",
    "Redis | Restart Redis for the new configuration",
]
# The same for the queue's instance, and for a setting both instances share (the users).
QUEUE_CONFIGURED = [
    "Redis | Configure the Redis queue (bind, auth, noeviction, AOF)",
    "Redis | Restart the Redis queue for the new configuration",
]
BOTH_CONFIGURED = CONFIGURED + QUEUE_CONFIGURED


def passwords(testbed: Testbed) -> tuple[str, str]:
    store = LocalSecretStore(testbed.env)
    password, admin = store.get("redis_password"), store.get("redis_admin_password")
    assert password and admin, "the cache deploy did not create the Redis passwords"
    return password, admin


def digests(testbed: Testbed) -> list[str]:
    """The passwords as redis.conf's ACL holds them (SHA-256, hex)."""
    return [hashlib.sha256(p.encode()).hexdigest() for p in passwords(testbed)]


@pytest.fixture(scope="module")
def tier(testbed: Testbed) -> ServiceTier:
    tier, _ = service_tier(testbed, "cache", "cat")
    return tier


def test_fresh_host_converges_to_the_cache_promises(testbed: Testbed, tier: ServiceTier) -> None:
    password, admin = passwords(testbed)
    checks.check_cache(testbed, tier.server, tier.app, password, admin)


def test_kernel_settings_are_left_to_the_container_host(
    testbed: Testbed, tier: ServiceTier
) -> None:
    present = testbed.exec(tier.server, "ls /etc/sysctl.d/ /etc/systemd/system/")
    assert "90-maha-redis.conf" not in present and "maha-thp-never" not in present


def test_second_converge_changes_nothing(testbed: Testbed, tier: ServiceTier) -> None:
    converge.assert_idempotent(
        testbed,
        [tier.server.name],
        ["base", "cache"],
        justified=JUSTIFIED_NON_IDEMPOTENT,
        record=tier.record,
    )


def test_hosts_outside_app_servers_and_workers_cannot_reach_redis(
    testbed: Testbed, tier: ServiceTier
) -> None:
    password, _ = passwords(testbed)
    code, out = checks.redis(
        testbed, tier.outsider, tier.server.private_address, "PING", password=password
    )
    assert code != 0 and "PONG" not in out, out


def test_both_instances_speak_tls_only_verified_against_the_platform_ca(
    testbed: Testbed, tier: ServiceTier
) -> None:
    password, _ = passwords(testbed)
    checks.check_tls_only(testbed, tier.server, tier.app, password)
    for port in (6379, checks.QUEUE_PORT):
        code, out = checks.redis(
            testbed, tier.app, tier.server.private_address, "PING", password=password, port=port
        )
        assert code == 0 and out.strip() == "PONG", out


def test_every_port_beyond_loopback_speaks_tls_or_ssh(testbed: Testbed, tier: ServiceTier) -> None:
    expected = {22: "ssh", 6379: "tls", checks.QUEUE_PORT: "tls"}
    ports.assert_tls_or_ssh(testbed, "cache", tier.server, expected)


def served_serial(testbed: Testbed, tier: ServiceTier, port: int) -> int:
    """The serial number of the certificate Redis presents on ``port`` to the app server."""
    out = testbed.exec(
        tier.app,
        f"openssl s_client -connect {tier.server.private_address}:{port} </dev/null "
        "2>/dev/null | openssl x509 -noout -serial",
    ).strip()
    return int(out.removeprefix("serial="), 16)


def test_a_certificate_near_expiry_is_renewed_and_served_by_both_instances(
    testbed: Testbed, tier: ServiceTier
) -> None:
    store = LocalSecretStore(testbed.env)
    cert_name, key_name = tls.stored_names(tier.server.name)
    current = store.get(cert_name)
    assert current
    ca_cert, ca_key = tls.ca(store)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=340)  # 25 days left, inside the 30
    short, short_key = tls.issue(ca_cert, ca_key, tls.names_of(current), days=365, now=old)
    store.put(cert_name, short)
    store.put(key_name, short_key)
    run = tier.record(testbed.deploy(roles=["cache"], limit=[tier.server.name]))
    assert run.ok, run.output
    assert {"Redis | Redis TLS key", *BOTH_CONFIGURED[1::2]} <= {op.name for op in run.changed}, [
        op.name for op in run.changed
    ]
    renewed = store.get(cert_name)
    assert renewed and renewed != short
    expected = x509.load_pem_x509_certificate(renewed.encode()).serial_number
    password, _ = passwords(testbed)
    for port in (6379, checks.QUEUE_PORT):
        assert served_serial(testbed, tier, port) == expected
        code, out = checks.redis(
            testbed, tier.app, tier.server.private_address, "PING", password=password, port=port
        )
        assert code == 0 and out.strip() == "PONG", out


def test_dry_run_shows_the_diff_and_changes_nothing(testbed: Testbed, tier: ServiceTier) -> None:
    converge.assert_dry_run(
        testbed,
        tier.server,
        "/etc/redis/redis.conf",
        roles=["cache"],
        overrides={"redis_maxmemory": "128mb"},
        changed=CONFIGURED,
        shows=["Will modify /etc/redis/redis.conf", "- maxmemory 256mb", "+ maxmemory 128mb"],
        record=tier.record,
    )


def test_keys_survive_redeploy_restart_and_setting_changes(
    testbed: Testbed, tier: ServiceTier
) -> None:
    password, _ = passwords(testbed)
    address = tier.server.private_address

    def get(key: str) -> str:
        code, out = checks.redis(testbed, tier.app, address, "GET", key, password=password)
        assert code == 0, out
        return out.strip()

    code, out = checks.redis(
        testbed, tier.app, address, "SET", "job:1", "queued", password=password
    )
    assert code == 0 and out.strip() == "OK", out
    checks.redis(testbed, tier.app, address, "RPUSH", "queue", "a", "b", password=password)

    again = tier.record(testbed.deploy(roles=["cache"], limit=[tier.server.name]))
    assert again.ok and not again.changed, again.output
    assert get("job:1") == "queued"

    testbed.exec(tier.server, "systemctl restart redis-server")
    time.sleep(0.5)
    assert get("job:1") == "queued"

    changed = tier.record(
        testbed.deploy(
            roles=["cache"], limit=[tier.server.name], overrides={"redis_maxmemory": "128mb"}
        )
    )
    assert changed.ok, changed.output
    assert [op.name for op in changed.changed] == CONFIGURED
    assert get("job:1") == "queued"
    _, out = checks.redis(
        testbed, tier.app, address, "LRANGE", "queue", "0", "-1", password=password
    )
    assert out.split() == ["a", "b"]


def test_a_changed_acl_is_shown_with_the_password_digests_masked(
    testbed: Testbed, tier: ServiceTier
) -> None:
    # The ACL lines carry the passwords' digests, which log in as well as the passwords
    # wherever Redis compares digests (a copied redis.conf, say).
    plan = converge.assert_dry_run(
        testbed,
        tier.server,
        "/etc/redis/redis.conf",
        roles=["cache"],
        overrides={"redis_disabled_commands": ["flushall", "config"]},
        changed=BOTH_CONFIGURED,
        shows=["- user default on #********", "+ user default on #******** ~* &* +@all -flushall"],
        record=tier.record,
    )
    for digest in digests(testbed):
        assert digest not in plan.output


def test_no_secret_appears_in_any_output(testbed: Testbed, tier: ServiceTier) -> None:
    secrets = [*passwords(testbed), *digests(testbed)]
    assert tier.outputs
    for output in tier.outputs:
        for value in secrets:
            assert value not in output


def test_maxmemory_that_is_not_a_size_stops_before_any_host_is_touched(
    testbed: Testbed, tier: ServiceTier, tmp_path: Path
) -> None:
    group_data = converge.group_data_with(tmp_path, "cache_servers.py", 'redis_maxmemory = "lots"')
    output = converge.assert_stopped_before_login(testbed, tier.server, ["cache"], group_data)
    assert "cache_servers.py: redis_maxmemory:" in output and "is not a Redis size" in output


def test_a_restart_a_failed_run_left_owed_is_done_by_the_next_run(
    testbed: Testbed, tier: ServiceTier
) -> None:
    """A run writes redis.conf, then its restart does not happen; the next plain run, with
    no file left to write, restarts Redis. The restart is kept from happening by systemd
    refusing it (RefuseManualStop): the host is left as a run killed before its restart
    leaves it, the new config on disk and the old process serving the old one."""
    server, owed = tier.server, "/var/lib/maha/pending-restart/redis-server"
    _, admin = passwords(testbed)
    refuse = "/etc/systemd/system/redis-server.service.d/99-test-refuse-stop.conf"
    new = {"redis_maxmemory": "64mb"}

    def live_maxmemory() -> str:
        code, out = checks.redis(
            testbed, server, "127.0.0.1", "CONFIG", "GET", "maxmemory", user="admin", password=admin
        )
        assert code == 0, out
        return out.split()[-1]

    def main_pid() -> str:
        return testbed.exec(server, "systemctl show -p MainPID --value redis-server").strip()

    old_pid, old_maxmemory = main_pid(), live_maxmemory()
    assert old_maxmemory != "67108864"
    testbed.exec(server, f"printf '[Unit]\\nRefuseManualStop=yes\\n' > {refuse}")
    testbed.exec(server, "systemctl daemon-reload")
    try:
        died = tier.record(testbed.deploy(roles=["cache"], limit=[server.name], overrides=new))
        assert not died.ok
        assert [op.status for op in died.named("Restart Redis")] == ["failed"], died.output
        assert "maxmemory 64mb" in testbed.exec(server, "cat /etc/redis/redis.conf")
        assert (main_pid(), live_maxmemory()) == (old_pid, old_maxmemory)
        assert testbed.exec(server, f"test -f {owed} && echo owed").strip() == "owed"

        plan = tier.record(
            testbed.deploy(roles=["cache"], limit=[server.name], overrides=new, dry=True)
        )
        assert [op.name for op in plan.changed] == CONFIGURED[1:], plan.output
    finally:
        testbed.exec(server, f"rm -f {refuse} && systemctl daemon-reload")

    again = tier.record(testbed.deploy(roles=["cache"], limit=[server.name], overrides=new))
    assert again.ok, again.output
    assert [op.name for op in again.changed] == CONFIGURED[1:]
    assert main_pid() != old_pid and live_maxmemory() == "67108864"
    assert testbed.exec(server, f"test -f {owed} || echo done").strip() == "done"
    settled = tier.record(testbed.deploy(roles=["cache"], limit=[server.name], overrides=new))
    assert settled.ok and settled.changed == [], settled.output


def test_a_full_cache_evicts_its_own_keys_and_never_the_queue_s_leases(
    testbed: Testbed, tier: ServiceTier
) -> None:
    """Eviction is per instance: the cache, full, drops its least recently used keys; the
    queue's instance keeps a held job's lease (a TTL key) and, full itself, refuses new
    writes (the web answers 503) rather than drop a key: no job can run twice."""
    password, admin = passwords(testbed)
    address, queue = tier.server.private_address, checks.QUEUE_PORT
    small = {"redis_maxmemory": "2mb", "redis_queue_maxmemory": "2mb"}
    done = tier.record(testbed.deploy(roles=["cache"], limit=[tier.server.name], overrides=small))
    assert done.ok, done.output

    def client(*command: str, port: int = 6379) -> str:
        code, out = checks.redis(testbed, tier.app, address, *command, password=password, port=port)
        assert code == 0, out
        return out.strip()

    def evicted(port: int) -> int:
        _, out = checks.redis(
            testbed,
            tier.server,
            "127.0.0.1",
            "INFO",
            "stats",
            user="admin",
            password=admin,
            port=port,
        )
        return int(
            next(line for line in out.splitlines() if line.startswith("evicted_keys:")).split(":")[
                1
            ]
        )

    # A worker holds job 7: its lease expires in 10 minutes unless renewed.
    assert client("SET", "maha:jobs:lease:7", "worker-1:42:0", "PX", "600000", port=queue) == "OK"
    client("LPUSH", "maha:jobs:processing", "7", port=queue)
    fill = "for i = 1, 100 do redis.call('SET', ARGV[1] .. i, string.rep('x', 10000)) end"
    for batch in range(6):  # 6 MB into a 2 MB cache
        client("EVAL", fill, "0", f"page:{batch}:")
    assert evicted(6379) > 0
    assert client("GET", "maha:jobs:lease:7", port=queue) == "worker-1:42:0"
    assert 0 < int(client("PTTL", "maha:jobs:lease:7", port=queue)) <= 600000

    refused = ""
    for batch in range(6):  # the queue's own instance, filled past its cap
        _, out = checks.redis(
            testbed,
            tier.app,
            address,
            "EVAL",
            fill,
            "0",
            f"job:{batch}:",
            password=password,
            port=queue,
        )
        if "OOM" in out:
            refused = out
            break
    assert refused, "a full queue instance accepted every write"
    assert evicted(queue) == 0
    assert client("GET", "maha:jobs:lease:7", port=queue) == "worker-1:42:0"
    assert client("LRANGE", "maha:jobs:processing", "0", "-1", port=queue) == "7"

    for port in (6379, queue):  # leave the module's host as it found it
        checks.redis(
            testbed, tier.server, "127.0.0.1", "FLUSHALL", user="admin", password=admin, port=port
        )
    back = tier.record(testbed.deploy(roles=["cache"], limit=[tier.server.name]))
    assert back.ok, back.output


def test_no_secret_reaches_a_command_line_or_a_file_others_can_read(
    testbed: Testbed, tier: ServiceTier
) -> None:
    from tests.roles.test_db import every_secret, leaks, process_snapshots, tmp_entries

    since = testbed.exec(tier.server, "date '+%Y-%m-%d %H:%M:%S'").strip()
    with process_snapshots(testbed, tier.server) as seen, tmp_entries(testbed, tier.server) as made:
        run = tier.record(
            testbed.deploy(
                roles=["base", "cache"],
                limit=[tier.server.name],
                overrides={"redis_maxmemory": "96mb"},  # redis.conf, with the digests, re-sent
            )
        )
    assert run.ok, run.output
    assert [op for op in run.changed if op.name.startswith("Redis | Configure Redis (")]
    journal = testbed.exec(tier.server, f"journalctl --since '{since}' --no-pager -o cat")
    assert seen[0].count("sudo -H -n") > 3, "the snapshots saw the deploy's commands"
    values = {**every_secret(testbed), **{f"digest {i}": d for i, d in enumerate(digests(testbed))}}
    assert leaks(values, {"ps": seen[0], "the journal": journal, "the output": run.output}) == []

    # Uploads under sudo are staged in a private directory, never as a readable /tmp file.
    staged = [x for x in made if x.split()[3].startswith(("pyinfra-", "maha-upload-"))]
    assert staged, made
    assert all(x.startswith("d 700 ") for x in staged), staged
    assert testbed.exec(tier.server, "stat -c '%a %U' /etc/redis/redis.conf").strip() == (
        "640 redis"
    )
    assert not testbed.exec(
        tier.server, "ls -d /tmp/maha-upload-* /tmp/pyinfra-* 2>/dev/null || true"
    ).strip()

    back = tier.record(testbed.deploy(roles=["cache"], limit=[tier.server.name]))
    assert back.ok, back.output
