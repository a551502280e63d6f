"""The log role and log shipping on real hosts (log_backend = "rsyslog"), and the Graylog plan.

Graylog's, MongoDB's and OpenSearch's packages are fetched from their vendors'
repositories: the Graylog install runs only where those answer, and says so when skipped.
"""

from __future__ import annotations

import json
import os
import secrets as _random
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT, tls
from mahaops.local.hosts import LocalHost
from mahaops.runner import DeployResult
from mahaops.secrets import LocalSecretStore
from tests.checks import converge, ports
from tests.checks import log as checks
from tests.conftest import Testbed

pytestmark = pytest.mark.testbed

RSYSLOG = {"log_backend": "rsyslog"}
GRAYLOG = {"log_backend": "graylog"}

# Operations pyinfra marks non-idempotent that these roles may use, and why that is safe.
JUSTIFIED_NON_IDEMPOTENT = {
    "server.shell": "only guarded by _if on a file changing (sysctl --system, rsyslog HUP)",
}


class Platform:
    def __init__(self, log: LocalHost, app: LocalHost, first: DeployResult) -> None:
        self.log, self.app, self.first = log, app, first

    @property
    def names(self) -> list[str]:
        return [self.log.name, self.app.name]


@pytest.fixture(scope="module")
def platform(testbed: Testbed) -> Platform:
    log, app = testbed.host("log"), testbed.host("app")
    first = testbed.deploy(roles=["base", "log"], limit=[log.name, app.name], overrides=RSYSLOG)
    assert first.ok, first.output
    return Platform(log, app, first)


def _mark() -> str:
    return f"maha-test-{_random.token_hex(4)}"


@pytest.mark.parametrize("service", ["maha-web", "maha-worker", "nginx-access"])
def test_a_line_logged_on_an_app_server_arrives_tagged_with_host_and_role(
    testbed: Testbed, platform: Platform, service: str
) -> None:
    text = _mark()
    checks.log_as(testbed, platform.app, service, text)

    line = checks.arrived_line(testbed, platform.log, platform.app.name, service, text)

    assert line is not None, f"{service} line never reached {platform.log.name}"
    assert checks.tags(line) == {
        "host": platform.app.name,
        "role": "app",
        "service": service,
        "release": "-",
    }


def test_lines_carry_the_release_the_current_link_points_to(
    testbed: Testbed, platform: Platform
) -> None:
    testbed.exec(
        platform.app,
        "install -d /srv/maha/releases/r20990101-abc && "
        "ln -sfn /srv/maha/releases/r20990101-abc /srv/maha/current.new && "
        "mv -T /srv/maha/current.new /srv/maha/current",
    )

    def tagged() -> bool:
        text = _mark()  # a new line each time: the first may predate the switch
        checks.log_as(testbed, platform.app, "maha-web", text)
        line = checks.arrived_line(
            testbed, platform.log, platform.app.name, "maha-web", text, timeout=2
        )
        return line is not None and checks.tags(line)["release"] == "r20990101-abc"

    try:
        assert checks.wait_until(tagged, timeout=30, interval=0.2)
    finally:
        testbed.exec(platform.app, "rm -rf /srv/maha")


def test_lines_logged_while_the_receiver_is_down_all_arrive_when_it_returns(
    testbed: Testbed, platform: Platform
) -> None:
    prefix = _mark()
    checks.stop_receiver(testbed, platform.log)
    try:
        testbed.exec(
            platform.app,
            f"for i in $(seq 1 1000); do logger -t maha-web '{prefix} '$i; done",
        )
        assert not checks.count_numbered(
            testbed, platform.log, platform.app.name, "maha-web", prefix
        ), "the receiver was stopped, yet lines arrived"
    finally:
        checks.start_receiver(testbed, platform.log)

    def all_arrived() -> bool:
        got = checks.count_numbered(testbed, platform.log, platform.app.name, "maha-web", prefix)
        return got == set(range(1, 1001))

    # The sender retries every 10 s (action.resumeInterval): allow a few rounds.
    assert checks.wait_until(all_arrived, timeout=60, interval=1), sorted(
        set(range(1, 1001))
        - checks.count_numbered(testbed, platform.log, platform.app.name, "maha-web", prefix)
    )[:20]


