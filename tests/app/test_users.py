"""Users and sessions (issue 15): sign-up and sign-in with bcrypt hashes, sessions in Redis,
CSRF refusals, the sign-in rate limit, campaigns and /ws progress seen by their owner only.

Each test signs up its own users and, where the rate limit could count its failures, claims
its own client address (X-Real-IP, believed from loopback as from nginx).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.users import User, call, session_cookie

from .harness import App, Postgres, Proc, Redis, Web

MAX_FAILURES = 5  # SIGNIN_MAX_FAILURES's default
MAX_FAILURES_PER_IP = 20  # SIGNIN_MAX_FAILURES_PER_IP's default


def address() -> str:
    """A client address of the call's own (documentation range): no other failures count."""
    return f"2001:db8::{secrets.token_hex(2)}:{secrets.token_hex(2)}"


def sign_in(web: Web, email: str, password: str, ip: str) -> tuple[int, dict[str, str], bytes]:
    payload = {"email": email, "password": password}
    return call("POST", web.url + "/api/signin", payload, headers={"X-Real-IP": ip})


def campaigns_count(postgres: Postgres) -> int:
    return postgres.scalar("select count(*) from campaigns")


# -- sign-up, sign-in, sign-out ---------------------------------------------------------------


def test_sign_up_then_sign_in_gives_a_session_that_me_recognises(web: Web) -> None:
    user = User.sign_up(web.url)
    status, _, body = user.request("GET", "/api/me")
    assert status == 200
    me = json.loads(body)
    assert me["user"]["email"] == user.email and me["csrf"] == user.csrf

    status, headers, raw = sign_in(web, user.email.upper(), user.password, address())

    assert status == 200
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    signed_in = json.loads(raw)
    assert signed_in["user"]["email"] == user.email and signed_in["csrf"] != user.csrf
    again = call("GET", web.url + "/api/me", headers={"Cookie": session_cookie(headers)})
    assert again[0] == 200 and json.loads(again[2])["user"] == me["user"]


def test_the_session_cookie_is_secure_when_the_client_came_over_https(web: Web) -> None:
    payload = {"email": f"tls-{secrets.token_hex(4)}@example.test", "password": "long enough"}
    status, headers, _ = call(
        "POST", web.url + "/api/signup", payload, headers={"X-Forwarded-Proto": "https"}
    )
    assert status == 201
    assert "; Secure" in headers["set-cookie"]


def test_an_address_signs_up_once_whatever_its_case(web: Web) -> None:
    user = User.sign_up(web.url)
    status, _, _ = call(
        "POST", web.url + "/api/signup", {"email": user.email.upper(), "password": "another one"}
    )
    assert status == 409


def test_a_wrong_password_is_refused_with_401_and_no_session(web: Web) -> None:
    user = User.sign_up(web.url)
    status, headers, _ = sign_in(web, user.email, user.password + "x", address())
    assert status == 401
    assert "set-cookie" not in headers
    assert sign_in(web, "nobody-" + user.email, user.password, address())[0] == 401


def test_the_password_is_stored_as_a_bcrypt_hash(web: Web, postgres: Postgres) -> None:
    user = User.sign_up(web.url)
    stored = postgres.sql(f"select password_hash from users where email = '{user.email}'")
    assert stored.startswith("$2b$10$") and len(stored) == 60
    assert user.password not in stored


def test_signing_out_ends_the_session(web: Web) -> None:
    user = User.sign_up(web.url)
    status, headers, _ = user.request("POST", "/api/signout")
    assert status == 204
    assert "Max-Age=0" in headers["set-cookie"]
    assert user.request("GET", "/api/me")[0] == 401  # the old cookie is worth nothing now


# -- the sign-in rate limit -------------------------------------------------------------------


def test_sign_in_is_refused_with_429_after_too_many_failures_on_one_account(web: Web) -> None:
    user = User.sign_up(web.url)
    ip = address()
    failures = [sign_in(web, user.email, "wrong password", ip)[0] for _ in range(MAX_FAILURES)]
    assert failures == [401] * MAX_FAILURES

    # Even the right password, and from another address: the account is locked for a while.
    status, headers, _ = sign_in(web, user.email, user.password, address())

    assert status == 429
    assert 0 < int(headers["retry-after"]) <= 900
    # Other accounts are not.
    other = User.sign_up(web.url)
    assert sign_in(web, other.email, other.password, ip)[0] == 200


def test_guesses_sent_all_at_once_get_no_more_tries_than_the_limit(web: Web) -> None:
    user = User.sign_up(web.url)
    with ThreadPoolExecutor(12) as pool:
        statuses = list(
            pool.map(lambda _: sign_in(web, user.email, "wrong password", address())[0], range(12))
        )
    assert sorted(statuses) == [401] * MAX_FAILURES + [429] * (12 - MAX_FAILURES)


