"""What an operator expects of a worker (maha-worker). Shared with the Ansible tests."""

from __future__ import annotations

from typing import Any

from tests.checks.app import check_hardened_unit, check_release_layout, unit_property


def stop_timeout_seconds(th: Any) -> float:
    micro = unit_property(th, "maha-worker", "TimeoutStopUSec")
    value = micro.removesuffix("s")
    if "min" in value:  # systemd prints e.g. "1min 5s"
        minutes, _, seconds = value.partition("min")
        return int(minutes) * 60 + float(seconds.strip() or 0)
    return float(value)


def check_worker(th: Any, concurrency: int = 2, grace_ms: int = 5000) -> None:
    """The worker role's promises, checked on a converged worker."""
    check_release_layout(th)
    check_hardened_unit(th, "maha-worker")
    assert unit_property(th, "maha-worker", "KillSignal") == "15"  # SIGTERM
    assert stop_timeout_seconds(th) > grace_ms / 1000
    environment = unit_property(th, "maha-worker", "Environment")
    assert f"WORKER_CONCURRENCY={concurrency}" in environment
    assert f"WORKER_STOP_GRACE_MS={grace_ms}" in environment
