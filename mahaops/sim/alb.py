"""The ALB stand-in: each load balancer's listeners on 127.0.0.1, health checks as the
target group says, and ``describe_target_health`` answered from those checks.

Runs in the daemon beside moto and reads moto's ELBv2 models directly (same process):
for every listener that forwards to a target group, a TCP proxy on a free port of
127.0.0.1 sends each new connection to a healthy target (round robin) at its private
address; every ``HealthCheckIntervalSeconds`` each registered target is asked
``HealthCheckPath`` on its port: ``HealthyThresholdCount`` answers of 200-399 make it
healthy, ``UnhealthyThresholdCount`` failures unhealthy. A deregistered target is
``draining`` (no new connections) for the group's ``deregistration_delay``.
An HTTPS listener ends TLS with its ACM certificate (moto's, with its key: a requested
one is signed by moto's own CA, an imported one is the operator's) and passes requests
on in the clear, as the ALB does to an HTTP target group. Like the ALB, it adds
``X-Forwarded-For`` (the client's address after any the request brought),
``X-Forwarded-Proto`` and ``X-Forwarded-Port`` (the listener's) to every request of a
connection, kept alive or not; a WebSocket upgrade is passed on whole after its head.
Where each listener is: ``$MAHA_HOME/sim-server/listeners.json``
(``{"<lb dns name>:<listener port>": <port on 127.0.0.1>}``).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import os
import select
import socket
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LISTENERS_FILE = "listeners.json"


@dataclass
class Health:
    state: str = "initial"
    reason: str | None = "Elb.RegistrationInProgress"
    ok: int = 0
    bad: int = 0
    next_check: float = 0.0
    draining_until: float = 0.0
    address: tuple[str, int] | None = None


MAX_HEAD = 64 * 1024  # a request head larger than this is refused (the ALB: 400)


class RequestHeads:
    """The client's side of an HTTP/1.1 connection, fed as it arrives: each request's head
    gets the ``X-Forwarded-*`` headers, bodies (Content-Length or chunked) pass untouched,
    and after an upgrade (WebSocket) everything passes untouched.

    >>> heads = RequestHeads("203.0.113.7", "https", 443)
    >>> heads.feed(b"GET / HTTP/1.1\\r\\nHost: a\\r\\n\\r\\n")  # doctest: +ELLIPSIS
    b'GET / HTTP/1.1\\r\\nHost: a\\r\\nX-Forwarded-For: 203.0.113.7\\r\\n...'
    """

    def __init__(self, client: str, proto: str, port: int) -> None:
        self.client, self.proto, self.port = client, proto, port
        self._buffer = b""
        self._body = 0  # bytes of the current body (or chunk, with its CRLF) still to pass
        self._state = "head"  # head, body, chunk-size, chunk-data, trailer, raw

    def feed(self, data: bytes) -> bytes:
        """What to send upstream for ``data``; raises ValueError on a malformed request."""
        self._buffer += data
        out: list[bytes] = []
        while self._buffer:
            if self._state == "raw":
                out.append(self._buffer)
                self._buffer = b""
            elif self._state in ("body", "chunk-data"):
                taken = self._buffer[: self._body]
                self._buffer = self._buffer[len(taken) :]
                self._body -= len(taken)
                out.append(taken)
                if self._body == 0:
                    self._state = "head" if self._state == "body" else "chunk-size"
            else:
                line_end = b"\r\n\r\n" if self._state == "head" else b"\r\n"
                end = self._buffer.find(line_end)
                if end < 0:
                    if len(self._buffer) > MAX_HEAD:
                        raise ValueError("request head too large")
                    break
                piece = self._buffer[: end + len(line_end)]
                self._buffer = self._buffer[end + len(line_end) :]
                out.append(self._next(piece))
        return b"".join(out)

    def _next(self, piece: bytes) -> bytes:
        if self._state == "chunk-size":
            size = int(piece.split(b";")[0].strip() or b"x", 16)
            self._state, self._body = ("chunk-data", size + 2) if size else ("trailer", 0)
            return piece
        if self._state == "trailer":  # trailer lines, then the empty line ending the body
            if piece == b"\r\n":
                self._state = "head"
            return piece
        return self._head(piece)

    def _head(self, head: bytes) -> bytes:
        lines = head[:-4].split(b"\r\n")
        if not lines[0].strip():
            raise ValueError("empty request line")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not name.strip():
                raise ValueError(f"malformed header line {line[:60]!r}")
            headers.append((name.strip(), value.strip()))
        named = {n.lower(): v for n, v in headers}
        forwarded_for = named.get(b"x-forwarded-for", b"")
        kept = [
            (n, v)
            for n, v in headers
            if n.lower() not in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port")
        ]
        client = self.client.encode()
        kept += [
            (b"X-Forwarded-For", forwarded_for + b", " + client if forwarded_for else client),
            (b"X-Forwarded-Proto", self.proto.encode()),
            (b"X-Forwarded-Port", str(self.port).encode()),
        ]
        length = int(named.get(b"content-length") or b"0")
        if b"upgrade" in named.get(b"connection", b"").lower():
            self._state = "raw"
        elif b"chunked" in named.get(b"transfer-encoding", b"").lower():
            self._state = "chunk-size"
        elif length:
            self._state, self._body = "body", length
        return b"\r\n".join([lines[0], *(n + b": " + v for n, v in kept)]) + b"\r\n\r\n"


class _Proxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        pick: Callable[[], tuple[str, int] | None],
        address: tuple[str, int] = ("127.0.0.1", 0),
        http: bool = False,
    ) -> None:
        self.pick = pick
        self.http = http  # a listener: requests get X-Forwarded-* (else bytes pass as they are)
        self.listener_port = 0  # the listener's port on the load balancer (X-Forwarded-Port)
        self.tls: ssl.SSLContext | None = None  # an HTTPS listener's, with its certificate
        self.certificate = ""  # the ACM ARN it was made from
        super().__init__(address, _Pipe)


def forward(address: tuple[str, int], target: tuple[str, int]) -> _Proxy:
    """Every connection to ``address`` piped to ``target``, in a thread of its own."""
    proxy = _Proxy(lambda: target, address)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return proxy


def _status(code: int, text: str) -> bytes:
    """What an ALB answers itself: no healthy target (503), one that refused (502)."""
    return f"HTTP/1.1 {code} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()


class _Pipe(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Any = self.server
        if server.certificate and server.tls is None:
            return  # an HTTPS listener without a usable certificate: nothing in the clear
        if server.tls is not None:
            try:
                self.request.settimeout(10)  # a client that never finishes the handshake
                self.request = server.tls.wrap_socket(self.request, server_side=True)
                self.request.settimeout(None)
            except (OSError, ssl.SSLError):
                return
        target = server.pick()
        if target is None:
            self.request.sendall(_status(503, "Service Unavailable"))
            return
        try:
            upstream = socket.create_connection(target, timeout=5)
        except OSError:
            self.request.sendall(_status(502, "Bad Gateway"))
            return
        heads = None
        if server.http:
            port = int(server.listener_port or server.server_address[1])
            heads = RequestHeads(self.client_address[0], "https" if server.tls else "http", port)
        with upstream:
            sockets = [self.request, upstream]
            while True:
                readable, _w, _x = select.select(sockets, [], [], 3600)
                if not readable:
                    return
                for sock in readable:
                    try:
                        data = sock.recv(65536)
                        if not data:
                            return
                        if sock is upstream:
                            self.request.sendall(data)
                            continue
                        upstream.sendall(heads.feed(data) if heads is not None else data)
                    except ValueError:
                        self.request.sendall(_status(400, "Bad Request"))
                        return
                    except (OSError, ssl.SSLError):
                        return


class LoadBalancers:
    """Every load balancer of the server's regions, kept in step with moto's models."""

    def __init__(self, regions: list[str], state_dir: Path, log: Callable[[str], None]) -> None:
        self.regions = regions
        self.state_dir = state_dir
        self.log = log
        self.health: dict[tuple[str, str], Health] = {}  # (target group arn, target id)
        self.proxies: dict[str, _Proxy] = {}  # "<dns>:<port>" -> proxy
        self._turn = itertools.count()
        self._lock = threading.Lock()

    # -- moto's side -------------------------------------------------------------------------

    def _backends(self) -> list[tuple[Any, Any]]:
        from moto.core import DEFAULT_ACCOUNT_ID
        from moto.ec2.models import ec2_backends
        from moto.elbv2.models import elbv2_backends

        return [
            (elbv2_backends[DEFAULT_ACCOUNT_ID][r], ec2_backends[DEFAULT_ACCOUNT_ID][r])
            for r in self.regions
        ]

    def install(self) -> None:
        """Answer ``describe_target_health`` from the checks (moto says healthy always)."""
        from moto.elbv2.models import FakeHealthStatus, FakeTargetGroup

        original = FakeTargetGroup.health_for
        stand_in = self

        def health_for(tg: Any, target: dict[str, Any], ec2_backend: Any) -> Any:
            with stand_in._lock:
                health = stand_in.health.get((tg.arn, target["Id"]))
            if health is None and target["Id"] in tg.targets:
                health = Health()  # registered, not checked yet: never moto's "healthy"
            if health is None:
                return original(tg, target, ec2_backend)
            port = target.get("Port", tg.port)
            return FakeHealthStatus(
                target["Id"], port, tg.health_check_port, health.state, health.reason
            )

        FakeTargetGroup.health_for = health_for  # type: ignore[method-assign,assignment]

    # -- one pass ----------------------------------------------------------------------------

    def once(self) -> None:
        now = time.monotonic()
        wanted: dict[str, str] = {}  # listener key -> target group arn
        certificates: dict[str, str] = {}  # HTTPS listener key -> its ACM certificate
        for elbv2, ec2 in self._backends():
            for tg in list(elbv2.target_groups.values()):
                self._follow(tg, ec2, now)
            for lb in list(elbv2.load_balancers.values()):
                for listener in list(lb.listeners.values()):
                    for action in listener.default_actions:
                        arn = action.data.get("TargetGroupArn")
                        if action.type == "forward" and arn:
                            wanted[f"{lb.dns_name}:{listener.port}"] = arn
                    if listener.protocol == "HTTPS" and listener.certificate:
                        certificates[f"{lb.dns_name}:{listener.port}"] = listener.certificate
        self._proxies(wanted, certificates)

    def _terminate_tls(self, key: str, proxy: _Proxy, arn: str) -> None:
        proxy.tls, proxy.certificate = self._context(arn), arn
        self.log(f"load balancer {key}: TLS with {arn}")

    def _context(self, arn: str) -> ssl.SSLContext | None:
        """A server context from an ACM certificate of moto's (certificate and key in a
        0600 file of the server's state directory); None where ACM has no key for it."""
        from moto.acm.models import acm_backends
        from moto.core import DEFAULT_ACCOUNT_ID

        region = arn.split(":")[3]
        try:
            bundle = acm_backends[DEFAULT_ACCOUNT_ID][region].get_certificate(arn)
        except Exception as exc:
            self.log(f"certificate {arn}: {type(exc).__name__}: {exc}")
            return None
        if not bundle.key:
            return None
        pem = bundle.cert.rstrip(b"\n") + b"\n" + bundle.key  # ACM's chain ends in its own root
        directory = self.state_dir / "tls"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{hashlib.sha256(arn.encode()).hexdigest()[:16]}.pem"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # the ALB's default policies' floor
        context.load_cert_chain(path)
        return context

    def _follow(self, tg: Any, ec2: Any, now: float) -> None:
        registered = dict(tg.targets)
        delay = int(tg.attributes.get("deregistration_delay.timeout_seconds", 300))
        with self._lock:
            for (arn, target_id), health in list(self.health.items()):
                if arn != tg.arn or target_id in registered:
                    continue
                if health.state != "draining":
                    health.state, health.reason = "draining", "Target.DeregistrationInProgress"
                    health.draining_until = now + delay
                elif now >= health.draining_until:
                    del self.health[(arn, target_id)]
            for target_id, target in registered.items():
                health = self.health.setdefault((tg.arn, target_id), Health())
                if health.state == "draining":  # registered again
                    self.health[(tg.arn, target_id)] = health = Health()
                instance = ec2.get_instance_by_id(target_id)
                address = getattr(instance, "private_ip", None)
                port = int(target.get("Port") or tg.port)
                health.address = (address, port) if address else None
        for target_id in registered:
            due = self.health.get((tg.arn, target_id))
            if due is not None and now >= due.next_check:
                due.next_check = now + int(tg.health_check_interval_seconds)
                self._check(tg, due)

    def _check(self, tg: Any, health: Health) -> None:
        ok = False
        if health.address is not None:
            port = tg.health_check_port
            port = health.address[1] if port in (None, "traffic-port") else int(port)
            timeout = float(tg.health_check_timeout_seconds)
            try:
                conn = http.client.HTTPConnection(health.address[0], port, timeout=timeout)
                conn.request("GET", tg.health_check_path or "/")
                ok = 200 <= conn.getresponse().status < 400
                conn.close()
            except (OSError, http.client.HTTPException):
                ok = False
        with self._lock:
            if ok:
                health.ok, health.bad = health.ok + 1, 0
                if health.ok >= int(tg.healthy_threshold_count) and health.state != "healthy":
                    health.state, health.reason = "healthy", None
            else:
                health.ok, health.bad = 0, health.bad + 1
                if health.state == "initial" or health.bad >= int(tg.unhealthy_threshold_count):
                    failing = health.state != "initial"
                    health.state = "unhealthy"
                    health.reason = (
                        "Target.FailedHealthChecks" if failing else "Elb.InitialHealthChecking"
                    )

    def _pick(self, arn: str) -> tuple[str, int] | None:
        with self._lock:
            healthy = [
                h.address
                for (tg, _id), h in sorted(self.health.items())
                if tg == arn and h.state == "healthy" and h.address
            ]
        return healthy[next(self._turn) % len(healthy)] if healthy else None

    def _proxies(self, wanted: dict[str, str], certificates: dict[str, str]) -> None:
        for key, proxy in self.proxies.items():  # a listener's certificate changed
            if key in certificates and proxy.certificate != certificates[key]:
                self._terminate_tls(key, proxy, certificates[key])
        changed = False
        for key in set(self.proxies) - set(wanted):
            self.proxies.pop(key).shutdown()
            changed = True
        for key, arn in wanted.items():
            if key in self.proxies:
                continue
            proxy = _Proxy(lambda arn=arn: self._pick(arn), http=True)  # type: ignore[misc]
            proxy.listener_port = int(key.rsplit(":", 1)[1])
            if key in certificates:  # before it is listed: never plain on an HTTPS listener
                self._terminate_tls(key, proxy, certificates[key])
            threading.Thread(target=proxy.serve_forever, daemon=True).start()
            self.proxies[key] = proxy
            self.log(f"load balancer {key}: listening on 127.0.0.1:{proxy.server_address[1]}")
            changed = True
        if changed:
            ports = {key: p.server_address[1] for key, p in self.proxies.items()}
            (self.state_dir / LISTENERS_FILE).write_text(json.dumps(ports, indent=1))

    def run(self, stop: threading.Event, tick: float = 1.0) -> None:
        while not stop.is_set():
            try:
                self.once()
            except Exception as exc:
                self.log(f"load balancers: {type(exc).__name__}: {exc}")
            stop.wait(tick)
        for proxy in self.proxies.values():
            with contextlib.suppress(Exception):
                proxy.shutdown()


def listeners(state_dir: Path) -> dict[str, int]:
    """Where each listener of the stand-in's load balancers answers on 127.0.0.1."""
    path = state_dir / LISTENERS_FILE
    return dict(json.loads(path.read_text())) if path.exists() else {}