def test_sign_in_is_refused_with_429_after_too_many_failures_from_one_address(web: Web) -> None:
    ip = address()
    for n in range(MAX_FAILURES_PER_IP):
        email = f"guess-{n}-{secrets.token_hex(3)}@example.test"
        assert sign_in(web, email, "wrong password", ip)[0] == 401
    user = User.sign_up(web.url)

    assert sign_in(web, user.email, user.password, ip)[0] == 429
    assert sign_in(web, user.email, user.password, address())[0] == 200


# -- CSRF -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-CSRF-Token": "not-the-token"},
        {"X-CSRF-Token": "OTHER"},  # another user's, valid for their session only
        {"X-CSRF-Token": "OWN", "Origin": "http://evil.example"},
    ],
    ids=["no-token", "wrong-token", "another-users-token", "other-origin"],
)
def test_a_state_changing_request_without_its_csrf_token_is_refused_with_403(
    web: Web, postgres: Postgres, headers: dict[str, str]
) -> None:
    user, other = User.sign_up(web.url), User.sign_up(web.url)
    tokens = {"OWN": user.csrf, "OTHER": other.csrf}
    sent = {k: tokens.get(v, v) for k, v in headers.items()}
    before = campaigns_count(postgres)

    status, _, body = call(
        "POST", web.url + "/api/campaigns", {"name": "forged", "recipients": 3},
        headers={"Cookie": user.cookie, **sent},
    )  # fmt: skip

    assert status == 403, body
    assert campaigns_count(postgres) == before
    # Signing out is a change too.
    status, _, _ = call("POST", web.url + "/api/signout", headers={"Cookie": user.cookie, **sent})
    assert status == 403
    assert user.request("GET", "/api/me")[0] == 200


def test_a_request_from_the_same_origin_with_its_token_is_accepted(web: Web) -> None:
    user = User.sign_up(web.url)
    status, _, body = call(
        "POST", web.url + "/api/campaigns", {"name": "same site", "recipients": 3},
        headers={**user.headers("POST"), "Origin": web.url},
    )  # fmt: skip
    assert status == 202, body


def test_anonymous_campaign_requests_are_refused_with_401(web: Web, postgres: Postgres) -> None:
    campaign = User.sign_up(web.url).start_campaign(3)
    before = campaigns_count(postgres)

    assert call("POST", web.url + "/api/campaigns", {"name": "anon", "recipients": 3})[0] == 401
    assert call("GET", web.url + f"/api/campaigns/{campaign}")[0] == 401
    assert campaigns_count(postgres) == before


# -- campaigns belong to their user -----------------------------------------------------------


def test_another_users_campaign_is_not_found(web: Web, postgres: Postgres) -> None:
    owner, stranger = User.sign_up(web.url), User.sign_up(web.url)
    campaign = owner.start_campaign(3)

    assert owner.request("GET", f"/api/campaigns/{campaign}")[0] == 200
    assert stranger.request("GET", f"/api/campaigns/{campaign}")[0] == 404
    owner_id = json.loads(owner.request("GET", "/api/me")[2])["user"]["id"]
    assert postgres.scalar(f"select user_id from campaigns where id = {campaign}") == owner_id


# -- /ws --------------------------------------------------------------------------------------


