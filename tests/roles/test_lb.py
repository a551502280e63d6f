"""The lb role (HAProxy) on a real host: converge, idempotence, a dry run with a diff, and
HTTPS/WSS with the environment's CA in front of a stub app server (what the load balancer
tells the app, and WebSocket upgrades, are the LB's: no app role needed)."""

from __future__ import annotations

import datetime as dt
import http.client
import ssl
import time
import urllib.error
import urllib.request

import pytest
from cryptography import x509
from websockets.sync.client import connect

from mahaops import tls
from mahaops.ansible_export import export
from mahaops.local import platform
from mahaops.local.hosts import LocalHost
from mahaops.secrets import store_for
from tests.checks import converge, ports
from tests.checks import lb as checks
from tests.conftest import Testbed, infra

pytestmark = pytest.mark.testbed

ROLES = ["base", "lb"]


# An app server's stand-in on port 80: /health answers 200 and /ws completes a WebSocket
# handshake then sends one message; both report the X-Forwarded-Proto they were sent.
STUB = r"""
import base64, hashlib, http.server
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        proto = self.headers.get("X-Forwarded-Proto", "-")
        if self.path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            key = self.headers["Sec-WebSocket-Key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
            self.send_response(101)
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            accept = base64.b64encode(hashlib.sha1(key.encode()).digest()).decode()
            self.send_header("Sec-WebSocket-Accept", accept)
            self.end_headers()
            text = ("proto=" + proto).encode()
            self.wfile.write(bytes([0x81, len(text)]) + text)
            self.wfile.flush()
            self.rfile.read(2)  # the client's close frame, answered with ours
            self.wfile.write(bytes([0x88, 0]))
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("X-Seen-Proto", proto)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 80), H).serve_forever()
"""


@pytest.fixture(scope="module")
def converged(testbed: Testbed) -> LocalHost:
    host = testbed.host("lb", name="lb-r1")
    stub = testbed.host("app", name="app-stub")
    testbed.exec(stub, f"cat > /usr/local/bin/stub.py <<'EOF'\n{STUB}\nEOF")
    apps = list(_app_servers(testbed))
    if apps:  # their firewalls admit load balancers known when base last ran: this one too
        opened = testbed.deploy(roles=["base"], limit=apps)
        assert opened.ok, opened.output
    # After base: its firewall admits the load balancer to port 80.
    testbed.exec(stub, "systemd-run --unit=stub-app python3 /usr/local/bin/stub.py")
    first = testbed.deploy(roles=ROLES, limit=[host.name])
    assert first.ok, first.output
    return host


def _app_servers(testbed: Testbed) -> dict[str, str]:
    return {h.name: h.private_address for h in testbed.environment.hosts() if h.role == "app"}


def test_fresh_lb_balances_the_inventory_app_servers(testbed: Testbed, converged) -> None:
    checks.check_lb(infra(converged), _app_servers(testbed))


def test_lb_answers_on_its_published_port_without_hanging(converged) -> None:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{converged.ports[80]}/health", timeout=10
        ) as response:
            status = response.status
    except urllib.error.HTTPError as exc:  # no healthy app server reachable from this lb
        status = exc.code
    assert status in (200, 503)
    assert time.monotonic() - started < 5


def test_second_converge_changes_nothing(testbed: Testbed, converged) -> None:
    converge.assert_idempotent(testbed, [converged.name], ROLES)


def test_dry_run_shows_the_config_diff_and_changes_nothing(testbed: Testbed, converged) -> None:
    converge.assert_dry_run(
        testbed,
        converged,
        "/etc/haproxy/haproxy.cfg",
        roles=["lb"],
        overrides={"lb_check_interval_ms": 500},
        changed=[
            "Load balancer | HAProxy: app servers with health checks (checked by haproxy -c)",
            "Load balancer | Reload HAProxy for the new configuration",
        ],
        shows=["inter 1000ms", "inter 500ms"],
    )


