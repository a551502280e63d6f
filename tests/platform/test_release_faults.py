"""Releases under faults on the local platform (issues 13 and 14): a run that dies after the
switch, the SSH connection to an app server dropped mid-rollout, a rollout that stops half
way and the rollback after it, a rollback below the schema.

On the platform tests/platform and tests/lifecycle share (tests/platform/harness.py), after
the zero-downtime tests; tests run in file order and build on each other, and the last
leaves every host back on one release (the schema one migration ahead of it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
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


def drop_ssh_when(p: Platform, name: str, path: str, stop: threading.Event) -> list[str]:
    """Once ``path`` exists on ``name``, kill the sshd processes serving the deploy's
    connection there (the operator's link dropping, not the host going away: sshd's
    listener stays, so the next run gets in). Returns what was killed."""
    killed: list[str] = []

    def watch() -> None:
        while not stop.is_set():
            if p.exec(name, f"test -e {path} && echo yes || true").strip() == "yes":
                killed.append(p.exec(name, "pgrep -a -f '^sshd: [^/]' || true").strip())
                p.exec(name, "pkill -KILL -f '^sshd: [^/]' || true")
                return
            time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()
    return killed


def status_rows(p: Platform) -> dict[str, str]:
    """``invoke status``'s table, host name -> its row (cells of wrapped lines joined)."""
    done = subprocess.run(
        [sys.executable, "-m", "invoke", "status", "--env", p.env],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    rows: dict[str, str] = {}
    name = ""
    for line in done.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip("│ ").split("│")]
        if not line.startswith("│") or len(cells) < 4:
            continue
        name = cells[0] or name
        rows[name] = rows.get(name, "") + " " + " ".join(cells[1:])
    return rows


def test_an_ssh_connection_dropped_mid_rollout_stops_it_there_and_a_rerun_finishes(
    plat: Platform,
    tmp_path: Path,
) -> None:
    (old,) = plat.served_releases()
    built = build_variant(tmp_path, "echo '/* v-drop */' >> public/app.css")
    stop = threading.Event()
    # app-2 is rolled second: its copy of the release unpacked means app-1 passed.
    killed = drop_ssh_when(plat, "app-2", f"{ROOT}/releases/{built.id}", stop)
    try:
        _, dropped = releases.deploy(plat.env, built.tarball, capture=True)
    finally:
        stop.set()

    assert killed and "sshd" in killed[0], "the connection to app-2 was never dropped"
    assert not dropped.ok, dropped.output[-4000:]
    touched = {op.host for op in dropped.failed} | set(dropped.unreachable)
    assert touched == {"app-2"}, dropped.output[-4000:]
    # It stopped there: app-1 serves the new release, the worker never moved, and the
    # load balancer keeps answering (app-2 still runs a release that passed its check).
    assert running(plat, "app-1") == built.id
    assert current(plat, "worker-1") == old
    answers = [plat.request("/health") for _ in range(20)]
    assert [status for status, _, _ in answers] == [200] * 20
    assert {headers.get("x-maha-release") for _, headers, _ in answers} <= {old, built.id}
    rows = status_rows(plat)
    assert built.id in rows["app-1"] and old not in rows["app-1"], rows["app-1"]
    assert running(plat, "app-2") in rows["app-2"], rows["app-2"]
    if current(plat, "app-2") == built.id:  # dropped after the switch: the restart is owed
        assert f"maha-web owes {built.id}" in rows["app-2"], rows["app-2"]

    _, again = releases.deploy(plat.env, built.tarball, capture=True)

    assert again.ok, again.output[-4000:]
    assert running(plat, "app-1") == running(plat, "app-2") == built.id
    assert current(plat, "worker-1") == built.id
    assert plat.served_releases() == {built.id}
    assert plat.exec("app-2", f"ls -A {ROOT}/pending").strip() == ""


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