# -- TLS: shippers and the receiver (log_tls, the default) -----------------------------------

OTHER_CA_DIR = "/tmp/maha-other-ca"  # a certificate from a CA of no environment


def _rfc5424(service: str, host_name: str, text: str) -> str:
    """A line as a shipper frames it (octet-counted RFC 5424 with the maha tags)."""
    sd = f'[maha@32473 host="{host_name}" role="app" service="{service}" release="-"]'
    msg = f"<14>1 2026-01-01T00:00:00Z {host_name} {service} - - {sd} {text}"
    return f"{len(msg.encode())} {msg}"


def _send_tls(testbed: Testbed, sender: LocalHost, log: LocalHost, line: str, cert: str) -> str:
    """Send ``line`` from ``sender`` over TLS with ``cert`` (a directory holding server.crt
    and server.key), trusting the platform's CA; the client's own output."""
    return testbed.exec(
        sender,
        f"printf '%s' {shlex.quote(line)} | timeout 10 openssl s_client -quiet "
        f"-connect {log.private_address}:1514 -CAfile /etc/maha/tls/ca.crt "
        f"-verify_hostname {log.name} -verify_return_error "
        f"-cert {cert}/server.crt -key {cert}/server.key 2>&1; true",
    )


def test_the_receiver_speaks_tls_only_and_shippers_verify_it(
    testbed: Testbed, platform: Platform
) -> None:
    forward = testbed.exec(platform.app, "cat /etc/rsyslog.d/90-maha-forward.conf")
    assert 'StreamDriverMode="1"' in forward and 'StreamDriverAuthMode="x509/name"' in forward
    assert f'StreamDriverPermittedPeers="{platform.log.name}"' in forward
    # The server's certificate is from the platform's CA and names the log server: the same
    # check the shipper makes (openssl here, so a failure says why).
    out = testbed.exec(
        platform.app,
        f"openssl s_client -connect {platform.log.private_address}:1514 "
        f"-CAfile /etc/maha/tls/ca.crt -verify_hostname {platform.log.name} "
        "-verify_return_error </dev/null 2>&1; true",
    )
    assert "Verify return code: 0 (ok)" in out, out


def test_a_shipper_sends_nothing_to_a_server_whose_certificate_names_another_host(
    testbed: Testbed, platform: Platform
) -> None:
    # The log server's certificate is valid (the platform's CA) but, as the shipper is told
    # here, not the server's it expects: rsyslog must hold the line, not send it.
    conf = "/etc/rsyslog.d/90-maha-forward.conf"
    testbed.exec(
        platform.app,
        f"cp -p {conf} /root/forward.conf && sed -i "
        '\'s/StreamDriverPermittedPeers="[^"]*"/StreamDriverPermittedPeers="not-the-log-server"/\' '
        f"{conf} && grep -q not-the-log-server {conf} && systemctl restart rsyslog",
    )
    text = _mark()
    try:
        checks.log_as(testbed, platform.app, "maha-web", text)
        arrived = checks.arrived_line(
            testbed, platform.log, platform.app.name, "maha-web", text, timeout=15
        )
        assert arrived is None, "sent to a server whose certificate names another host"
        said = testbed.exec(platform.app, "cat /var/log/syslog 2>/dev/null; true")
        assert f"not permitted to talk to it. Names: DNSname: {platform.log.name}" in said
    finally:
        testbed.exec(platform.app, f"mv /root/forward.conf {conf} && systemctl restart rsyslog")
    # Held in the queue, not lost: it arrives once the shipper expects the right name again.
    assert checks.arrived_line(
        testbed, platform.log, platform.app.name, "maha-web", text, timeout=60
    )


