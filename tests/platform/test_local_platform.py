"""The whole local platform end to end, as `invoke up` makes it: a load balancer over two
app servers, a worker, PostgreSQL and Redis; then releases, a broken one, and a rollback.

The platform is the one tests/platform and tests/lifecycle share (tests/platform/harness.py),
fresh when this module starts: it runs first. Tests run in file order and build on each
other, like an operator's afternoon; the module ends with one release served everywhere.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets as _random
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mahaops import release as releases
from mahaops.local import platform
from tests.platform.harness import Platform, build_variant
from tests.users import User

pytestmark = [pytest.mark.testbed, pytest.mark.slow]


def test_both_app_servers_answer_through_the_load_balancer(plat: Platform) -> None:
    answers = [plat.request("/health") for _ in range(10)]
    assert {status for status, _, _ in answers} == {200}
    assert {headers["x-maha-server"] for _, headers, _ in answers} == {"app-1", "app-2"}
    status, headers, _ = plat.request("/static/app.css")
    assert status == 200 and "max-age" in headers["cache-control"]


def test_https_ends_at_the_load_balancer_and_the_app_knows_it(plat: Platform) -> None:
    # Trusting only the CA file `invoke up` names; nginx sends HSTS on answers to HTTPS
    # only, so the header shows X-Forwarded-Proto reached it as https.
    secure = platform.https_url(plat.environment.hosts())
    assert secure, "the lb host publishes no HTTPS port"
    context = ssl.create_default_context(cafile=str(platform.ca_file(plat.env)))
    servers = set()
    for _ in range(6):
        with urllib.request.urlopen(f"{secure}health", timeout=10, context=context) as response:
            assert response.status == 200
            assert "max-age=" in response.headers["Strict-Transport-Security"]
            servers.add(response.headers["X-Maha-Server"])
    assert servers == {"app-1", "app-2"}
    _, plain_headers, _ = plat.request("/health")
    assert "strict-transport-security" not in plain_headers


def test_nginx_sees_the_client_not_the_load_balancer(plat: Platform) -> None:
    # Our own requests, told apart from the load balancer's health checks (which do come
    # from its address) by a token in the query.
    token = _random.token_hex(6)
    for _ in range(10):
        assert plat.request(f"/health?probe={token}")[0] == 200
    lb_address = plat.host("lb-1").private_address
    for name in ("app-1", "app-2"):
        lines = plat.exec(name, f"grep -F 'probe={token}' /var/log/nginx/access.log || true")
        sources = {line.split(" ")[0] for line in lines.splitlines() if line}
        assert sources and lb_address not in sources, (name, sources)


RECIPIENTS = 10_000


async def _campaign_over_wss(
    plat: Platform, owner: User, other: User, start: Any, restart_at: int
) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]], int]:
    """The owner's and another user's ``wss://`` clients (trusting only the environment's
    CA) while ``start()`` starts the owner's campaign; the worker is restarted once the
    owner has seen ``restart_at`` sent. Returns the campaign, what each client got of it,
    and the count sent when the worker was restarted."""
    import websockets

    secure = platform.https_url(plat.environment.hosts())
    assert secure, "the lb host publishes no HTTPS port"
    url = secure.replace("https://", "wss://").rstrip("/") + "/ws"
    context = ssl.create_default_context(cafile=str(platform.ca_file(plat.env)))
    owned: list[dict[str, Any]] = []
    strangers: list[dict[str, Any]] = []
    restarted = -1
    async with (
        websockets.connect(
            url, ssl=context, open_timeout=10, additional_headers=owner.headers()
        ) as mine,
        websockets.connect(
            url, ssl=context, open_timeout=10, additional_headers=other.headers()
        ) as theirs,
    ):

        async def listen_as_other() -> None:
            async for raw in theirs:
                strangers.append(json.loads(raw))

        other_task = asyncio.create_task(listen_as_other())
        campaign = await asyncio.to_thread(start)
        async with asyncio.timeout(900):  # 10,000 real messages through the mail sink
            async for raw in mine:
                message = json.loads(raw)
                if message.get("campaign") != campaign:
                    continue
                owned.append(message)
                if restarted < 0 and message.get("sent", 0) >= restart_at:
                    restarted = message["sent"]
                    await asyncio.to_thread(plat.exec, "worker-1", "systemctl restart maha-worker")
                if message.get("status") in ("done", "failed"):
                    break
        await asyncio.sleep(2)  # anything the other client would get has arrived by now
        other_task.cancel()
    return campaign, owned, strangers, restarted


def test_a_campaign_of_10000_reaches_each_recipient_once_and_only_its_owner_over_wss(
    plat: Platform,
) -> None:
    owner, other = plat.user, User.sign_up(plat.url)

    def start() -> int:
        status, _, body = plat.request("/api/campaigns", {"name": "e2e", "recipients": RECIPIENTS})
        assert status == 202, body
        return int(json.loads(body)["id"])

    started = time.monotonic()
    campaign, owned, strangers, restarted = asyncio.run(
        _campaign_over_wss(plat, owner, other, start, restart_at=RECIPIENTS // 3)
    )
    wall = time.monotonic() - started

    assert owned and owned[-1]["status"] == "done", owned[-5:]
    assert any(0 < m.get("sent", 0) < RECIPIENTS for m in owned)  # progress, not just the end
    assert 0 < restarted < RECIPIENTS, "the worker was not restarted mid-campaign"
    assert [m for m in strangers if m.get("campaign") == campaign] == []
    assert strangers and strangers[0]["type"] == "hello"  # the other socket was open all along

    status, _, body = plat.request(f"/api/campaigns/{campaign}")
    assert status == 200 and json.loads(body)["status"] == "done"
    stats = json.loads(plat.exec("mail-1", f"maha-mail stats --header X-Maha-Campaign={campaign}"))
    assert stats["messages"] == RECIPIENTS
    assert stats["distinct_recipients"] == RECIPIENTS  # no gap
    assert stats["duplicate_message_ids"] == 0  # nobody twice, across the restart
    journal = plat.exec("worker-1", "journalctl -u maha-worker --no-pager -n 200")
    assert str(campaign) in journal
    print(
        f"\ncampaign of {RECIPIENTS} through the platform, worker restarted at {restarted}: "
        f"{wall:.1f} s wall, {RECIPIENTS / wall:.0f} messages/s"
    )


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _fetch(
    url: str, context: ssl.SSLContext | None = None, **kwargs: Any
) -> tuple[int, dict[str, str], bytes]:
    """One request, redirects not followed, errors as answers; TLS trusting ``context``."""
    handlers: list[Any] = [_NoRedirect(), urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url, **kwargs), timeout=15) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_a_private_upload_goes_straight_to_storage_and_only_its_owner_gets_it_back(
    plat: Platform,
) -> None:
    owner, other = User.sign_up(plat.url), User.sign_up(plat.url)
    trusting = ssl.create_default_context(cafile=str(platform.ca_file(plat.env)))
    body = _random.token_bytes(300_000)
    status, _, text = owner.request(
        "POST", "/api/uploads", {"name": "report.pdf", "type": "application/pdf", "size": len(body)}
    )
    assert status == 201, text
    grant = json.loads(text)
    storage = next(h for h in plat.environment.hosts() if h.role == "storage")
    endpoint = f"https://127.0.0.1:{storage.ports[9000]}"
    assert grant["url"].startswith(endpoint + "/"), grant["url"]  # the app never sees the bytes

    # The browser's PUT, straight to storage with the presigned URL and the headers it names.
    status, _, answer = _fetch(
        grant["url"], trusting, data=body, method="PUT", headers=grant["headers"]
    )
    assert status == 200, answer[:300]
    status, _, text = owner.request("POST", f"/api/uploads/{grant['id']}/complete")
    assert status == 200, text
    mine = json.loads(owner.request("GET", "/api/uploads")[2])
    assert [u["id"] for u in mine["uploads"]] == [grant["id"]]
    assert json.loads(other.request("GET", "/api/uploads")[2])["uploads"] == []

    # The owner is sent to a short-lived signed URL on storage; the bytes come back whole.
    download = f"{plat.url}/api/uploads/{grant['id']}/download"
    status, headers, _ = _fetch(download, headers=owner.headers())
    assert status == 302 and headers["location"].startswith(endpoint + "/")
    status, _, fetched = _fetch(headers["location"], trusting)
    assert status == 200 and fetched == body

    # Nobody else gets it: another user, nobody signed in, the object's own URL unsigned,
    # the signed URL tampered with.
    assert _fetch(download, headers=other.headers())[0] == 403
    assert _fetch(download)[0] == 403
    unsigned = headers["location"].split("?", 1)[0]
    assert _fetch(unsigned, trusting)[0] == 403
    forged = headers["location"].replace("X-Amz-Signature=", "X-Amz-Signature=0")
    assert _fetch(forged, trusting)[0] == 403


def test_a_second_up_changes_nothing(plat: Platform) -> None:
    again = platform.up(plat.env, console=Console(file=io.StringIO()), capture=True, quiet=True)
    assert again.deploy.ok, again.deploy.output[-4000:]
    assert again.created == []
    assert [(op.host, op.name) for op in again.deploy.changed] == []


def _fresh_clone(tmp_path: Path) -> Path:
    """The project as `git clone` gives it: no build/, so no record of any release built."""
    root = Path(__file__).resolve().parents[2]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True)
    assert not (clone / "build").exists()
    return clone


def _invoke_in(clone: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An invoke task run from ``clone``, as an operator there would; a hang fails it."""
    try:
        return subprocess.run(
            [sys.executable, "-m", "invoke", *args],
            cwd=clone, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"`invoke {' '.join(args)}` in a fresh clone hung: {exc}") from None


