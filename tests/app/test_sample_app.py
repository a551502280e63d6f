"""The sample Maha app on real PostgreSQL and Redis: API, health, worker reliability, migrations.

Fixtures (conftest.py) start everything on 127.0.0.1 and stop it afterwards.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

from .harness import APP_DIR, RELEASE, App, Postgres, Proc, Processes, Redis, Web, wait_for

MIGRATIONS = sorted(path.name for path in (APP_DIR / "migrations").glob("[0-9][0-9][0-9]_*.sql"))
# Slow enough that a test can act while the job is half done (4,000 recipients ≈ 2 s).
SLOW_WORKER = {"WORKER_CONCURRENCY": 1, "WORKER_BATCH_SIZE": 200, "WORKER_BATCH_DELAY_MS": 100}

StartWorker = Callable[..., Proc]


def deliveries(postgres: Postgres, campaign_id: int) -> tuple[int, int]:
    """(rows, distinct recipients) recorded for the campaign."""
    query = "select count(*), count(distinct recipient) from deliveries where campaign_id = "
    rows, distinct = postgres.sql(f"{query}{campaign_id}").split("|")
    return int(rows), int(distinct)


def events(proc: Proc, msg: str) -> list[dict[str, Any]]:
    return [event for event in proc.log_events() if event["msg"] == msg]


def wait_until_half_done(web: Web, campaign_id: int, recipients: int) -> None:
    wait_for(
        lambda: 0 < web.campaign(campaign_id)["sent"] < recipients // 2,
        10,
        f"campaign {campaign_id} to be under way",
        interval=0.02,
    )


def receive_until_done(ws: ClientConnection, timeout: float) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not messages or messages[-1].get("status") != "done":
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no 'done' over WebSocket within {timeout} s; got {messages[-3:]}")
        messages.append(json.loads(ws.recv(timeout=remaining)))
    return messages


# -- health and HTTP -------------------------------------------------------------------------


def test_health_answers_ok_naming_server_and_release(web: Web) -> None:
    response = web.get("/health")

    assert response.status == 200
    assert response.json() == {
        "status": "ok",
        "release": RELEASE,
        "server": "app-test-1",
        "checks": {"postgres": "ok", "redis": "ok"},
    }


@pytest.mark.parametrize("frozen", [False, True], ids=["stopped", "frozen"])
def test_health_turns_503_quickly_when_redis_fails(
    migrated: App, start_redis: Callable[[], Redis], frozen: bool
) -> None:
    own_redis = start_redis()  # the shared Redis keeps serving the other tests
    web = App(migrated.processes, migrated.postgres, own_redis).start_web("app-test-lonely")
    if frozen:  # still connected, never answers: only a timeout helps
        own_redis.proc.popen.send_signal(signal.SIGSTOP)
    else:
        own_redis.proc.stop()
    try:
        started = time.monotonic()
        response = web.get("/health")
        elapsed = time.monotonic() - started
    finally:
        own_redis.proc.popen.send_signal(signal.SIGCONT)
        own_redis.proc.stop()
        web.proc.stop()

    assert response.status == 503
    body = response.json()
    assert body["down"] == ["redis"]
    assert body["checks"]["postgres"] == "ok"
    assert elapsed < 3, f"health took {elapsed:.1f} s with Redis down"


@pytest.mark.parametrize(
    ("path", "status", "content_type"),
    [
        ("/", 200, "text/html"),
        ("/static/app.js", 200, "text/javascript"),
        ("/static/app.css", 200, "text/css"),
        ("/static/../src/config.js", 404, "application/json"),
        ("/api/campaigns/999999999", 404, "application/json"),
        ("/no-such-page", 404, "application/json"),
    ],
)
def test_every_response_names_its_server_and_release(
    web: Web, path: str, status: int, content_type: str
) -> None:
    response = web.get(path, user=web.user)

    assert response.status == status
    assert response.headers["content-type"].startswith(content_type)
    assert response.headers["x-maha-server"] == "app-test-1"
    assert response.headers["x-maha-release"] == RELEASE


@pytest.mark.parametrize(
    "body",
    [
        {"name": "zero", "recipients": 0},
        {"name": "too many", "recipients": 100_001},
        {"name": "fraction", "recipients": 1.5},
        {"name": "text", "recipients": "10"},
        {"name": "", "recipients": 10},
        {"recipients": 10},
        b"{not json",
    ],
    ids=["zero", "too-many", "fraction", "string", "empty-name", "no-name", "not-json"],
)
def test_invalid_campaigns_are_refused_with_400(
    web: Web, postgres: Postgres, body: dict[str, Any] | bytes
) -> None:
    before = postgres.scalar("select count(*) from campaigns")

    if isinstance(body, bytes):
        response = web.post("/api/campaigns", body=body, user=web.user)
    else:
        response = web.post("/api/campaigns", body, user=web.user)

    assert response.status == 400
    assert "error" in response.json()
    assert postgres.scalar("select count(*) from campaigns") == before


# -- campaigns through the worker ------------------------------------------------------------


def test_campaign_of_10000_recipients_is_delivered_with_live_progress(
    web: Web, workers: StartWorker, postgres: Postgres
) -> None:
    workers(WORKER_CONCURRENCY=2)

    campaign_id = web.start_campaign(10_000)
    url = f"{web.ws_url}/ws?campaign={campaign_id}"
    with connect(url, proxy=None, open_timeout=5, additional_headers=web.user.headers()) as ws:
        messages = receive_until_done(ws, timeout=30)

    percents = [m["percent"] for m in messages if m["type"] == "progress"]
    assert percents[-1] == 100
    assert any(0 < p < 100 for p in percents), "progress arrived only at the end"
    assert percents == sorted(percents)
    assert deliveries(postgres, campaign_id) == (10_000, 10_000)
    campaign = web.campaign(campaign_id)
    assert campaign["status"] == "done"
    assert campaign["sent"] == 10_000
    assert campaign["result"]["delivered"] == 10_000


def test_killed_worker_does_not_lose_its_job(
    web: Web, workers: StartWorker, postgres: Postgres
) -> None:
    doomed = workers(**SLOW_WORKER)
    campaign_id = web.start_campaign(4000)
    wait_until_half_done(web, campaign_id, 4000)

    doomed.stop(signal.SIGKILL)
    sent_when_killed = web.campaign(campaign_id)["sent"]
    rescuer = workers(WORKER_CONCURRENCY=1)
    campaign = web.wait_until_done(campaign_id, timeout=30)

    assert deliveries(postgres, campaign_id) == (4000, 4000)
    assert campaign["sent"] == 4000
    assert f":{rescuer.pid}:" in campaign["result"]["worker"]
    assert events(rescuer, "job requeued: its worker stopped renewing the lease")
    # The rescuer resumed after the last recorded batch instead of starting over.
    assert events(rescuer, "job started")[0]["resume_from"] == sent_when_killed > 0


def test_stopped_worker_hands_its_job_back_to_another_worker(
    web: Web, workers: StartWorker, postgres: Postgres, redis: Redis
) -> None:
    leaving = workers(**SLOW_WORKER, WORKER_STOP_GRACE_MS=0)
    campaign_id = web.start_campaign(4000)
    wait_until_half_done(web, campaign_id, 4000)

    assert leaving.stop(signal.SIGTERM) == 0
    assert events(leaving, "job handed back")
    assert web.campaign(campaign_id)["status"] == "queued"
    assert str(campaign_id) in redis.cli("lrange", "maha:jobs", "0", "-1").split()

    successor = workers(WORKER_CONCURRENCY=1)
    campaign = web.wait_until_done(campaign_id, timeout=30)

    assert deliveries(postgres, campaign_id) == (4000, 4000)
    assert f":{successor.pid}:" in campaign["result"]["worker"]
    assert campaign["attempts"] == 1, "a hand-back must not count as a failed attempt"
    assert not events(successor, "job requeued: its worker stopped renewing the lease")


def test_jobs_left_in_the_cache_instance_move_to_the_queue_instance_and_run_once(
    web: Web,
    workers: StartWorker,
    postgres: Postgres,
    redis: Redis,
    start_redis: Callable[[], Redis],
) -> None:
    """A release before the queue's own instance kept jobs in the cache instance (REDIS_URL),
    and app servers still on it push there during a rolling release: a worker of this release
    moves them to its queue (QUEUE_URL) and runs each once, a held job whose worker died too."""
    queue = start_redis()
    waiting = web.start_campaign(300)  # the web server here still pushes to REDIS_URL
    orphan = web.start_campaign(300)
    # A worker of the old release took `orphan` (the newest: LPUSH, left), then died.
    taken = redis.cli("lmove", "maha:jobs", "maha:jobs:processing", "left", "left")
    assert taken == str(orphan)

    worker = workers(QUEUE_URL=queue.url, WORKER_CONCURRENCY=1)
    for campaign_id in (waiting, orphan):
        assert web.wait_until_done(campaign_id, timeout=30)["sent"] == 300
        assert deliveries(postgres, campaign_id) == (300, 300)
    moved = {event["campaign"] for event in events(worker, "job moved to the queue instance")}
    assert moved == {waiting, orphan}
    assert [len(events(worker, "job started")), len(events(worker, "job done"))] == [2, 2]
    for key in ("maha:jobs", "maha:jobs:processing"):
        assert redis.cli("llen", key) == "0", key
        assert queue.cli("llen", key) == "0", key


def test_stopped_worker_finishes_a_short_job_in_hand(
    web: Web, workers: StartWorker, postgres: Postgres
) -> None:
    worker = workers(**SLOW_WORKER, WORKER_STOP_GRACE_MS=10_000)
    campaign_id = web.start_campaign(2000)
    wait_until_half_done(web, campaign_id, 2000)

    assert worker.stop(signal.SIGTERM) == 0

    campaign = web.campaign(campaign_id)
    assert campaign["status"] == "done"
    assert f":{worker.pid}:" in campaign["result"]["worker"]
    assert deliveries(postgres, campaign_id) == (2000, 2000)


# -- migrations ------------------------------------------------------------------------------


def migration_summary(output: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    summaries = [line for line in lines if line["msg"] == "migrations complete"]
    assert len(summaries) == 1, output
    return summaries[0]


def test_migrations_run_twice_apply_nothing_the_second_time(
    migrated: App, postgres: Postgres
) -> None:
    # The session fixture ran them once already.
    done = migrated.node("migrate")

    assert done.returncode == 0, done.stderr
    assert migration_summary(done.stdout)["applied"] == 0
    assert postgres.scalar("select count(*) from schema_migrations") == len(MIGRATIONS)


def test_hosts_migrating_at_once_apply_each_migration_once(
    migrated: App, postgres: Postgres
) -> None:
    postgres.sql(f"create database maha_concurrent owner {postgres.user}", "postgres")
    env = migrated.env(DATABASE_URL=postgres.url("maha_concurrent"))

    hosts = [
        subprocess.Popen(
            ["node", "src/migrate.js"], cwd=APP_DIR, env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [host.communicate(timeout=60)[0] for host in hosts]

    assert [host.returncode for host in hosts] == [0, 0]
    applied = sorted(migration_summary(output)["applied"] for output in outputs)
    assert applied == [0, len(MIGRATIONS)]
    count = postgres.sql("select count(*) from schema_migrations", "maha_concurrent")
    assert int(count) == len(MIGRATIONS)


# -- logs (last: reads what every earlier test made the app log) ------------------------------


def test_app_logs_never_show_passwords(
    processes: Processes, postgres: Postgres, redis: Redis
) -> None:
    app_logs = [proc for proc in processes.started if proc.name in {"web", "worker"}]
    assert app_logs, "no app process ran before this test"

    for proc in app_logs:
        text = proc.log_text()
        assert proc.log_events(), f"{proc.log} has no JSON log lines"
        assert postgres.password not in text, proc.log
        assert redis.password not in text, proc.log