def test_a_plain_tcp_sender_is_refused(testbed: Testbed, platform: Platform) -> None:
    plain, control = _mark(), _mark()
    line = _rfc5424("plain-probe", platform.app.name, plain)
    testbed.exec(
        platform.app,
        f"printf '%s' {shlex.quote(line)} | timeout 5 bash -c "
        f"'cat > /dev/tcp/{platform.log.private_address}/1514'; true",
    )
    # A line sent over TLS with the host's own certificate after it does arrive: the
    # receiver was listening, and the plain one was dropped, not delayed.
    good = _rfc5424("plain-probe", platform.app.name, control)
    _send_tls(testbed, platform.app, platform.log, good, "/etc/maha/tls/rsyslog")
    arrived = checks.arrived_line(
        testbed, platform.log, platform.app.name, "plain-probe", control, timeout=30
    )
    assert arrived is not None, "a line over TLS with the host's certificate never arrived"
    assert plain not in checks.received(testbed, platform.log, platform.app.name, "plain-probe")


def test_a_client_certificate_from_another_ca_is_refused(
    testbed: Testbed, platform: Platform
) -> None:
    key = tls.new_key()
    other_ca = tls.new_ca_certificate(key, "nowhere")
    cert, cert_key = tls.issue(other_ca, key, [platform.app.name], days=30)
    testbed.exec(
        platform.app,
        f"install -d -m 700 {OTHER_CA_DIR} && "
        f"printf '%s' {shlex.quote(cert)} > {OTHER_CA_DIR}/server.crt && "
        f"(umask 077; printf '%s' {shlex.quote(cert_key)} > {OTHER_CA_DIR}/server.key)",
    )
    refused, control = _mark(), _mark()
    try:
        _send_tls(
            testbed,
            platform.app,
            platform.log,
            _rfc5424("other-ca", platform.app.name, refused),
            OTHER_CA_DIR,
        )
        # Without any client certificate: refused too.
        testbed.exec(
            platform.app,
            f"printf '%s' {shlex.quote(_rfc5424('other-ca', platform.app.name, refused))} "
            f"| timeout 10 openssl s_client -quiet -connect {platform.log.private_address}:1514 "
            "-CAfile /etc/maha/tls/ca.crt >/dev/null 2>&1; true",
        )
    finally:
        testbed.exec(platform.app, f"rm -rf {OTHER_CA_DIR}")
    _send_tls(
        testbed,
        platform.app,
        platform.log,
        _rfc5424("other-ca", platform.app.name, control),
        "/etc/maha/tls/rsyslog",
    )
    assert checks.arrived_line(
        testbed, platform.log, platform.app.name, "other-ca", control, timeout=30
    )
    assert refused not in checks.received(testbed, platform.log, platform.app.name, "other-ca")
    # The receiver says why (rsyslog's own messages, kept in the host's syslog).
    said = testbed.exec(
        platform.log,
        "cat /var/log/syslog 2>/dev/null; journalctl --no-pager -t rsyslogd -n 500; true",
    )
    assert "certificate invalid: signer not found" in said
    assert "peer did not provide a certificate" in said


def test_no_line_of_a_hosts_tls_key_shows_in_the_deploys_output(
    testbed: Testbed, platform: Platform
) -> None:
    store = LocalSecretStore(testbed.env)
    for name in platform.names:
        key = store.get(tls.stored_names(name)[1])
        assert key, f"{name} has no key in the store"
        body = [line for line in key.splitlines() if line and not line.startswith("-----")]
        assert body and not [line for line in body if line in platform.first.output], name
        mode = testbed.exec(
            platform.log if name == platform.log.name else platform.app,
            "stat -c '%U %a' /etc/maha/tls/rsyslog/server.key",
        )
        assert mode.strip() == "root 600"


def test_every_port_of_the_log_server_beyond_loopback_speaks_tls_or_ssh(
    testbed: Testbed, platform: Platform
) -> None:
    ports.assert_tls_or_ssh(testbed, "log", platform.log, {22: "ssh", 1514: "tls"})


