"""What a run prints while it waits and when it fails, and the release resolved once."""

from __future__ import annotations

import logging
from typing import Any

import gevent
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api.connect import connect_all
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_state
from pyinfra.operations import server

from mahaops import masking, pyinfra_hooks
from mahaops.hosts import HostSpec
from mahaops.roles import BASE, role
from mahaops.runner import engine, report
from mahaops.runner.state import build_state
from mahaops.settings import DEFAULT_GROUP_DATA, GroupData


def test_durations_read_as_an_operator_says_them() -> None:
    assert [report.duration(s) for s in (0.4, 29.9, 60, 90, 605)] == [
        "0s",
        "29s",
        "1m00s",
        "1m30s",
        "10m05s",
    ]


def test_a_waiting_host_says_what_it_is_still_on_at_every_interval() -> None:
    said: list[str] = []
    with report.still_on("app-1", "Base", "Install base packages", every=0.05, say=said.append):
        gevent.sleep(0.18)
    assert len(said) == 3, said
    assert all(s.startswith("app-1 Base: still on 'Install base packages' (") for s in said)
    gevent.sleep(0.1)
    assert len(said) == 3  # nothing once the operation is over


def test_a_quick_operation_says_nothing() -> None:
    said: list[str] = []
    with report.still_on("app-1", "Base", "Quick", every=0.5, say=said.append):
        gevent.sleep(0.01)
    with report.still_on("app-1", "Base", "Quiet", enabled=False, every=0.01, say=said.append):
        gevent.sleep(0.05)
    assert said == []


def _log_as_pyinfra(errors: report.HostErrors, host: str, message: str) -> None:
    # As pyinfra's host.print_prefix and format_text colour them.
    text = f"\x1b[0m[\x1b[1m{host}\x1b[0m] \x1b[31m{message}\x1b[0m"
    errors.emit(logging.LogRecord("pyinfra", logging.ERROR, __file__, 1, text, None, None))


def test_each_hosts_errors_are_kept_from_its_operations_start_masked() -> None:
    secret = masking.register("a-registered-secret-for-the-report")
    errors = report.HostErrors(keep=3)
    _log_as_pyinfra(errors, "app-1", "an earlier operation's warning")
    errors.start("app-1")
    for n in range(4):
        _log_as_pyinfra(errors, "app-1", f"line {n} {secret}")
    _log_as_pyinfra(errors, "db-1", "another host")
    assert errors.tail("app-1") == [f"line {n} {masking.MASK}" for n in (1, 2, 3)]
    assert errors.tail("db-1") == ["another host"]


def _printed(func: Any, *args: Any) -> str:
    with report.console.capture() as capture:
        func(*args)
    return " ".join(capture.get().split())


APT = report.Failure(
    host="app-1",
    role="Base system (every host)",
    name="Install base packages",
    operation="apt.packages",
    lines=["E: Failed to fetch http://deb.debian.org/debian/pool/main/c/curl.deb 503"],
    apt_proxy="http://host.docker.internal:3150",
)


def test_a_failure_shows_its_operation_error_and_for_apt_where_packages_come_from() -> None:
    local = _printed(report.print_failures, [APT], "local")
    assert "app-1 Base system (every host): 'Install base packages' (apt.packages)" in local
    assert "| E: Failed to fetch http://deb.debian.org" in local
    assert "apt_proxy = 'http://host.docker.internal:3150'" in local
    assert report.PKGCACHE_LOGS in local
    aws = _printed(report.print_failures, [APT], "aws")
    assert "apt_proxy" in aws and report.PKGCACHE_LOGS not in aws


def test_other_failures_have_no_apt_hint() -> None:
    other = report.Failure("db-1", "PostgreSQL", "Create role", "server.shell", ["boom"], "")
    printed = _printed(report.print_failures, [other], "local")
    assert "| boom" in printed and "hint" not in printed
    assert _printed(report.print_failures, [], "local") == ""


def test_skipped_operations_are_counted_not_listed() -> None:
    results = [
        {"host": "app-1", "name": "Install base packages", "status": "failed"},
        *({"host": "app-1", "name": f"Later step {n}", "status": "skipped"} for n in range(5)),
        {"host": "db-1", "name": "Write config", "status": "changed"},
    ]
    printed = _printed(report.summary, results, False, 1.0)
    assert "skipped" not in printed and "Later step" not in printed
    assert "Install base packages" in printed and "Write config" in printed
    assert "│ app-1 │ 6 │ 0 │ 6 │" in printed  # operations, changed, failed (with skipped)


def _app_tier(tarballs: dict[str, str], rollback: str = "") -> Any:
    specs = [
        HostSpec(name, ("local", group), {"app_release_tarball": tarball})
        for (name, tarball), group in zip(
            tarballs.items(), ("app_servers", "workers", "app_servers"), strict=False
        )
    ]
    overrides = {"app_rollback": True} if rollback else {}
    state = build_state(specs, GroupData(DEFAULT_GROUP_DATA), overrides, dry=True)
    state.activated_hosts.update(state.inventory)  # as if connected
    return state, specs


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    try:
        import mahaops.release as module
    except ImportError:  # before the release package existed
        import mahaops.releases as module  # type: ignore[no-redef]
    monkeypatch.setattr(module, "for_run", calls.append)
    return calls


def test_the_release_is_resolved_once_per_tarball_before_planning(asked: list[str]) -> None:
    state, specs = _app_tier({"app-1": "", "worker-1": "/tmp/maha-x.tar.gz", "app-2": ""})
    engine.resolve_release(state, [BASE, role("app"), role("worker")], specs)
    assert sorted(asked) == ["", "/tmp/maha-x.tar.gz"]
    assert state.current_stage < StateStage.Prepare  # nothing planned


def test_no_release_for_other_roles_nor_a_rollback(asked: list[str]) -> None:
    state, specs = _app_tier({"app-1": "", "worker-1": ""})
    engine.resolve_release(state, [BASE, role("db")], specs)
    state, specs = _app_tier({"app-1": "", "worker-1": ""}, rollback="yes")
    engine.resolve_release(state, [role("app"), role("worker")], specs)
    assert asked == []


def test_a_failing_operation_stops_its_host_and_is_reported_with_its_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    state = State(Inventory((["@local"], {"apt_proxy": "http://cache:3142"})), Config())
    connect_all(state)
    host = state.inventory.get_host("@local")
    with ctx_state.use(state), ctx_host.use(host):
        bad = server.shell(
            name="Install curl", commands=["echo 'E: Failed to fetch x' >&2; exit 100"]
        )
        after = server.shell(name="Never run", commands=["true"])
    hashes = [pyinfra_hooks.op_hash_of(m) for m in (bad, after)]
    monkeypatch.setattr(engine, "op_roles", dict.fromkeys(hashes, "base"))
    monkeypatch.setattr(engine, "failures", [])
    logger = logging.getLogger("pyinfra")
    logger.addHandler(report.host_errors)
    try:
        with report.console.capture():
            # The last host failing ends the run quietly (no "No hosts remaining!" traceback
            # from its greenlet): the failure summary says what failed.
            engine.execute(state, progress=True)
    finally:
        logger.removeHandler(report.host_errors)
    [failure] = engine.failures
    assert (failure.host, failure.name, failure.apt_proxy) == (
        "@local",
        "Install curl",
        "http://cache:3142",
    )
    assert "E: Failed to fetch x" in failure.lines
    assert not after.is_complete()  # the host stopped at its failure
    assert host not in state.active_hosts
