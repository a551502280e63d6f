"""The lb role (HAProxy) on a real host: converge, idempotence, a dry run with a diff."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

from mahaops.local.hosts import LocalHost
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
    second = testbed.deploy(roles=ROLES, limit=[converged.name])
    assert second.ok, second.output
    assert [op.name for op in second.changed] == []


def test_dry_run_shows_the_config_diff_and_changes_nothing(testbed: Testbed, converged) -> None:
    before = testbed.exec(converged, "sha1sum /etc/haproxy/haproxy.cfg")

    plan = testbed.deploy(
        roles=["lb"], limit=[converged.name], dry=True, overrides={"lb_check_interval_ms": 500}
    )

    assert plan.ok, plan.output
    assert [op.name for op in plan.changed] == [
        "Load balancer | HAProxy: app servers with health checks (checked by haproxy -c)",
        "Load balancer | Reload HAProxy for the new configuration",
    ]
    assert "inter 1000ms" in plan.output and "inter 500ms" in plan.output
    assert testbed.exec(converged, "sha1sum /etc/haproxy/haproxy.cfg") == before
