"""The lb role (HAProxy) on a real host: converge, idempotence, a dry run with a diff."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from mahaops.local.hosts import LocalHost
from tests.checks import converge, ports
from tests.checks import lb as checks
from tests.conftest import Testbed, infra

pytestmark = pytest.mark.testbed

ROLES = ["base", "lb"]


@pytest.fixture(scope="module")
def converged(testbed: Testbed) -> LocalHost:
    host = testbed.host("lb", name="lb-r1")
    apps = list(_app_servers(testbed))
    if apps:  # their firewalls admit load balancers known when base last ran: this one too
        opened = testbed.deploy(roles=["base"], limit=apps)
        assert opened.ok, opened.output
    first = testbed.deploy(roles=ROLES, limit=[host.name])
    assert first.ok, first.output
    return host


def _app_servers(testbed: Testbed) -> dict[str, str]:
    return {h.name: h.private_address for h in testbed.environment.hosts() if h.role == "app"}


def test_fresh_lb_balances_the_inventory_app_servers(testbed: Testbed, converged) -> None:
    checks.check_lb(infra(converged), _app_servers(testbed))


def test_lb_answers_on_its_published_port_without_hanging(converged) -> None:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{converged.ports[80]}/health", timeout=10
        ) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # no healthy app server reachable from this lb
        status = exc.code
    assert status in (200, 503)
    assert time.monotonic() - started < 5


def test_second_converge_changes_nothing(testbed: Testbed, converged) -> None:
    converge.assert_idempotent(testbed, [converged.name], ROLES)


def test_dry_run_shows_the_config_diff_and_changes_nothing(testbed: Testbed, converged) -> None:
    converge.assert_dry_run(
        testbed,
        converged,
        "/etc/haproxy/haproxy.cfg",
        roles=["lb"],
        overrides={"lb_check_interval_ms": 500},
        changed=[
            "Load balancer | HAProxy: app servers with health checks (checked by haproxy -c)",
            "Load balancer | Reload HAProxy for the new configuration",
        ],
        shows=["inter 1000ms", "inter 500ms"],
    )


def test_every_port_beyond_loopback_speaks_tls_or_ssh_or_is_plain_by_design(
    testbed: Testbed, converged
) -> None:
    ports.assert_tls_or_ssh(testbed, "lb", converged, {22: "ssh", 80: "plain"})