def test_a_fresh_clone_plans_and_exports_without_building_first(
    plat: Platform, tmp_path: Path
) -> None:
    """App and worker hosts planned side by side once needed the release built by two
    greenlets at once, and the build lock deadlocked the process (issue 11)."""
    clone = _fresh_clone(tmp_path)
    plan = _invoke_in(clone, "deploy", "--env", plat.env, "--dry")
    assert plan.returncode == 0, (plan.stdout + plan.stderr)[-4000:]
    assert "Plan (" in plan.stdout and "worker-1" in plan.stdout, plan.stdout[-4000:]
    out = tmp_path / "ansible"
    export = _invoke_in(clone, "export-ansible", "--env", plat.env, "--out", str(out))
    assert export.returncode == 0, (export.stdout + export.stderr)[-4000:]
    assert (out / "site.yml").is_file() and (out / "roles" / "worker").is_dir()


def _lb_log(plat: Platform) -> str:
    return plat.exec("lb-1", "journalctl -u haproxy --no-pager -o cat")


def test_with_an_app_server_stopped_the_load_balancer_keeps_answering(plat: Platform) -> None:
    downs_before = _lb_log(plat).count("app-2 is DOWN")
    app2 = plat.host("app-2")
    container = plat.environment.client.containers.get(app2.container)
    container.stop(timeout=10)
    try:
        # At once: requests still succeed (a dead server's connection is retried elsewhere).
        assert plat.request("/health", timeout=15)[0] == 200

        deadline = time.monotonic() + 30
        while _lb_log(plat).count("app-2 is DOWN") == downs_before:
            assert time.monotonic() < deadline, "the health check never dropped app-2"
            time.sleep(0.5)

        burst = [plat.request("/health", timeout=5) for _ in range(50)]
        assert [s for s, _, _ in burst] == [200] * 50
        assert {h["x-maha-server"] for _, h, _ in burst} == {"app-1"}
    finally:
        container.start()
        plat.environment.wait_for_ssh(plat.host("app-2"))
    plat.wait_for_both()