def test_log_tls_off_plans_plain_tcp_at_both_ends_and_changes_nothing(
    testbed: Testbed, platform: Platform
) -> None:
    before = testbed.exec(platform.app, "sha1sum /etc/rsyslog.d/90-maha-forward.conf")
    plan = testbed.deploy(
        roles=["base", "log"],
        limit=platform.names,
        dry=True,
        overrides={**RSYSLOG, "log_tls": False},
    )
    assert plan.ok, plan.output
    changed = {(op.host, op.name.rsplit(" | ", 1)[-1]) for op in plan.changed}
    assert (platform.app.name, "Forward logs to the log server") in changed
    assert (platform.log.name, "Receive logs from every host (rsyslog)") in changed
    assert '- StreamDriver="gtls"' in " ".join(plan.output.split())
    assert testbed.exec(platform.app, "sha1sum /etc/rsyslog.d/90-maha-forward.conf") == before


def test_received_logs_are_rotated(testbed: Testbed, platform: Platform) -> None:
    out = testbed.exec(
        platform.log, "logrotate --debug --force /etc/logrotate.d/maha-remote 2>&1", check=False
    )
    assert f"{checks.REMOTE_DIR}/*/*.log" in out and "error" not in out.lower()


def test_second_converge_changes_nothing(testbed: Testbed, platform: Platform) -> None:
    converge.assert_idempotent(
        testbed,
        platform.names,
        ["base", "log"],
        overrides=RSYSLOG,
        justified=JUSTIFIED_NON_IDEMPOTENT,
    )


def test_dry_run_shows_the_diff_and_changes_nothing(testbed: Testbed, platform: Platform) -> None:
    before = testbed.exec(platform.log, "sha1sum /etc/logrotate.d/maha-remote")

    plan = testbed.deploy(
        roles=["base", "log"],
        limit=platform.names,
        dry=True,
        overrides={**RSYSLOG, "rsyslog_remote_rotate": 7},
    )

    assert plan.ok, plan.output
    assert [(op.host, op.name) for op in plan.changed] == [
        (platform.log.name, "Log server | Rotate received logs")
    ]
    assert "Will modify /etc/logrotate.d/maha-remote" in plan.output
    diff = " ".join(plan.output.split())
    assert "- rotate 14" in diff and "+ rotate 7" in diff
    assert testbed.exec(platform.log, "sha1sum /etc/logrotate.d/maha-remote") == before


# -- Graylog ----------------------------------------------------------------------------------

GRAYLOG_CONF = "/etc/graylog/server/server.conf"
REQUIRED_KEYS = (
    "password_secret",
    "root_password_sha2",
    "http_bind_address",
    "http_external_uri",
    "elasticsearch_hosts",
    "mongodb_uri",
)


@pytest.fixture(scope="module")
def graylog_plan(testbed: Testbed) -> tuple[LocalHost, DeployResult]:
    fresh = testbed.host("log")
    plan = testbed.deploy(roles=["log"], limit=[fresh.name], dry=True, overrides=GRAYLOG)
    return fresh, plan


def test_graylog_plan_installs_pinned_packages_and_creates_the_inputs(graylog_plan) -> None:
    _, plan = graylog_plan
    assert plan.ok, plan.output
    planned = {op.name for op in plan.changed}
    for name in (
        "Log server | MongoDB 7.0: apt repository",
        "Log server | OpenSearch 2.x: apt repository",
        "Log server | Graylog 6.1: apt repository",
        "Log server | Pin Graylog, MongoDB and OpenSearch versions",
        "Log server | Install MongoDB",
        "Log server | Install OpenSearch 2.15.0",
        "Log server | Install Graylog 6.1",
        "Log server | Configure OpenSearch for Graylog",
        "Log server | Size OpenSearch's heap",
        "Log server | Configure Graylog (server.conf)",
        "Log server | Size Graylog's Java heap",
        "Log server | Wait for Graylog's API",
        "Log server | Graylog input: Syslog TCP (RFC 5424 from every host)",
        "Log server | Graylog input: GELF TCP",
        "Log server | Graylog input: GELF UDP",
    ):
        assert name in planned, name
    # A container shares its machine's kernel: vm.max_map_count is the machine's to set.
    assert not plan.named("max_map_count")
    assert "Pin: version 6.1.*" in plan.output and "Pin: version 2.15.0" in plan.output


