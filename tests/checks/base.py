"""What an operator expects of a host with the base role.

Shared by the pyinfra tests and the exported-Ansible tests: both must make these pass.
"""

from __future__ import annotations

import socket

import paramiko

from mahaops.local import keys
from mahaops.local.hosts import LocalHost


def ssh(host: LocalHost, user: str, **auth: object) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=host.ssh_port,
        username=user,
        timeout=10,
        banner_timeout=10,
        auth_timeout=10,
        allow_agent=False,
        look_for_keys=False,
        **auth,  # type: ignore[arg-type]
    )
    return client


def key_login_works(host: LocalHost, user: str = "maha") -> str:
    """Logs in with the deploy key and returns `id` as the host reports it."""
    client = ssh(host, user, key_filename=str(keys.deploy_key(host.env)))
    try:
        _, stdout, _ = client.exec_command("id -un && sudo -n true && echo sudo-ok")
        return str(stdout.read().decode())
    finally:
        client.close()


def login_refused(host: LocalHost, user: str, **auth: object) -> bool:
    try:
        ssh(host, user, **auth).close()
    except (paramiko.AuthenticationException, paramiko.SSHException):
        return True
    return False


def port_open(address: str, port: int, timeout: float = 1.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def sshd_effective(testinfra_host: object, key: str) -> str:
    """A setting as sshd itself resolves it (``sshd -T``), lower-cased."""
    out = testinfra_host.check_output("sshd -T")  # type: ignore[attr-defined]
    for line in out.splitlines():
        name, _, value = line.partition(" ")
        if name == key.lower():
            return str(value)
    raise AssertionError(f"sshd -T does not report {key}")


def check_base(host: LocalHost, th: object) -> None:
    """The base role's promises, checked on a converged host."""
    assert "sudo-ok" in key_login_works(host)
    for key, value in {
        "permitrootlogin": "no",
        "passwordauthentication": "no",
        "kbdinteractiveauthentication": "no",
        "allowtcpforwarding": "no",
        "x11forwarding": "no",
    }.items():
        assert sshd_effective(th, key) == value, key
    assert int(sshd_effective(th, "maxauthtries")) <= 3
    assert th.service("nftables").is_enabled  # type: ignore[attr-defined]
    assert th.package("unattended-upgrades").is_installed  # type: ignore[attr-defined]
    assert th.file("/etc/apt/apt.conf.d/20auto-upgrades").contains(  # type: ignore[attr-defined]
        'Unattended-Upgrade "1"'
    )
    assert th.file("/etc/systemd/journald.conf.d/90-maha.conf").exists  # type: ignore[attr-defined]
    assert "policy drop" in th.check_output("nft list chain inet maha input")  # type: ignore[attr-defined]