def test_a_dry_run_turning_tls_off_shows_the_https_bind_going(testbed: Testbed, converged) -> None:
    converge.assert_dry_run(
        testbed,
        converged,
        "/etc/haproxy/haproxy.cfg",
        roles=["lb"],
        overrides={"lb_tls": False},
        changed=[
            "Load balancer | HAProxy: app servers with health checks (checked by haproxy -c)",
            "Load balancer | Reload HAProxy for the new configuration",
        ],
        shows=["- bind :443 ssl crt /etc/haproxy/tls/server.crt alpn http/1.1"],
    )


def test_every_port_beyond_loopback_speaks_tls_or_ssh_or_is_plain_by_design(
    testbed: Testbed, converged
) -> None:
    ports.assert_tls_or_ssh(testbed, "lb", converged, {22: "ssh", 80: "plain", 443: "tls"})


@pytest.fixture(scope="module")
def trusting(testbed: Testbed, converged: LocalHost) -> ssl.SSLContext:
    """A client that trusts the environment's CA and nothing else (the file `invoke up`
    names), once the stub app server is in service behind the load balancer."""
    ca = platform.ca_file(testbed.env)
    assert "PRIVATE KEY" not in ca.read_text()
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(converged, "/health", context)[0] == 200:
                return context
        except (urllib.error.URLError, OSError):
            pass
        assert time.monotonic() < deadline, "the stub app server never came into service"
        time.sleep(0.5)


def _get(
    lb: LocalHost,
    path: str,
    context: ssl.SSLContext | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str]]:
    url = (
        f"https://localhost:{lb.ports[443]}{path}"
        if context
        else f"http://127.0.0.1:{lb.ports[80]}{path}"
    )
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10, context=context) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}


def test_https_health_reaches_the_app_which_is_told_https(converged, trusting) -> None:
    status, headers = _get(converged, "/health", trusting)
    assert status == 200 and headers["x-seen-proto"] == "https"


def test_plain_http_is_told_http_even_when_the_client_claims_https(converged, trusting) -> None:
    status, headers = _get(converged, "/health", headers={"X-Forwarded-Proto": "https"})
    assert status == 200 and headers["x-seen-proto"] == "http"


def test_a_wss_client_trusting_only_the_environment_ca_gets_through(converged, trusting) -> None:
    for name in ("localhost", "127.0.0.1"):  # both names the published port is reached by
        with connect(
            f"wss://{name}:{converged.ports[443]}/ws", ssl=trusting, open_timeout=10
        ) as ws:
            assert ws.recv(timeout=10) == "proto=https"


def test_a_client_that_does_not_trust_the_ca_is_refused_at_the_handshake(converged) -> None:
    with (
        pytest.raises(ssl.SSLCertVerificationError),
        connect(
            f"wss://localhost:{converged.ports[443]}/ws",
            ssl=ssl.create_default_context(),  # the machine's public authorities only
            open_timeout=10,
        ),
    ):
        pass


@pytest.mark.parametrize("version", ["tls1", "tls1_1"])
def test_tls_below_1_2_is_refused(testbed: Testbed, converged, version: str) -> None:
    # openssl on the lb host itself, its own floor lowered so the old hello is sent: the
    # refusal is the server's (a protocol_version alert), not the client's.
    probe = (
        f"openssl s_client -connect 127.0.0.1:443 -{version} -cipher 'DEFAULT@SECLEVEL=0' "
        "</dev/null 2>&1"
    )
    refused = testbed.exec(converged, f"timeout 10 {probe} || true")
    assert "alert protocol version" in refused, refused
    accepted = testbed.exec(converged, f"timeout 10 {probe.replace(version, 'tls1_2')} || true")
    assert "BEGIN CERTIFICATE" in accepted and "TLSv1.2" in accepted, accepted


