"""The cache role on real hosts: Redis with a password for app servers and workers only,
dangerous commands denied, keys that survive re-deploys, restarts and setting changes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops.secrets import LocalSecretStore
from tests.checks import cache as checks
from tests.conftest import ServiceTier, Testbed, service_tier

pytestmark = pytest.mark.testbed

# Operations pyinfra marks non-idempotent that the cache role uses, and why that is safe.
JUSTIFIED_NON_IDEMPOTENT = {
    "systemd.daemon_reload": "guarded by _if on the service drop-in changing",
    "server.shell": "only `sysctl -p`, guarded by _if on its file changing (not in containers)",
}


def passwords(testbed: Testbed) -> tuple[str, str]:
    store = LocalSecretStore(testbed.env)
    password, admin = store.get("redis_password"), store.get("redis_admin_password")
    assert password and admin, "the cache deploy did not create the Redis passwords"
    return password, admin


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
    second = tier.record(testbed.deploy(roles=["base", "cache"], limit=[tier.server.name]))
    assert second.ok, second.output
    assert [op.name for op in second.changed] == []
    used = {op.operation for op in second.operations if not op.idempotent}
    unexplained = used - set(JUSTIFIED_NON_IDEMPOTENT)
    assert not unexplained, f"non-idempotent operations without a justification: {unexplained}"


def test_hosts_outside_app_servers_and_workers_cannot_reach_redis(
    testbed: Testbed, tier: ServiceTier
) -> None:
    password, _ = passwords(testbed)
    code, out = checks.redis(
        testbed, tier.outsider, tier.server.private_address, "PING", password=password
    )
    assert code != 0 and "PONG" not in out, out


def test_dry_run_shows_the_diff_and_changes_nothing(testbed: Testbed, tier: ServiceTier) -> None:
    before = testbed.exec(tier.server, "sha1sum /etc/redis/redis.conf")

    plan = tier.record(
        testbed.deploy(
            roles=["cache"],
            limit=[tier.server.name],
            dry=True,
            overrides={"redis_maxmemory": "128mb"},
        )
    )

    assert plan.ok, plan.output
    assert [op.name for op in plan.changed] == [
        "Redis | Configure Redis (bind, auth, memory, AOF)",
        "Redis | Restart Redis for the new configuration",
    ]
    assert "Will modify /etc/redis/redis.conf" in plan.output
    assert "- maxmemory 256mb" in plan.output and "+ maxmemory 128mb" in plan.output
    assert testbed.exec(tier.server, "sha1sum /etc/redis/redis.conf") == before


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
    assert [op.name for op in changed.changed] == [
        "Redis | Configure Redis (bind, auth, memory, AOF)",
        "Redis | Restart Redis for the new configuration",
    ]
    assert get("job:1") == "queued"
    _, out = checks.redis(
        testbed, tier.app, address, "LRANGE", "queue", "0", "-1", password=password
    )
    assert out.split() == ["a", "b"]


def test_no_secret_appears_in_any_output(testbed: Testbed, tier: ServiceTier) -> None:
    secrets = passwords(testbed)
    assert tier.outputs
    for output in tier.outputs:
        for value in secrets:
            assert value not in output


def test_maxmemory_that_is_not_a_size_stops_before_any_host_is_touched(
    testbed: Testbed, tier: ServiceTier, tmp_path: Path
) -> None:
    group_data = tmp_path / "group_data"
    shutil.copytree(PROJECT_ROOT / "group_data", group_data)
    with (group_data / "cache_servers.py").open("a") as handle:
        handle.write('\nredis_maxmemory = "lots"\n')
    # From the next whole second on: `date +%s` rounds down, and the previous
    # test's own logins may share the current second.
    since = int(testbed.exec(tier.server, "date +%s")) + 1
    time.sleep(1)

    result = testbed.deploy(roles=["cache"], limit=[tier.server.name], group_data=group_data)

    assert result.returncode == 2
    output = " ".join(result.output.split())
    assert "cache_servers.py: redis_maxmemory:" in output and "is not a Redis size" in output
    assert result.operations == []
    logins = testbed.exec(
        tier.server, f"journalctl -u ssh --since @{since} --no-pager", check=False
    )
    assert "Accepted publickey" not in logins