def test_a_new_release_switches_every_host(plat: Platform, tmp_path: Path) -> None:
    built = build_variant(tmp_path, "echo '/* v2 */' >> public/app.css")

    _, result = releases.deploy(plat.env, built.tarball, capture=True)

    assert result.ok, result.output[-4000:]
    assert plat.served_releases() == {built.id}
    for name in ("app-1", "app-2", "worker-1"):
        assert plat.exec(name, "readlink /srv/maha/current").strip() == f"releases/{built.id}"


def test_a_release_failing_its_health_check_switches_back_by_itself(
    plat: Platform, tmp_path: Path
) -> None:
    good = plat.served_releases()
    assert len(good) == 1
    broken = build_variant(
        tmp_path,
        "sed -i \"s|return health(req, res);|throw new Error('broken on purpose');|\" src/web.js",
    )

    _, result = releases.deploy(
        plat.env, broken.tarball, capture=True, overrides={"app_health_retries": 5}
    )

    assert not result.ok
    assert f"release {broken.id} failed its health check" in result.output
    assert plat.served_releases() == good
    (good_id,) = good
    for name in ("app-1", "app-2", "worker-1"):  # the workers never moved
        assert plat.exec(name, "readlink /srv/maha/current").strip() == f"releases/{good_id}"


def test_rollback_goes_back_to_the_release_named(plat: Platform) -> None:
    before = plat.served_releases()
    assert len(before) == 1

    # Without --to the target is the release current before the last release began: here
    # the failed one above, which every host is back from (tests/platform/test_release_faults.py).
    assert plat.first.release
    _, result = releases.rollback(plat.env, to=plat.first.release, capture=True)

    assert result.ok, result.output[-4000:]
    after = plat.served_releases()
    assert after == {plat.first.release}
    assert after != before
    assert (
        plat.exec("worker-1", "readlink /srv/maha/current").strip()
        == f"releases/{plat.first.release}"
    )
