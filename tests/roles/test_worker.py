"""The worker role on a real host: converge, idempotence, a dry run with a diff, and a
graceful stop."""

from __future__ import annotations

from typing import Any

import pytest

from mahaops.local.hosts import LocalHost
from tests.checks import app as app_checks
from tests.checks import converge, ports
from tests.checks import worker as checks
from tests.conftest import Testbed, infra
from tests.roles.test_app import JUSTIFIED_NON_IDEMPOTENT

pytestmark = pytest.mark.testbed

ROLES = ["base", "worker"]


@pytest.fixture(scope="module")
def converged(testbed: Testbed) -> tuple[LocalHost, dict[str, Any]]:
    backing = app_checks.backing_services(testbed)
    host, _ = converge.fresh_host(testbed, "worker", "worker-r1", ROLES, backing)
    return host, backing


def test_fresh_worker_runs_the_release_hardened(converged) -> None:
    host, _ = converged
    checks.check_worker(infra(host))


def test_second_converge_changes_nothing(testbed: Testbed, converged) -> None:
    host, backing = converged
    converge.assert_idempotent(
        testbed, [host.name], ROLES, overrides=backing, justified=JUSTIFIED_NON_IDEMPOTENT
    )


def test_dry_run_shows_the_unit_diff_and_changes_nothing(testbed: Testbed, converged) -> None:
    host, backing = converged
    converge.assert_dry_run(
        testbed,
        host,
        "/etc/systemd/system/maha-worker.service",
        roles=["worker"],
        overrides={**backing, "worker_concurrency": 4},
        changed=[
            "Worker | Unit maha-worker",
            "Worker | Reload systemd for maha-worker",
            "Worker | Restart maha-worker",
            "Worker | Check maha-worker; switch back if unhealthy",
        ],
        shows=["WORKER_CONCURRENCY=2", "WORKER_CONCURRENCY=4"],
    )


def test_worker_stops_gracefully_on_sigterm(testbed: Testbed, converged) -> None:
    host, _ = converged
    testbed.exec(host, "systemctl stop maha-worker")
    try:
        result = testbed.exec(host, "systemctl show -p Result --value maha-worker").strip()
        assert result == "success"  # exited by itself within the grace: not killed
        logs = testbed.exec(host, "journalctl -u maha-worker -n 20 --no-pager")
        assert "SIGKILL" not in logs
    finally:
        testbed.exec(host, "systemctl start maha-worker")


def test_every_port_beyond_loopback_speaks_tls_or_ssh_or_is_plain_by_design(
    testbed: Testbed, converged
) -> None:
    ports.assert_tls_or_ssh(testbed, "worker", converged[0], {22: "ssh"})
