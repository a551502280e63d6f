"""The sim's load balancer adds X-Forwarded-* to every request as the ALB does, and
passes bodies and upgraded connections untouched (mahaops/sim/alb.py)."""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator

import pytest

from mahaops.sim.alb import RequestHeads, _Proxy


def fed(heads: RequestHeads, data: bytes, step: int) -> bytes:
    """``data`` fed ``step`` bytes at a time, as TCP may deliver it."""
    return b"".join(heads.feed(data[i : i + step]) for i in range(0, len(data), step))


@pytest.mark.parametrize("step", [1, 7, 4096])
def test_each_request_of_a_kept_alive_connection_gets_the_headers_and_bodies_pass(
    step: int,
) -> None:
    first = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nGET / HTTP/"
    chunked = (
        b"PUT /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"4;ext=1\r\nGET \r\n6\r\n/ HTTP\r\n0\r\nX-Trailer: 1\r\n\r\n"
    )
    last = b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n"
    out = fed(RequestHeads("198.51.100.9", "https", 443), first + chunked + last, step)
    added = b"X-Forwarded-For: 198.51.100.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443"
    assert out.count(added) == 3  # bodies that look like requests are not taken for them
    assert b"Content-Length: 11\r\n" + added + b"\r\n\r\nGET / HTTP/" in out
    assert b"\r\n\r\n4;ext=1\r\nGET \r\n6\r\n/ HTTP\r\n0\r\nX-Trailer: 1\r\n\r\nGET /c" in out


def test_a_client_cannot_pose_as_the_load_balancer() -> None:
    head = (
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\n"
        b"x-forwarded-proto: https\r\nX-Forwarded-Port: 443\r\n\r\n"
    )
    out = RequestHeads("203.0.113.7", "http", 80).feed(head)
    # The address it claims stays in front (as the ALB keeps it); the last one is the
    # client's own, and the protocol and port are the listener's.
    assert b"X-Forwarded-For: 10.0.0.1, 203.0.113.7\r\n" in out
    assert out.lower().count(b"x-forwarded-proto") == 1 and b"X-Forwarded-Proto: http\r\n" in out
    assert b"X-Forwarded-Port: 80\r\n" in out and b"443" not in out


def test_after_a_websocket_upgrade_frames_pass_untouched() -> None:
    heads = RequestHeads("203.0.113.7", "https", 443)
    head = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    frames = b"\x81\x85\x00\x00\x00\x00hello\r\n\r\nGET / HTTP/1.1\r\n\r\n"
    out = heads.feed(head) + heads.feed(frames)
    assert out.endswith(b"\r\n\r\n" + frames)
    assert out.count(b"X-Forwarded-For") == 1


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", b"\r\n\r\n", b"GET / HTTP/1.1\r\n" + b"a" * 70000],
)
def test_a_malformed_request_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        RequestHeads("203.0.113.7", "http", 80).feed(data)


class _Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        seen = "|".join(self.headers.get(h, "") for h in ("X-Forwarded-For", "X-Forwarded-Proto",
                                                         "X-Forwarded-Port"))  # fmt: skip
        answer = seen.encode() + b"|" + body
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield ("127.0.0.1", server.server_address[1])
    server.shutdown()


def test_a_listener_forwards_two_requests_on_one_connection_each_with_the_headers(
    echo: tuple[str, int],
) -> None:
    proxy = _Proxy(lambda: echo, http=True)
    proxy.listener_port = 80
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proxy.server_address[1], timeout=10)
        answers = []
        for body in (b"first", b"second"):
            conn.request("POST", "/", body=body)
            answers.append(conn.getresponse().read())
        assert answers == [b"127.0.0.1|http|80|first", b"127.0.0.1|http|80|second"]
        conn.close()
    finally:
        proxy.shutdown()
        proxy.server_close()
