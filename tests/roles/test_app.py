"""The app role on a real host: converge, idempotence, dry runs with diffs, a bad nginx
setting that never reaches nginx, nginx's hardening (version hidden, request size and
timeouts, HSTS, sign-in rate limit), a web restart that fails no request, NodeSource's
plan and its pinned key, and release pruning."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from typing import Any

import pytest

from mahaops.local.hosts import LocalHost
from mahaops.secrets import LocalSecretStore
from tests.checks import app as checks
from tests.checks import converge, ports
from tests.conftest import Testbed, infra

pytestmark = pytest.mark.testbed

ROLES = ["base", "app"]

# Operations pyinfra (or we) mark non-idempotent that the role uses, and why that is safe.
JUSTIFIED_NON_IDEMPOTENT = {
    "server.shell": "base: only `sysctl --system`, guarded by its config changing",
    "operations.release.restarted": "restarts only when the unit, environment or release changed",
    "operations.release.healthy": "checks only after a restart",
    "systemd.daemon_reload": "guarded by _if on its unit file changing",
}


@pytest.fixture(scope="module")
def converged(testbed: Testbed) -> tuple[LocalHost, dict[str, Any]]:
    backing = checks.backing_services(testbed)
    host, _ = converge.fresh_host(testbed, "app", "app-r1", ROLES, backing)
    return host, backing


def test_fresh_app_server_serves_its_release_through_nginx(converged) -> None:
    host, _ = converged
    checks.check_app(host, infra(host))


def test_second_converge_changes_nothing(testbed: Testbed, converged) -> None:
    host, backing = converged
    converge.assert_idempotent(
        testbed, [host.name], ROLES, overrides=backing, justified=JUSTIFIED_NON_IDEMPOTENT
    )


def test_dry_run_shows_the_nginx_diff_and_changes_nothing(testbed: Testbed, converged) -> None:
    host, backing = converged
    converge.assert_dry_run(
        testbed,
        host,
        "/etc/nginx/nginx.conf",
        roles=["app"],
        overrides={**backing, "nginx_client_max_body_size": "20m"},
        changed=[
            "App server | nginx: proxy, WebSockets, static files (checked by nginx -t)",
            "App server | Reload nginx for the new configuration",
        ],
        shows=["- client_max_body_size 10m;", "+ client_max_body_size 20m;"],
    )


def test_secrets_in_the_environment_file_never_show_in_a_diff(testbed: Testbed, converged) -> None:
    host, backing = converged
    plan = testbed.deploy(
        roles=["app"],
        limit=[host.name],
        dry=True,
        overrides={**backing, "app_env": {"PG_CONNECT_TIMEOUT_MS": "5000"}},
    )
    assert plan.ok, plan.output
    assert "+ PG_CONNECT_TIMEOUT_MS=5000" in plan.output
    assert "Restart maha-web" in [op.name.split(" | ")[1] for op in plan.changed]
    store = LocalSecretStore(testbed.env)
    for name in ("postgresql_password_maha_app", "redis_password"):
        value = store.get(name)
        assert value and value not in plan.output


def test_an_invalid_nginx_config_never_reaches_nginx(testbed: Testbed, converged) -> None:
    host, backing = converged
    before = testbed.exec(host, "sha1sum /etc/nginx/nginx.conf")

    bad = testbed.deploy(
        roles=["app"], limit=[host.name], overrides={**backing, "nginx_server_name": "a; b {"}
    )

    assert not bad.ok
    assert next(op.name for op in bad.failed).startswith("App server | nginx:")
    assert testbed.exec(host, "sha1sum /etc/nginx/nginx.conf") == before
    assert testbed.exec(host, "test -e /etc/nginx/nginx.conf.maha-new; echo $?").strip() == "1"
    # Refused before it was put in place: no reload is owed for it (a later run reloads nothing).
    assert "nginx.reload" not in testbed.exec(host, "ls /var/lib/maha/pending-restart", check=False)
    assert "200" in testbed.exec(host, "curl -s -o /dev/null -w '%{http_code}' 127.0.0.1/health")


def test_another_node_major_plans_nodesource_with_a_signed_by_key(
    testbed: Testbed, converged
) -> None:
    host, backing = converged
    plan = testbed.deploy(
        roles=["app"], limit=[host.name], dry=True, overrides={**backing, "nodejs_major": 20}
    )
    assert plan.ok, plan.output
    planned = [op.name.split(" | ")[1] for op in plan.changed]
    assert "NodeSource signing key" in planned
    assert "NodeSource repository for Node.js 20" in planned
    assert "Install Node.js 20 (NodeSource)" in planned
    assert (
        "+ deb [signed-by=/etc/apt/keyrings/nodesource.asc] https://deb.nodesource.com/node_20.x"
        " nodistro main" in " ".join(plan.output.split())
    )
    assert testbed.exec(host, "node --version").startswith("v18.")
    assert testbed.exec(host, "ls /etc/apt/sources.list.d/").strip() == ""


def _a_key_that_is_not_nodesource_s() -> tuple[str, str]:
    """A signing key made here: (armored public key, fingerprint)."""
    home = tempfile.mkdtemp(prefix="maha-gpg-")
    try:
        gpg = ["gpg", "--batch", "--homedir", home]
        subprocess.run([*gpg, "--passphrase", "", "--quick-gen-key", "intruder@example.test",
                        "ed25519", "sign", "never"], check=True, capture_output=True)  # fmt: skip
        colons = subprocess.run([*gpg, "--with-colons", "--list-keys"], check=True,
                                capture_output=True, text=True).stdout  # fmt: skip
        fpr = next(x.split(":")[9] for x in colons.splitlines() if x.startswith("fpr:"))
        armored = subprocess.run([*gpg, "--armor", "--export", fpr], check=True,
                                 capture_output=True, text=True).stdout  # fmt: skip
        return armored, fpr
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_a_nodesource_key_that_is_not_the_pinned_one_is_never_trusted(
    testbed: Testbed, converged
) -> None:
    host, backing = converged
    armored, fpr = _a_key_that_is_not_nodesource_s()
    served = "/srv/maha-test-nodesource.asc"
    container = testbed.environment.client.containers.get(host.container)
    try:
        testbed.exec(host, f"cat > {served} <<'EOF'\n{armored}EOF")
        refused = testbed.deploy(
            roles=["app"],
            limit=[host.name],
            overrides={
                **backing,
                "nodejs_major": 20,
                "nodejs_nodesource_key_url": f"file://{served}",
            },
        )
        assert not refused.ok, refused.output
        output = " ".join(refused.output.split())
        assert "nodejs_nodesource_key_fingerprint" in output and fpr in output, refused.output
        assert "6F71F525282841EEDAF851B42F59B5F99B1BE0B4" in output  # what was expected
        left = testbed.exec(
            host, "ls /etc/apt/sources.list.d/nodesource.list /etc/apt/keyrings/nodesource.asc"
            " 2>&1", check=False,
        )  # fmt: skip
        assert left.count("No such file") == 2, "a refused key, or its repository, is in place"
    finally:
        container.exec_run(["rm", "-f", served])
    assert testbed.exec(host, "node --version").startswith("v18.")


def test_old_releases_are_pruned_but_never_current_nor_the_rollback_target(
    testbed: Testbed, converged
) -> None:
    host, backing = converged
    th = infra(host)
    current = checks.current_release(th)
    old = ["20200101T000000Z-0000001", "20200102T000000Z-0000002", "20200103T000000Z-0000003"]
    for release in old:
        testbed.exec(
            host,
            f"mkdir -p /srv/maha/releases/{release} && touch /srv/maha/releases/{release}/"
            ".maha-release",
        )
    # The oldest one is the rollback target: it must survive however few releases are kept.
    testbed.exec(host, f"ln -sfn releases/{old[0]} /srv/maha/previous")

    pruned = testbed.deploy(
        roles=["app"], limit=[host.name], overrides={**backing, "app_keep_releases": 2}
    )

    assert pruned.ok, pruned.output
    assert [op.name for op in pruned.changed] == ["App server | Keep the last 2 releases"]
    left = sorted(testbed.exec(host, "ls /srv/maha/releases").split())
    assert left == sorted([old[0], old[2], current])


def test_nginx_hides_its_version_and_refuses_a_body_over_the_limit(converged) -> None:
    host, _ = converged
    th = infra(host)
    config = th.check_output("nginx -T 2>/dev/null")
    for line in (
        "server_tokens off;",
        "client_max_body_size 10m;",
        "client_header_timeout 10s;",
        "client_body_timeout 15s;",
        "send_timeout 30s;",
        "keepalive_timeout 65s;",
        "proxy_connect_timeout 5s;",
    ):
        assert line in config, line
    _, headers, _ = checks.http(th, "http://127.0.0.1/health")
    assert headers["server"] == "nginx"  # no version

    # 11 MB against the 10m limit: nginx answers 413 before Node sees a byte.
    answer = th.check_output(
        "head -c 11000000 /dev/zero | curl -s -o /dev/null -w '%{http_code}' "
        "-H 'Content-Type: application/json' --data-binary @- http://127.0.0.1/api/campaigns"
    )
    assert answer == "413"
    error_page = th.check_output("head -c 11000000 /dev/zero | curl -s --data-binary @- "
                                 "http://127.0.0.1/api/campaigns")  # fmt: skip
    assert "413" in error_page and "nginx/" not in error_page


def test_hsts_is_sent_on_answers_to_https_only(converged) -> None:
    host, _ = converged
    th = infra(host)
    _, over_tls, _ = checks.http(th, "http://127.0.0.1/health", "-H 'X-Forwarded-Proto: https'")
    assert over_tls["strict-transport-security"] == "max-age=31536000"
    _, plain, _ = checks.http(th, "http://127.0.0.1/health")
    assert "strict-transport-security" not in plain


def test_sign_in_past_its_rate_is_answered_429(converged) -> None:
    host, _ = converged
    # 10 a minute with a burst of 5: of 12 at once, 6 reach the app (400: no credentials in
    # the body), the rest are refused by nginx.
    codes = (
        infra(host)
        .check_output(
            "for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' "
            "-X POST http://127.0.0.1/api/signin; done"
        )
        .split()
    )
    assert codes == ["400"] * 6 + ["429"] * 6
    # Other paths are not limited.
    others = (
        infra(host)
        .check_output(
            "for i in $(seq 12); do curl -s -o /dev/null -w '%{http_code} ' "
            "http://127.0.0.1/health; done"
        )
        .split()
    )
    assert others == ["200"] * 12


def test_a_restart_of_the_web_service_fails_no_request(converged) -> None:
    host, _ = converged
    th = infra(host)
    assert th.service("maha-web.socket").is_running and th.service("maha-web.socket").is_enabled
    before = checks.unit_property(th, "maha-web", "MainPID")
    # Requests back to back through nginx while maha-web restarts: systemd holds the port,
    # so they wait for the new process instead of meeting a closed one (502).
    codes = th.check_output(
        "(for i in $(seq 150); do curl -s -o /dev/null -w '%{http_code}\\n' --max-time 10 "
        "http://127.0.0.1/health; done > /tmp/codes) & sleep 0.3; systemctl restart maha-web; "
        "wait; sort /tmp/codes | uniq -c"
    )
    assert checks.unit_property(th, "maha-web", "MainPID") != before  # it did restart
    assert codes.split() == ["150", "200"], codes


def test_every_port_beyond_loopback_speaks_tls_or_ssh_or_is_plain_by_design(
    testbed: Testbed, converged
) -> None:
    ports.assert_tls_or_ssh(testbed, "app", converged[0], {22: "ssh", 80: "plain"})