def test_the_certificate_is_kept_by_a_second_run_and_the_ca_key_never_leaves_the_store(
    testbed: Testbed, converged
) -> None:
    served = testbed.exec(converged, "cat /etc/haproxy/tls/server.crt")
    second = testbed.deploy(roles=["lb"], limit=[converged.name])
    assert second.ok and not second.changed, second.output
    assert testbed.exec(converged, "cat /etc/haproxy/tls/server.crt") == served
    _, ca_key = tls.ca(store_for("local", testbed.env))
    line = next(x for x in ca_key.splitlines() if not x.startswith("-----"))
    assert line not in second.output
    assert testbed.exec(converged, f"grep -rlF '{line}' /etc || true").strip() == ""


def test_the_ansible_export_reads_the_lb_certificate_from_the_store_never_writes_its_key(
    testbed: Testbed, converged, tmp_path
) -> None:
    out = tmp_path / "project"
    result = export(testbed.env, out, roles=["lb"], limit=[converged.name])
    assert result.ok, result.output
    exported = "\n".join(p.read_text() for p in sorted(out.rglob("*")) if p.is_file())
    cert_name, key_name = tls.stored_names(f"{converged.name}-https")
    assert f"maha_secret_{key_name}" in exported and f"maha_secret_{cert_name}" in exported
    key = store_for("local", testbed.env).get(key_name)
    assert key
    assert not [x for x in key.splitlines() if not x.startswith("-----") and x in exported]


def test_with_lb_http_redirect_plain_http_moves_to_https_but_the_health_path(
    testbed: Testbed, converged
) -> None:
    redirecting = testbed.deploy(
        roles=["lb"], limit=[converged.name], overrides={"lb_http_redirect": True}
    )
    try:
        assert redirecting.ok, redirecting.output
        for path, status in (("/", 301), ("/ws", 301), ("/health", 200)):
            connection = http.client.HTTPConnection("127.0.0.1", converged.ports[80], timeout=10)
            connection.request("GET", path, headers={"Host": "maha.example"})
            response = connection.getresponse()
            assert response.status == status, (path, response.status)
            if status == 301:
                assert response.getheader("Location") == f"https://maha.example{path}"
            connection.close()
    finally:
        back = testbed.deploy(roles=["lb"], limit=[converged.name])
        assert back.ok, back.output


def test_a_certificate_near_expiry_is_renewed_and_served_after_the_reload(
    testbed: Testbed, converged
) -> None:
    store = store_for("local", testbed.env)
    cert_name, key_name = tls.stored_names(f"{converged.name}-https")
    current = store.get(cert_name)
    assert current
    # As if issued 340 days ago: 25 days left, inside tls_cert_renew_days (30).
    ca_cert, ca_key = tls.ca(store)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=340)
    short, short_key = tls.issue(ca_cert, ca_key, tls.names_of(current), days=365, now=old)
    store.put(cert_name, short)
    store.put(key_name, short_key)
    run = testbed.deploy(roles=["lb"], limit=[converged.name])
    assert run.ok, run.output
    assert run.named("Reload HAProxy for the new configuration")[0].status == "changed"
    renewed = store.get(cert_name)
    assert renewed and renewed not in (short, current)
    served = ssl.get_server_certificate(("127.0.0.1", converged.ports[443]))
    assert _serial(served) == _serial(renewed)
    again = testbed.deploy(roles=["lb"], limit=[converged.name])
    assert again.ok and not again.changed, [op.name for op in again.changed]


def _serial(pem: str) -> int:
    return x509.load_pem_x509_certificate(pem.encode()).serial_number


def test_up_re_makes_an_lb_host_made_before_https_was_published(testbed: Testbed) -> None:
    # Docker cannot add a port to a container: `invoke up` re-makes such a host by name.
    old = testbed.environment.create("lb", name="lb-old-1", image=testbed.image, publish=[80])
    assert 443 not in old.ports
    said: list[str] = []
    remade = platform.remake_unpublished(testbed.environment, testbed.image, said.append)
    assert remade == ["lb-old-1"] and "port 443 is not published" in said[0]
    (new,) = [h for h in testbed.environment.hosts() if h.name == "lb-old-1"]
    assert {80, 443} <= set(new.ports) and new.container == old.container
    assert platform.remake_unpublished(testbed.environment, testbed.image) == []
    testbed.environment.remove(["lb-old-1"])