def test_graylog_plan_renders_a_complete_server_conf(graylog_plan) -> None:
    _, plan = graylog_plan
    assert f"Will create {GRAYLOG_CONF}" in plan.output
    for key in REQUIRED_KEYS:
        assert f"+ {key} = " in plan.output, key
    assert "+ elasticsearch_hosts = http://127.0.0.1:9200" in plan.output
    assert "-Xms" in plan.output and "-Xmx" in plan.output  # heaps sized


def test_graylog_plan_serves_the_web_interface_on_loopback_and_its_inputs_over_tls(
    graylog_plan,
) -> None:
    from deploys.log import graylog_inputs
    from mahaops.settings.log import LogShippingSettings

    _, plan = graylog_plan
    # Reached only through `invoke logs.ui` (an SSH tunnel); the firewall opens nothing.
    assert "+ http_bind_address = 127.0.0.1:9000" in plan.output
    assert "0.0.0.0:9000" not in plan.output
    planned = {op.name for op in plan.changed}
    for name in (
        "Log server | Graylog TLS certificate (from the platform's CA)",
        "Log server | Graylog TLS key",
    ):
        assert name in planned, name
    inputs = {title: conf for title, _type, conf in graylog_inputs(LogShippingSettings())}
    for title in ("Syslog TCP (RFC 5424 from every host)", "GELF TCP"):
        assert inputs[title]["tls_enable"] is True
        assert inputs[title]["tls_client_auth"] == "required"  # a certificate from the CA
        assert inputs[title]["tls_client_auth_cert_file"] == "/etc/maha/tls/ca.crt"
        assert inputs[title]["tls_key_file"] == "/etc/graylog/server/tls/server.key"
    off = graylog_inputs(LogShippingSettings(log_tls=False))
    assert all(conf.get("tls_enable") is False for _t, kind, conf in off if "TCP" in kind)


def test_graylog_plan_shows_no_secret(testbed: Testbed, graylog_plan) -> None:
    import hashlib

    _, plan = graylog_plan
    store = LocalSecretStore(testbed.env)
    values = {
        name: store.get(name)
        for name in (
            "graylog_password_secret",
            "graylog_root_password",
            "opensearch_initial_admin_password",
        )
    }
    assert all(values.values()), f"secrets not generated into the store: {values.keys()}"
    assert len(values["graylog_password_secret"] or "") >= 64
    sha2 = hashlib.sha256((values["graylog_root_password"] or "").encode()).hexdigest()
    for name, value in {**values, "sha256(graylog_root_password)": sha2}.items():
        assert value not in plan.output, f"{name} shown in the plan's output"
    assert "+ password_secret = ********" in plan.output


# The command lines a plan of the log role would send to a host, unmasked, as pyinfra's
# connectors build them (mahaops.pyinfra_hooks.planned_commands), written as JSON.
PLAN_COMMANDS = """
from gevent import monkey

monkey.patch_all()
import json, sys
from pathlib import Path

from pyinfra.api.connect import connect_all, disconnect_all

from mahaops import pyinfra_hooks, secrets
from mahaops.runner import engine
from mahaops.runner.state import apply_limit, build_state, load_hosts, select_roles
from mahaops.settings import GroupData

env, name, out, overrides = sys.argv[1], sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4])
pyinfra_hooks.install()
group_data = GroupData()
kind, hosts = load_hosts(env, group_data, None)
state = build_state(hosts, group_data, overrides, True)
apply_limit(state, [name])
with secrets.using(secrets.store_for(kind, env)):
    connect_all(state)
    engine.plan(state, select_roles(["log"]), hosts)
    commands = pyinfra_hooks.planned_commands(state, state.inventory.get_host(name))
    disconnect_all(state)
out.write_text(json.dumps(commands))
"""


