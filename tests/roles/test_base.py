"""The base role on real hosts: converge, idempotence, dry run with diffs, SSH and firewall."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops.local import keys
from mahaops.local.hosts import LocalHost
from tests.checks import base as checks
from tests.checks import converge
from tests.conftest import Testbed, infra

pytestmark = pytest.mark.testbed

# Operations pyinfra marks non-idempotent that the base role may use, and why that is safe.
JUSTIFIED_NON_IDEMPOTENT = {
    "server.shell": "only `sysctl --system`, guarded by _if on its config file changing",
}


@pytest.fixture(scope="module")
def converged(testbed: Testbed) -> tuple[LocalHost, object]:
    host, first = converge.fresh_host(testbed, "base", "base-1", ["base"])
    assert first.changed, "a fresh host must need changes"
    return host, first


def test_fresh_host_converges_to_the_base_promises(converged) -> None:
    host, _ = converged
    checks.check_base(host, infra(host))


def test_second_converge_changes_nothing(testbed: Testbed, converged) -> None:
    host, _ = converged
    converge.assert_idempotent(testbed, [host.name], ["base"], justified=JUSTIFIED_NON_IDEMPOTENT)


def test_a_file_edited_by_hand_since_the_last_run_is_put_back(testbed: Testbed, converged) -> None:
    host, _ = converged
    testbed.exec(
        host, "chmod 644 /etc/sudoers.d/90-maha && echo '# by hand' >> /etc/ssh/sshd_config"
    )
    again = testbed.deploy(roles=["base"], limit=[host.name])
    assert again.ok, again.output
    batched, live = again.facts[host.name]
    assert batched > live, "facts come from the batch read at the start of the run"
    assert {op.name for op in again.changed} >= {
        "Base | Allow sudo for admins",
        "Base | Harden sshd",
    }, [op.name for op in again.changed]
    assert testbed.exec(host, "stat -c %a /etc/sudoers.d/90-maha").strip() == "440"
    assert "# by hand" not in testbed.exec(host, "cat /etc/ssh/sshd_config")


def test_root_login_is_refused_even_with_an_authorized_key(testbed: Testbed, converged) -> None:
    host, _ = converged
    testbed.exec(
        host,
        f"install -d -m700 /root/.ssh && echo '{keys.public_key(host.env)}' "
        "> /root/.ssh/authorized_keys",
    )
    assert checks.login_refused(host, "root", key_filename=str(keys.deploy_key(host.env)))


def test_password_login_is_refused_even_with_the_right_password(
    testbed: Testbed, converged
) -> None:
    host, _ = converged
    testbed.exec(
        host,
        "id pwtest >/dev/null 2>&1 || useradd -m -G ssh-users pwtest; "
        "echo 'pwtest:Correct-Horse-9' | chpasswd",
    )
    assert checks.login_refused(host, "pwtest", password="Correct-Horse-9")


def test_an_sshd_drop_in_cannot_turn_password_login_back_on(testbed: Testbed, converged) -> None:
    from deploys.base import sshd_expected
    from mahaops.settings.base import BaseSettings
    from operations.sshd import check_command

    host, _ = converged
    evil = "/etc/ssh/sshd_config.d/50-evil.conf"
    testbed.exec(
        host,
        f"printf 'PasswordAuthentication yes\\nPermitRootLogin yes\\n' > {evil}; "
        "id pwtest >/dev/null 2>&1 || useradd -m -G ssh-users pwtest; "
        "echo 'pwtest:Correct-Horse-9' | chpasswd",
    )
    try:
        again = testbed.deploy(roles=["base"], limit=[host.name])
        assert again.ok, again.output
        th = infra(host)
        assert checks.sshd_effective(th, "PasswordAuthentication") == "no"
        assert checks.sshd_effective(th, "PermitRootLogin") == "no"
        assert checks.login_refused(host, "pwtest", password="Correct-Horse-9")
        # The check a run makes where sshd differs, on the same sshd: passes here, and fails
        # naming a difference.
        expected = sshd_expected(BaseSettings())
        assert testbed.exec(host, f"{check_command(expected)} && echo checked").strip() == (
            "checked"
        )
        wrong = check_command({**expected, "passwordauthentication": "yes"})
        out = testbed.exec(host, f"{wrong} || echo refused")
        assert "expected passwordauthentication yes" in out and out.strip().endswith("refused")
    finally:
        testbed.exec(host, f"rm -f {evil}")


def test_deploy_key_login_works_and_has_sudo(converged) -> None:
    host, _ = converged
    out = checks.key_login_works(host)
    assert out.splitlines()[0] == "maha" and "sudo-ok" in out


def test_only_declared_ports_are_reachable(testbed: Testbed, converged) -> None:
    host, _ = converged
    testbed.exec(
        host,
        "systemd-run --unit=probe-8080 python3 -m http.server 8080 >/dev/null 2>&1 || true",
    )
    time.sleep(1)
    assert "8080" in testbed.exec(host, "ss -tln")  # it listens...
    assert not checks.port_open(host.private_address, 8080)  # ...but nobody gets in
    assert checks.port_open(host.private_address, 22)

    opened = testbed.deploy(
        roles=["base"], limit=[host.name], overrides={"base_firewall_extra_ports": [8080]}
    )
    assert opened.ok, opened.output
    assert checks.port_open(host.private_address, 8080)

    closed = testbed.deploy(roles=["base"], limit=[host.name])
    assert closed.ok, closed.output
    assert not checks.port_open(host.private_address, 8080)


def test_dry_run_shows_the_diff_and_changes_nothing(testbed: Testbed, converged) -> None:
    host, _ = converged
    converge.assert_dry_run(
        testbed,
        host,
        "/etc/ssh/sshd_config",
        roles=["base"],
        overrides={"base_ssh_max_auth_tries": 2},
        changed=["Base | Harden sshd", "Base | Reload sshd for the new configuration"],
        shows=["Will modify /etc/ssh/sshd_config", "- MaxAuthTries 3", "+ MaxAuthTries 2"],
    )
    assert "MaxAuthTries 3" in testbed.exec(host, "cat /etc/ssh/sshd_config")


def test_wrong_type_in_group_data_stops_before_any_host_is_touched(
    testbed: Testbed, converged, tmp_path: Path
) -> None:
    host, _ = converged
    group_data = converge.group_data_with(tmp_path, "all.py", 'base_ssh_max_auth_tries = "many"')
    output = converge.assert_stopped_before_login(testbed, host, ["base"], group_data)
    assert "all.py: base_ssh_max_auth_tries:" in output


def test_unknown_key_in_group_data_is_named_with_a_suggestion(
    testbed: Testbed, converged, tmp_path: Path
) -> None:
    host, _ = converged
    group_data = converge.group_data_with(tmp_path, "local.py", "base_timezon = 'Europe/Paris'")

    result = testbed.deploy(roles=["base"], limit=[host.name], group_data=group_data)

    assert result.returncode == 2
    assert "local.py: base_timezon: unknown setting (did you mean 'base_timezone'?)" in (
        " ".join(result.output.split())
    )


def test_admins_from_settings_get_in_by_key_and_former_admins_are_removed(
    testbed: Testbed, converged, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    host, _ = converged
    key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "ana"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        + " ana@laptop"
    )
    admins = [{"name": "ana", "public_keys": [public]}]

    added = testbed.deploy(
        roles=["base"], limit=[host.name], overrides={"base_admin_users": admins}
    )
    assert added.ok, added.output
    client = checks.ssh(host, "ana", key_filename=str(key_file))
    try:
        _, stdout, _ = client.exec_command("sudo -n id -u")
        assert stdout.read().decode().strip() == "0"
    finally:
        client.close()

    removed = testbed.deploy(
        roles=["base"], limit=[host.name], overrides={"base_removed_users": ["ana"]}
    )
    assert removed.ok, removed.output
    assert checks.login_refused(host, "ana", key_filename=str(key_file))
    assert "ana" not in testbed.exec(host, "getent passwd ana || true")


def test_local_inventory_groups_hosts_by_their_role_label(testbed: Testbed, converged) -> None:
    import os
    import runpy

    host, _ = converged
    db = testbed.host("db", name="inv-db-1")
    try:
        os.environ["MAHA_ENV"] = testbed.env
        inventory = runpy.run_path(str(PROJECT_ROOT / "inventories" / "local.py"))
    finally:
        os.environ.pop("MAHA_ENV", None)
        testbed.remove(db)
    assert [name for name, _ in inventory["db_servers"]] == ["inv-db-1"]
    assert host.name in [name for name, _ in inventory["local"]]
    assert host.name not in [name for name, _ in inventory["db_servers"]]
    data = dict(inventory["db_servers"])["inv-db-1"]
    assert data["ssh_hostname"] == "127.0.0.1" and data["private_address"] == db.private_address
