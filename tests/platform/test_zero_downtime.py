"""Zero downtime, measured (issue 14): steady traffic through the load balancer and
WebSocket clients following campaigns, for the whole of a release, a rollback and
configuration changes that reload nginx and restart the web service on every app server at
once. Each must cost no failed request; every WebSocket client cut by a restart reconnects
and keeps receiving its notifications.

On the platform tests/platform and tests/lifecycle share (tests/platform/harness.py), after
test_local_platform; the settings changed here are put back when the module ends.
Replacing an app server under load is left to the lifecycle tests (``invoke replace``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mahaops import release as releases
from mahaops.runner import run_deploy
from tests.load import Load, Report
from tests.platform.harness import Platform, build_variant

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

RATE = float(os.environ.get("MAHA_LOAD_RATE", "40"))  # requests per second
WS_CLIENTS = int(os.environ.get("MAHA_LOAD_WS", "8"))
SETTLE = 3.0  # seconds of load before and after the change (steady state on both sides)


@pytest.fixture(scope="module", autouse=True)
def _settings_put_back(plat: Platform) -> Iterator[None]:
    """The configuration changes below are deploys with overrides: the modules after this
    one on the shared platform expect the settings' own values, so a deploy without them
    ends the module."""
    yield
    restored = run_deploy(plat.env, roles=["app"])
    assert restored.ok, restored.output[-4000:]


def under_load(p: Platform, change: Callable[[], Any]) -> tuple[Any, Report]:
    """``change()`` with the load running from SETTLE seconds before to SETTLE after it."""
    import time

    with Load(p.url, rate=RATE, ws_clients=WS_CLIENTS) as load:
        time.sleep(SETTLE)
        outcome = change()
        time.sleep(SETTLE)
    assert load.report is not None
    print(load.report.summary())
    return outcome, load.report


def assert_no_downtime(report: Report) -> None:
    assert report.requests >= RATE * 2 * SETTLE * 0.9, report.summary()
    assert report.failures == 0, report.summary()
    assert report.missed_final == [], report.summary()  # every client still notified
    for follower in report.followers:
        # A client cut by a restart is connected again (its last connection is open)...
        assert follower.connects == follower.cuts + 1, (follower, report.summary())
        assert follower.messages > 0, (follower, report.summary())  # ...and was notified


def test_a_release_under_load_fails_no_request(
    plat: Platform,
    tmp_path: Path,
) -> None:
    (before,) = plat.served_releases()
    built = build_variant(tmp_path, "echo '/* v2 */' >> public/app.css")

    (_, result), report = under_load(plat, lambda: releases.deploy(plat.env, built.tarball))

    assert result.ok, result.output[-4000:]
    assert_no_downtime(report)
    assert set(report.releases) == {before, built.id}  # the switch happened under the load
    assert report.cuts >= 1  # the web processes restarted: clients were cut and came back
    assert plat.served_releases() == {built.id}


def test_a_rollback_under_load_fails_no_request(
    plat: Platform,
) -> None:
    assert plat.first.release
    (before,) = plat.served_releases()
    assert before != plat.first.release

    (_, result), report = under_load(
        plat, lambda: releases.rollback(plat.env, to=str(plat.first.release), capture=True)
    )

    assert result.ok, result.output[-4000:]
    assert_no_downtime(report)
    assert set(report.releases) == {before, plat.first.release}
    assert plat.served_releases() == {plat.first.release}


def test_an_nginx_configuration_change_under_load_fails_no_request(
    plat: Platform,
) -> None:
    # Every app server at once (one deploy run): nginx reloads on both.
    result, report = under_load(
        plat,
        lambda: run_deploy(plat.env, roles=["app"], overrides={"nginx_static_max_age": 86400}),
    )

    assert result.ok, result.output[-4000:]
    reloads = result.named("Reload nginx")
    assert sorted(op.host for op in reloads if op.status == "changed") == ["app-1", "app-2"]
    assert_no_downtime(report)


def test_a_web_service_restart_on_every_app_server_at_once_fails_no_request(
    plat: Platform,
) -> None:
    # A changed environment restarts maha-web on both app servers in the same run: only the
    # socket systemd holds across restarts keeps requests from finding no server at all.
    result, report = under_load(
        plat, lambda: run_deploy(plat.env, roles=["app"], overrides={"app_env": {"LOAD": "1"}})
    )

    assert result.ok, result.output[-4000:]
    restarts = result.named("Restart maha-web")
    assert sorted(op.host for op in restarts if op.status == "changed") == ["app-1", "app-2"]
    assert_no_downtime(report)
    assert report.cuts >= WS_CLIENTS  # every client was on a restarted server