def test_graylog_plan_puts_no_secret_on_any_command_line(
    testbed: Testbed, graylog_plan, tmp_path: Path
) -> None:
    import hashlib

    fresh, plan = graylog_plan
    assert plan.ok, plan.output
    out = tmp_path / "commands.json"
    planned = subprocess.run(
        [
            sys.executable,
            "-c",
            PLAN_COMMANDS,
            testbed.env,
            fresh.name,
            str(out),
            json.dumps(GRAYLOG),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert planned.returncode == 0, "planning failed (its output may hold secrets: not shown)"
    commands = json.loads(out.read_text())
    ops = {op for op, _line in commands}
    for name in ("Install OpenSearch 2.15.0", "Graylog input: GELF UDP", "Install MongoDB"):
        assert [op for op in ops if op.endswith(name)], sorted(ops)
    store = LocalSecretStore(testbed.env)
    values = {k: v for k, v in json.loads(store.path.read_text()).items() if v}
    assert "opensearch_initial_admin_password" in values and "graylog_root_password" in values
    values["sha256(graylog_root_password)"] = hashlib.sha256(
        values["graylog_root_password"].encode()
    ).hexdigest()
    leaks = [
        f"{name} in {op!r}" for op, line in commands for name, v in values.items() if v in line
    ]
    assert leaks == []


def test_graylog_plan_checks_each_vendor_key_before_its_repository(graylog_plan) -> None:
    _, plan = graylog_plan
    names = [op.name for op in plan.changed]
    for vendor, pin in (
        ("MongoDB 7.0", "E58830201F7DD82CD808AA84160D26BB1785BA38"),
        ("OpenSearch 2.x", "C5B7498965EFD1C2924BA9D539D319879310D3FC"),
        ("Graylog 6.1", "(none pinned)"),
    ):
        check = f"Log server | {vendor}: signing key: fingerprint {pin}"
        assert check in names, names
        assert names.index(check) < names.index(f"Log server | {vendor}: apt repository")


# -- Graylog, installed for real: only where the vendors' repositories answer ------------

# Probing the vendors' sites from a test would send traffic beyond this machine and its
# test hosts, so the operator says where they answer instead.
VENDOR_REPOS_ENV = "MAHA_VENDOR_REPOS"


@pytest.mark.slow
def test_graylog_receives_a_gelf_message_and_finds_it_by_search(testbed: Testbed) -> None:
    if os.environ.get(VENDOR_REPOS_ENV) != "1":
        pytest.skip(
            "Graylog's, MongoDB's and OpenSearch's apt repositories are not reachable from "
            f"this machine, so Graylog cannot be installed here (set {VENDOR_REPOS_ENV}=1 "
            "where they are to run the full install)"
        )
    host = testbed.host("log")
    result = testbed.deploy(roles=["base", "log"], limit=[host.name], overrides=GRAYLOG)
    assert result.ok, result.output

    password = LocalSecretStore(testbed.env).get("graylog_root_password")
    text = _mark()
    message = json.dumps({"version": "1.1", "host": "it", "short_message": text})
    testbed.exec(
        host,
        "python3 -c 'import socket,sys; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
        f".sendto(sys.argv[1].encode(), (\"127.0.0.1\", 12201))' '{message}'",
    )

    def found() -> bool:
        out = testbed.exec(
            host,
            f"curl -s -u 'admin:{password}' -H 'Accept: application/json' "
            f"'http://127.0.0.1:9000/api/search/universal/relative?query={text}&range=600'",
            check=False,
        )
        return text in out

    assert checks.wait_until(found, timeout=180, interval=3)
