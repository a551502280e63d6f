"""Releases under faults on the local platform (issue 14): a run that dies after the switch,
a rollout that stops half way and the rollback after it, a rollback below the schema.

On the platform tests/platform and tests/lifecycle share (tests/platform/harness.py), after
the zero-downtime tests; tests run in file order and build on each other, and the last
leaves every host back on one release (the schema one migration ahead of it).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops import release as releases
from mahaops.release import APP_DIR
from tests.platform.harness import Platform, build_variant

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

ROOT = "/srv/maha"


def running(p: Platform, name: str) -> str:
    """The release app server ``name``'s web process answers with (its /health header)."""
    headers = p.exec(name, "curl -s -D - -o /dev/null --max-time 5 http://127.0.0.1:3000/health")
    for line in headers.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "x-maha-release":
            return value.strip()
    return "?"


def current(p: Platform, name: str) -> str:
    return p.exec(name, f"readlink {ROOT}/current").strip().removeprefix("releases/")


def schema(p: Platform) -> str:
    query = "select max(version) from schema_migrations"
    return p.exec("db-1", f"su postgres -c \"psql -d maha -tA -c '{query}'\"").strip()


def switch_alone(p: Platform, name: str, built: releases.Release, tmp: Path) -> None:
    """What a run killed right after its switch leaves: the release pushed, unpacked and
    switched to by the deploy's own operations, and nothing after (no restart, no check)."""
    deploy = tmp / "switch_only.py"
    tarball = f"{ROOT}/tarballs/{built.tarball.name}"
    deploy.write_text(
        "from pyinfra.operations import files\n"
        "from operations import release\n"
        f"files.put(name='Push', src={str(built.tarball)!r}, dest={tarball!r}, mode='600')\n"
        f"release.unpacked(name='Unpack', tarball={tarball!r}, release_id={built.id!r})\n"
        f"release.current(name='Switch', release_id={built.id!r}, services=['maha-web'])\n"
    )
    proc = subprocess.run(
        [
            sys.executable, "-m", "pyinfra", "-y", "--sudo", "--limit", name,
            str(PROJECT_ROOT / "inventories" / "local.py"), str(deploy),
        ],
        cwd=PROJECT_ROOT, env={**os.environ, "MAHA_ENV": p.env, "PYTHONPATH": str(PROJECT_ROOT)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def test_a_run_killed_after_the_switch_is_finished_by_the_next_release(
    plat: Platform,
    tmp_path: Path,
) -> None:
    (old,) = plat.served_releases()
    built = build_variant(tmp_path, "echo '/* v2 */' >> public/app.css")

    switch_alone(plat, "app-1", built, tmp_path)

    # The wrong code runs, and the host says so: current moved, the process did not.
    assert current(plat, "app-1") == built.id
    assert running(plat, "app-1") == old
    assert plat.exec("app-1", f"cat {ROOT}/pending/maha-web").strip() == built.id
    app1 = next(h for h in releases.fleet(plat.env) if h.name == "app-1")
    assert app1.pending == {"maha-web": built.id} and app1.running == {"maha-web": old}

    _, result = releases.deploy(plat.env, built.tarball, capture=True)

    assert result.ok, result.output[-4000:]
    assert [op.status for op in result.named("Restart maha-web", "app-1")] == ["changed"]
    assert running(plat, "app-1") == running(plat, "app-2") == built.id
    assert plat.served_releases() == {built.id}
    assert plat.exec("app-1", f"ls -A {ROOT}/pending").strip() == ""


def test_rollback_after_a_rollout_stopped_on_the_second_app_server(
    plat: Platform,
    tmp_path: Path,
) -> None:
    (good,) = plat.served_releases()
    schema_before = schema(plat)
    broken = build_variant(
        tmp_path,
        "sed -i \"s|return health(req, res);|{ if (config.serverName === 'app-2') "
        "throw new Error('broken on app-2'); return health(req, res); }|\" src/web.js",
    )
    _, failed = releases.deploy(
        plat.env, broken.tarball, capture=True, overrides={"app_health_retries": 5}
    )
    assert not failed.ok
    # A mixed fleet: app-1 passed on the new release, app-2 switched back, the worker
    # never moved.
    assert [current(plat, n) for n in ("app-1", "app-2", "worker-1")] == [broken.id, good, good]

    target, result = releases.rollback(plat.env, capture=True)

    assert result.ok, result.output[-4000:]
    assert target == good
    assert [current(plat, n) for n in ("app-1", "app-2", "worker-1")] == [good] * 3
    assert running(plat, "app-1") == running(plat, "app-2") == good
    assert plat.served_releases() == {good}
    assert schema(plat) == schema_before

    again_target, again = releases.rollback(plat.env, capture=True)

    assert again.ok, again.output[-4000:]
    assert again_target == good
    assert [(op.host, op.name) for op in again.changed] == []
    assert [current(plat, n) for n in ("app-1", "app-2", "worker-1")] == [good] * 3


def test_a_rollback_below_the_schema_is_refused_unless_forced(
    plat: Platform,
    tmp_path: Path,
) -> None:
    (good,) = plat.served_releases()
    # One migration past the app's own: the schema is then ahead of the good release.
    ahead = f"{max(int(p.name[:3]) for p in (APP_DIR / 'migrations').glob('*.sql')) + 1:03d}"
    expanded = build_variant(
        tmp_path,
        "printf 'create table rollback_probe (id int);\\n' > "
        f"migrations/{ahead}_rollback_probe.sql",
    )
    _, result = releases.deploy(plat.env, expanded.tarball, capture=True)
    assert result.ok, result.output[-4000:]
    assert schema(plat) == ahead

    _, refused = releases.rollback(plat.env, to=good, capture=True)

    assert not refused.ok
    assert f"refusing to roll back to {good}" in refused.output
    assert [current(plat, n) for n in ("app-1", "app-2", "worker-1")] == [expanded.id] * 3
    assert plat.served_releases() == {expanded.id}

    _, forced = releases.rollback(plat.env, to=good, force=True, capture=True)

    assert forced.ok, forced.output[-4000:]
    assert [current(plat, n) for n in ("app-1", "app-2", "worker-1")] == [good] * 3
    assert schema(plat) == ahead  # a rollback never touches the schema
