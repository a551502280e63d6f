"""Adding, removing and replacing servers of a running local platform (issue 13, section 1),
run as an operator runs them (`invoke scale|replace|remove` in a subprocess).

On the platform tests/platform and tests/lifecycle share (tests/platform/harness.py), last
of its modules: these replace its hosts. Tests run in file order and build on each other:
app servers 2 -> 3 -> 2, app-1 replaced under load, the worker replaced during campaigns,
a killed host removed, a host killed mid-scale.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from mahaops.fleet import lock
from mahaops.fleet.ssh import environment_hosts
from tests.platform.harness import Platform

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


@pytest.fixture(scope="module")
def p(plat: Platform) -> Platform:
    return plat


def invoke(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "MAHA_OPERATOR": "ops@lifecycle-test"}
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-8000:]
    return out


def names(p: Platform, role: str) -> set[str]:
    return {h.name for h in p.environment.hosts() if h.role == role}


def address(p: Platform, name: str) -> str:
    return p.host(name).private_address


def admitted(p: Platform, addr: str) -> dict[str, bool]:
    """Where ``addr`` is let in: PostgreSQL's pg_hba and the db's and cache's firewalls
    (the rulesets the base role loads; ``nft list`` would print neighbours as ranges)."""
    network = f"{addr}/32"
    return {
        "pg_hba": network in p.exec("db-1", "cat /etc/postgresql/*/main/pg_hba.conf").split(),
        "db nftables": f" {network}" in p.exec("db-1", "cat /etc/nftables.conf"),
        "cache nftables": f" {network}" in p.exec("cache-1", "cat /etc/nftables.conf"),
    }


def backends(p: Platform) -> set[str]:
    text = p.exec("lb-1", "cat /etc/haproxy/haproxy.cfg")
    return set(re.findall(r"^\s*server (\S+) ", text, re.M))


def lock_is_free(p: Platform) -> bool:
    where = lock.lock_host(environment_hosts(p.env))
    assert where is not None
    return lock.current(where) is None


@contextmanager
def load(p: Platform) -> Iterator[dict[str, int]]:
    """Requests through the load balancer, one after another, while the block runs:
    counts of answers by status, with errors (refused, reset, timeout) under 0."""
    counts: dict[str, int] = {}
    stop = threading.Event()
    url = p.url + "/health"  # read once: the containers change under the loop

    def loop() -> None:
        while not stop.is_set():
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    key = str(response.status)
            except urllib.error.HTTPError as exc:
                key = str(exc.code)
            except (urllib.error.URLError, OSError) as exc:
                key = f"error: {exc}"
            counts[key] = counts.get(key, 0) + 1
            time.sleep(0.02)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(15)


def test_a_dry_scale_shows_the_peers_diffs_and_changes_nothing(p: Platform) -> None:
    before = {h.name for h in p.environment.hosts()}
    out = ok(invoke("scale", "--env", p.env, "--role", "app", "--count", "3", "--dry"))
    assert "app-3" in out and "would be created" in out
    assert re.search(r"^\s*\+\s*server app-3 ", out, re.M), out[-6000:]  # the lb's diff
    assert "pg_hba" in out  # the db's diff names the file it changes
    assert {h.name for h in p.environment.hosts()} == before
    assert lock_is_free(p)


def test_scaling_app_servers_to_three_puts_the_new_one_in_service(p: Platform) -> None:
    out = ok(invoke("scale", "--env", p.env, "--role", "app", "--count", "3"))
    assert "app-3" in out and "in service" in out
    assert names(p, "app") == {"app-1", "app-2", "app-3"}
    assert p.servers(12) == {"app-1", "app-2", "app-3"}
    assert all(admitted(p, address(p, "app-3")).values())
    assert backends(p) == {"app-1", "app-2", "app-3"}
    assert lock_is_free(p)
    history = ok(invoke("history", "--env", p.env))
    assert "scale" in history and "ops@lifecycle-test" in history


def test_scaling_back_to_two_forgets_the_removed_server(p: Platform) -> None:
    gone = address(p, "app-3")
    out = ok(invoke("scale", "--env", p.env, "--role", "app", "--count", "2"))
    assert "drained" in out
    assert names(p, "app") == {"app-1", "app-2"}
    assert backends(p) == {"app-1", "app-2"}
    assert p.servers(12) == {"app-1", "app-2"}
    assert not any(admitted(p, gone).values()), admitted(p, gone)


def test_replacing_an_app_server_under_load_fails_no_request(p: Platform) -> None:
    with load(p) as counts:
        out = ok(invoke("replace", "--env", p.env, "app-1"))
        time.sleep(3)  # requests after the old server left
    assert names(p, "app") == {"app-2", "app-3"}
    assert set(counts) == {"200"}, counts
    assert counts["200"] > 100, counts
    assert p.servers(12) == {"app-2", "app-3"}
    assert "drained" in out


def _campaigns(p: Platform, ids: list[int]) -> dict[int, tuple[str, int, int, int]]:
    """Campaign -> (status, recipients, deliveries rows, attempts)."""
    query = (
        "select c.id, c.status, c.recipients, count(d.*), c.attempts from campaigns c left "
        f"join deliveries d on d.campaign_id = c.id where c.id in ({','.join(map(str, ids))}) "
        "group by c.id"
    )
    rows = p.exec("db-1", f"su postgres -c \"psql -d maha -tAF' ' -c '{query}'\"").split("\n")
    found = {}
    for row in filter(None, rows):
        cid, status, recipients, delivered, attempts = row.split()
        found[int(cid)] = (status, int(recipients), int(delivered), int(attempts))
    return found


def _worker_active(p: Platform, name: str) -> bool:
    try:
        container = p.environment.client.containers.get(p.environment.container_name(name))
    except Exception:  # not created yet
        return False
    code, _ = container.exec_run(["systemctl", "is-active", "--quiet", "maha-worker"])
    return code == 0


def test_replacing_the_worker_during_campaigns_loses_no_job(p: Platform) -> None:
    ids: list[int] = []

    def start_when_the_new_worker_runs() -> None:
        # Campaigns queued once worker-2 takes jobs, seconds before worker-1 is told to
        # stop: each worker holds some, and worker-1 must finish or hand back its own.
        deadline = time.monotonic() + 600
        while not _worker_active(p, "worker-2") and time.monotonic() < deadline:
            time.sleep(0.5)
        for n in range(4):
            status, _, body = p.request(
                "/api/campaigns", {"name": f"replace-{n}", "recipients": 2500}
            )
            assert status == 202, body
            ids.append(int(json.loads(body)["id"]))

    starter = threading.Thread(target=start_when_the_new_worker_runs, daemon=True)
    starter.start()
    out = ok(invoke("replace", "--env", p.env, "worker-1"))
    starter.join(30)
    assert len(ids) == 4, out[-3000:]
    assert names(p, "worker") == {"worker-2"}
    # Real mail to the platform's sink since it has a mail host: 10,000 messages, at about
    # 250/s on a quiet machine (far fewer while hosts converge beside them): each campaign
    # outlasts worker-1's stop grace, so it has some to finish or hand back.
    deadline = time.monotonic() + 900
    while True:
        found = _campaigns(p, ids)
        if all(s[0] in ("done", "failed") for s in found.values()) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert {cid: (status, sent == total) for cid, (status, total, sent, _) in found.items()} == {
        cid: ("done", True) for cid in ids
    }, found
    # worker-1 was stopped in the middle of some: handed back (a hand-back gives its attempt
    # back), they were resumed on worker-2 from their last recorded batch.
    journal = p.exec("worker-2", "journalctl -u maha-worker --no-pager -o cat")
    resumed = re.findall(
        r'"msg":"job started".*?"campaign":(\d+).*?"resume_from":([1-9]\d*)', journal
    )
    assert {int(c) for c, _ in resumed} & set(ids), journal[-3000:]


def test_removing_a_killed_app_server_does_not_wait_on_it(p: Platform) -> None:
    gone = address(p, "app-2")
    p.environment.client.containers.get(p.host("app-2").container).kill()
    started = time.monotonic()
    out = ok(invoke("remove", "--env", p.env, "app-2"))
    assert time.monotonic() - started < 180, "remove waited on a lost host"
    assert "lost" in out
    assert "app-2" not in {c.labels.get("maha.host") for c in p.environment.containers()}
    assert backends(p) == {"app-3"}
    assert not any(admitted(p, gone).values())
    assert p.servers(6) == {"app-3"}


def test_a_host_killed_mid_scale_is_named_not_admitted_and_a_rerun_completes(p: Platform) -> None:
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, "-m", "invoke", "scale", "--env", p.env, "--role", "app"]
    proc = subprocess.Popen(
        [*args, "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    victim, victim_address = "", ""
    for line in proc.stdout:
        lines.append(line)
        found = re.search(r"Converging app: app on (app-\d+)", line)
        if found and not victim:
            # Killed while its role converges: the servers it uses admit it already.
            victim = found[1]
            victim_address = address(p, victim)
            time.sleep(3)
            p.environment.client.containers.get(p.host(victim).container).kill()
    out = "".join(lines) + (proc.stdout.read() if proc.stdout else "")
    assert proc.wait(120) != 0, out[-6000:]
    assert victim and victim in out.split("error:")[-1], out[-4000:]
    assert not any(admitted(p, victim_address).values()), admitted(p, victim_address)
    assert backends(p) == {"app-3"}
    assert lock_is_free(p)
    again = ok(invoke("scale", "--env", p.env, "--role", "app", "--count", "2"))
    assert victim in again
    assert p.servers(12) == {"app-3", victim}
    assert all(admitted(p, address(p, victim)).values())


def test_replacing_the_db_host_keeps_every_row_and_moves_the_clients(p: Platform) -> None:
    old_address = address(p, "db-1")
    status, _, body = p.request("/api/campaigns", {"name": "before-db-replace", "recipients": 10})
    assert status == 202, body
    out = ok(invoke("replace", "--env", p.env, "db-1"))
    assert names(p, "db") == {"db-2"}
    # The command counts the app's tables before and after: the same rows on the new host.
    counts = dict(re.findall(r"│ (\w+)\s+│ table │ rows\s+│ -\s+│ (\d+ before, \d+ after)", out))
    assert counts.keys() >= {"campaigns", "deliveries", "schema_migrations"}, out[-3000:]
    for table, text in counts.items():
        before, after = re.findall(r"\d+", text)
        assert before == after, (table, text)
    for table in ("campaigns", "deliveries", "schema_migrations"):  # the app's, never empty here
        assert int(re.findall(r"\d+", counts[table])[0]) > 0, (table, counts[table])
    # The app servers and the worker use the new host: a campaign runs end to end.
    new_address = address(p, "db-2")
    assert new_address != old_address
    for name in names(p, "app") | names(p, "worker"):
        p.exec(name, f"grep -q '@{new_address}:' /srv/maha/shared/maha.env")
    status, _, body = p.request("/api/campaigns", {"name": "after-db-replace", "recipients": 50})
    assert status == 202, body
    campaign = int(json.loads(body)["id"])
    deadline = time.monotonic() + 60
    while p.request(f"/api/campaigns/{campaign}")[2].find('"done"') < 0:
        assert time.monotonic() < deadline, "no campaign finished after the db moved"
        time.sleep(1)
    # The deploy lock and the audit log moved with the db host.
    assert lock_is_free(p)
    history = ok(invoke("history", "--env", p.env))
    assert "replace" in history and "scale" in history
