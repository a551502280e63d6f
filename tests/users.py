"""A signed-in user of the Maha app (issue 15): every test and tool that starts campaigns,
reads them or follows them over /ws signs one up here and sends its headers.

    user = User.sign_up("http://127.0.0.1:8080")
    status, headers, body = user.request("POST", "/api/campaigns", {"name": "x", "recipients": 5})
    websockets.sync.client.connect(ws_url, additional_headers=user.headers())

Sign-up starts a session, so no sign-in (rate-limited by nginx and the app) is needed.
"""

from __future__ import annotations

import json
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


class _Stay(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the redirect is the answer


# Proxies never apply: the app is always reached on 127.0.0.1 here.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_staying = urllib.request.build_opener(urllib.request.ProxyHandler({}), _Stay())

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def call(
    method: str,
    url: str,
    payload: Any = None,
    *,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
    follow: bool = True,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request: status, headers (names lower-cased) and body; errors are answers too
    (and a redirect, with ``follow=False``)."""
    if payload is not None:
        body = json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, method=method)
    request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with (_opener if follow else _staying).open(request, timeout=timeout) as answer:
            found = {k.lower(): v for k, v in answer.headers.items()}
            return answer.status, found, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def session_cookie(headers: dict[str, str]) -> str:
    """``maha_session=<id>`` from an answer's Set-Cookie."""
    return headers["set-cookie"].split(";", 1)[0]


@dataclass
class User:
    base_url: str
    email: str
    password: str = field(repr=False)
    cookie: str = field(repr=False)  # maha_session=<id>
    csrf: str = field(repr=False)

    @classmethod
    def sign_up(cls, base_url: str, email: str | None = None, password: str | None = None) -> User:
        base_url = base_url.rstrip("/")
        email = email or f"test-{secrets.token_hex(6)}@example.test"
        password = password or secrets.token_urlsafe(16)
        status, headers, body = call(
            "POST", base_url + "/api/signup", {"email": email, "password": password}
        )
        assert status == 201, f"sign-up of {email} answered {status}: {body[:300]!r}"
        return cls(base_url, email, password, session_cookie(headers), json.loads(body)["csrf"])

    def headers(self, method: str = "GET") -> dict[str, str]:
        """What a signed-in browser sends: the session cookie, and the CSRF token on a change."""
        found = {"Cookie": self.cookie}
        if method.upper() in STATE_CHANGING:
            found["X-CSRF-Token"] = self.csrf
        return found

    def request(
        self, method: str, path: str, payload: Any = None, *, timeout: float = 10
    ) -> tuple[int, dict[str, str], str]:
        status, headers, body = call(
            method, self.base_url + path, payload, headers=self.headers(method), timeout=timeout
        )
        return status, headers, body.decode(errors="replace")

    def start_campaign(self, recipients: int, name: str = "test campaign") -> int:
        status, _, body = self.request(
            "POST", "/api/campaigns", {"name": name, "recipients": recipients}
        )
        assert status == 202, f"campaign answered {status}: {body[:300]}"
        return int(json.loads(body)["id"])