def refused_upgrade(url: str, headers: dict[str, str] | None = None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        connect(url, proxy=None, open_timeout=5, additional_headers=headers).close()
    return refused.value.response.status_code


def test_an_anonymous_websocket_upgrade_is_refused_with_401(web: Web) -> None:
    assert refused_upgrade(f"{web.ws_url}/ws") == 401
    assert refused_upgrade(f"{web.ws_url}/ws", {"Cookie": "maha_session=" + "A" * 43}) == 401


def test_a_websocket_for_another_users_campaign_is_refused(web: Web, postgres: Postgres) -> None:
    owner, stranger = User.sign_up(web.url), User.sign_up(web.url)
    # Asked for before it exists: refused, and that must not stick to the id.
    upcoming = postgres.scalar(
        "select case when is_called then last_value + 1 else last_value end from campaigns_id_seq"
    )
    assert refused_upgrade(f"{web.ws_url}/ws?campaign={upcoming}", stranger.headers()) == 404
    campaign = owner.start_campaign(3)
    assert campaign == upcoming
    url = f"{web.ws_url}/ws?campaign={campaign}"

    assert refused_upgrade(url, stranger.headers()) == 404
    with connect(url, proxy=None, open_timeout=5, additional_headers=owner.headers()) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "hello"


def progress(ws: ClientConnection, timeout: float) -> list[dict[str, Any]]:
    """Every progress message until none arrives for ``timeout`` seconds."""
    messages: list[dict[str, Any]] = []
    while True:
        try:
            message = json.loads(ws.recv(timeout=timeout))
        except TimeoutError:
            return messages
        if message["type"] == "progress":
            messages.append(message)


def test_each_socket_receives_only_its_own_users_campaigns(
    web: Web, workers: Callable[..., Proc]
) -> None:
    alice, bob = User.sign_up(web.url), User.sign_up(web.url)
    workers(WORKER_BATCH_SIZE=200, WORKER_BATCH_DELAY_MS=20)
    url = f"{web.ws_url}/ws"
    with (
        connect(url, proxy=None, open_timeout=5, additional_headers=alice.headers()) as alice_ws,
        connect(url, proxy=None, open_timeout=5, additional_headers=bob.headers()) as bob_ws,
    ):
        assert json.loads(alice_ws.recv(timeout=5))["type"] == "hello"
        assert json.loads(bob_ws.recv(timeout=5))["type"] == "hello"

        hers = alice.start_campaign(2000, "alice's")
        deadline = time.monotonic() + 30
        alice_seen: list[dict[str, Any]] = []
        while not alice_seen or alice_seen[-1]["status"] != "done":
            assert time.monotonic() < deadline, f"alice's campaign never done: {alice_seen[-3:]}"
            message = json.loads(alice_ws.recv(timeout=deadline - time.monotonic()))
            if message["type"] == "progress" and message["campaign"] == hers:
                alice_seen.append(message)
        # Bob's socket works: his own campaign reaches it, and it is the first thing that does.
        his = bob.start_campaign(400, "bob's")
        bob_seen = progress(bob_ws, timeout=3)

    assert any(m["status"] == "running" for m in alice_seen)
    assert bob_seen and {m["campaign"] for m in bob_seen} == {his}, bob_seen[:3]
    assert bob_seen[-1]["status"] == "done"


def closed_with(ws: ClientConnection, timeout: float) -> int | None:
    """The close code the server ends ``ws`` with within ``timeout`` seconds (None: still open)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ws.recv(timeout=deadline - time.monotonic())
        except TimeoutError:
            return None
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None
    return None


def test_signing_out_closes_the_users_sockets_on_every_web_server(web: Web, migrated: App) -> None:
    other = migrated.start_web("app-test-recheck", SESSION_RECHECK_MS=300)
    try:
        user = User.sign_up(other.url)
        url = f"{other.ws_url}/ws"
        with connect(url, proxy=None, open_timeout=5, additional_headers=user.headers()) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            assert user.request("POST", "/api/signout")[0] == 204  # on the socket's own server
            assert closed_with(ws, timeout=2) == 4401

        user = User.sign_up(other.url)
        stays = User.sign_up(other.url)
        with (
            connect(url, proxy=None, open_timeout=5, additional_headers=user.headers()) as ws,
            connect(url, proxy=None, open_timeout=5, additional_headers=stays.headers()) as kept,
        ):
            assert json.loads(ws.recv(timeout=5))["type"] == "hello"
            assert json.loads(kept.recv(timeout=5))["type"] == "hello"
            # Signed out through another web server: this one finds out at its recheck.
            status, _, _ = call(
                "POST", web.url + "/api/signout", headers=user.headers("POST"), timeout=5
            )
            assert status == 204
            assert closed_with(ws, timeout=3) == 4401
            assert closed_with(kept, timeout=1) is None  # another user's session goes on
    finally:
        other.proc.stop()


def test_a_session_in_use_is_renewed_and_ends_at_its_maximum_age(web: Web, redis: Redis) -> None:
    user = User.sign_up(web.url)
    key = "sess:" + user.cookie.split("=", 1)[1]
    redis.cli("EXPIRE", key, "30")  # almost idle for its whole lifetime

    status, headers, _ = user.request("GET", "/api/me")

    assert status == 200
    assert int(redis.cli("TTL", key)) > 12 * 3600 - 60  # renewed by the use
    cookie = {k.lower(): v for k, v in headers.items()}["set-cookie"]
    assert "Max-Age=43200" in cookie and "HttpOnly" in cookie  # the browser keeps it as long

    session = json.loads(redis.cli("GET", key))
    session["since"] -= 7 * 24 * 3600 * 1000  # signed in a week ago: past the maximum age
    redis.cli("SET", key, json.dumps(session), "KEEPTTL")

    assert user.request("GET", "/api/me")[0] == 401
    assert redis.cli("EXISTS", key) == "0"
