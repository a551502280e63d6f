"""The operator's tools on real hosts: exec, logs, the deploy lock, history and status,
run as an operator runs them (``invoke ...`` in a subprocess) against a db and an app host
converged with base."""

from __future__ import annotations

import datetime
import re
import subprocess
import sys

import pytest

from mahaops.fleet import lock
from mahaops.fleet.ssh import environment_hosts
from mahaops.local.hosts import LocalHost
from mahaops.secrets import LocalSecretStore
from tests.conftest import Testbed

pytestmark = pytest.mark.testbed


def invoke(*args: str, operator: str = "bob@laptop-2") -> subprocess.CompletedProcess[str]:
    import os

    env = {**os.environ, "MAHA_OPERATOR": operator, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )


@pytest.fixture(scope="module")
def pair(testbed: Testbed) -> tuple[LocalHost, LocalHost]:
    db = testbed.host("db", name="fl-db-1")
    app = testbed.host("app", name="fl-app-1")
    done = invoke("deploy", "--env", testbed.env, "--role", "base", operator="carol@ci")
    assert done.returncode == 0, done.stdout + done.stderr
    return db, app


def held_for(text: str) -> int:
    """Seconds from a "held for 2m05s" the tools print."""
    found = re.search(r"held for (\d+)m(\d\d)s", text)
    assert found, text
    return int(found[1]) * 60 + int(found[2])


def lock_host(testbed: Testbed) -> lock.HostSpec:
    where = lock.lock_host(environment_hosts(testbed.env))
    assert where is not None
    return where


def test_the_lock_lives_on_the_db_host_and_deploy_left_it_free(testbed: Testbed, pair) -> None:
    db, _ = pair
    where = lock_host(testbed)
    assert where.name == db.name
    assert lock.current(where) is None


def test_exec_runs_on_both_hosts_and_tables_each_exit_status(testbed: Testbed, pair) -> None:
    db, app = pair
    secret = "fleet-test-s3cr3t-value"
    LocalSecretStore(testbed.env).put("fleet_test_secret", secret)
    # Fails on the app host only; prints a secret, which must never reach the screen.
    command = f"echo on $(hostname) {secret}; test $(hostname) = {db.name}"
    done = invoke("exec", "--env", testbed.env, "--", command)
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert re.search(rf"^{db.name}\s+\| on {db.name} \*{{8}}$", out, re.M), out
    assert re.search(rf"^{app.name}\s+\| on {app.name} \*{{8}}$", out, re.M), out
    assert secret not in out + done.stderr
    rows = dict(re.findall(r"(fl-\w+-1)\s+│\s+(\d+)", out))
    assert rows == {db.name: "0", app.name: "1"}, out
    assert f"failed on 1 of 2 host(s): {app.name}" in done.stderr


def test_exec_on_one_role(testbed: Testbed, pair) -> None:
    _, app = pair
    done = invoke("exec", "--env", testbed.env, "--role", "app", "--", "hostname")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.findall(r"^(\S+)\s+\| ", done.stdout, re.M) == [app.name]


def test_logs_interleave_both_hosts_by_time(testbed: Testbed, pair) -> None:
    db, app = pair
    marker = f"fleetlog{datetime.datetime.now().strftime('%H%M%S%f')}"
    # One after the other: each line is in its journal before the next is written.
    for step, host in enumerate((db, app, db, app)):
        testbed.exec(host, f"logger -t fleettest '{marker} step {step}'")
    done = invoke("logs", "--env", testbed.env, "--since", "-10min")
    assert done.returncode == 0, done.stdout + done.stderr
    seen = re.findall(rf"^\S+Z (\S+) fleettest\S*: {marker} step (\d)$", done.stdout, re.M)
    assert seen == [(db.name, "0"), (app.name, "1"), (db.name, "2"), (app.name, "3")], seen


def test_second_release_is_refused_naming_holder_and_age_until_unlocked(
    testbed: Testbed, pair
) -> None:
    where = lock_host(testbed)
    # The first release, as its run left the lock: taken 2 minutes ago by alice.
    since = lock.timestamp(lock.now() - datetime.timedelta(seconds=125))
    first = lock.Holder("alice@laptop-1", f"invoke release --env {testbed.env}", since, "a1b2")
    lock.acquire(testbed.env, where, first)

    second = invoke("release", "--env", testbed.env)
    assert second.returncode == 1
    said = second.stderr
    assert "alice@laptop-1" in said and f"invoke release --env {testbed.env}" in said, said
    assert 125 <= held_for(said) < 3600, said
    assert f"invoke unlock --env {testbed.env}" in said
    assert lock.current(where) == first, "the refused run must leave the holder's lock"
    assert "Deploying release" not in second.stdout

    freed = invoke("unlock", "--env", testbed.env)
    assert freed.returncode == 0, freed.stdout + freed.stderr
    assert "alice@laptop-1" in freed.stdout and held_for(freed.stdout) >= 125, freed.stdout
    assert lock.current(where) is None

    history = invoke("history", "--env", testbed.env)
    assert re.search(
        r"bob@laptop-2 .*invoke release .*refused: held by alice@laptop-1", history.stdout
    )
    assert re.search(
        r"bob@laptop-2 .*invoke unlock .*released lock of alice@laptop-1", history.stdout
    )


def test_history_lists_deploys_with_their_result_and_hosts(testbed: Testbed, pair) -> None:
    db, app = pair
    # Bad settings stop the command before the lock: no host is touched, so no record.
    bad = invoke("deploy", "--env", testbed.env, "--role", "base", "--set", "base_nope=1")
    assert bad.returncode != 0 and "base_nope" in bad.stdout + bad.stderr
    history = invoke("history", "--env", testbed.env)
    rows = [line for line in history.stdout.splitlines() if "invoke deploy" in line]
    assert re.search(rf"carol@ci .*--role base .*{app.name}, {db.name} .*ok", rows[0]), rows
    assert not [row for row in rows if "base_nope" in row], rows
    assert lock.current(lock_host(testbed)) is None, "the refused run took no lock"


def test_status_has_a_row_per_host_with_the_running_release(testbed: Testbed, pair) -> None:
    db, app = pair
    # A stand-in web process answering /health with its release, while `current` still
    # points at the release before: status must report the process's word.
    testbed.exec(
        app, "mkdir -p /srv/maha/releases/r-old && ln -sfn releases/r-old /srv/maha/current"
    )
    server = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200); self.send_header('X-Maha-Release', 'r-new')\n"
        "        self.end_headers()\n"
        "h.HTTPServer(('127.0.0.1', 3000), H).serve_forever()\n"
    )
    testbed.exec(app, f'systemd-run --unit maha-web python3 -c "{server}"')
    try:
        done = invoke("status", "--env", testbed.env)
    finally:
        testbed.exec(app, "systemctl stop maha-web", check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    app_row = next(line for line in out.splitlines() if line.startswith(f"│ {app.name}"))
    db_row = next(line for line in out.splitlines() if line.startswith(f"│ {db.name}"))
    assert app.private_address in app_row and "│ app " in app_row
    assert "r-new" in app_row and "r-old" not in app_row, app_row
    assert "nginx absent" in app_row and "maha-web active" in app_row, app_row
    assert "carol@ci" in app_row or "bob@laptop-2" in app_row, app_row
    assert db.private_address in db_row and "│ db " in db_row
