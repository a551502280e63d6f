"""Off-host copies of the db hosts' dumps on the local platform: a put-only store on the log
server (``postgresql_backup_offhost``; on AWS the dumps go to S3 instead).

The db hosts log in to the store with one SSH key, generated once and kept with the other
secrets. Its only entry in the store user's ``authorized_keys`` forces a command
(``templates/log/maha-backup-store.py.j2``) that accepts a new file or a listing and
nothing else: no shell, no forwarding, no overwrite, no delete. The store host prunes its
archive itself, by its own timer.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyinfra import inventory
from pyinfra.api.exceptions import NoGroupError
from pyinfra.operations import files, server, systemd

from deploys._common import restart, template
from mahaops import tls
from mahaops.context import settings
from mahaops.secrets import secret
from mahaops.settings.base import BaseSettings
from mahaops.settings.db import PostgresBackupOffhostSettings
from operations import apt

KEY_SECRET = "postgresql_backup_offhost_key"
STORE_SCRIPT = "/usr/local/sbin/maha-backup-store"
# On the db host: postgres' own SSH directory (writable by the backup unit: known_hosts).
CLIENT_SSH_DIR = "/var/lib/postgresql/.ssh"
CLIENT_KEY = f"{CLIENT_SSH_DIR}/maha-backup-offhost"


def _new_key() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()


def offhost_key() -> tuple[str, str]:
    """The db hosts' key to the store: (private key, public key line), masked whole and
    line by line (a dry run's diff shows a file a line at a time)."""
    private = tls.mask_key(secret(KEY_SECRET, _new_key))
    loaded = serialization.load_ssh_private_key(private.encode(), password=None)
    public = loaded.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public.decode()


@dataclass(frozen=True)
class Store:
    user: str
    address: str
    port: int


def store_target() -> Store | None:
    """Where this db host pushes its dumps: the log server first by name (the Ansible
    export picks the same), when the setting is on and the inventory has one. Its SSH port
    is the platform's (``base_ssh_port``)."""
    s = settings(PostgresBackupOffhostSettings)
    try:
        servers = sorted(inventory.get_group("log_servers"), key=lambda h: h.name)
    except NoGroupError:
        return None
    address = servers[0].data.get("private_address") if servers else None
    if not s.postgresql_backup_offhost or not address:
        return None
    port = settings(BaseSettings).base_ssh_port
    return Store(s.postgresql_backup_offhost_user, str(address), port)


def client_key() -> None:
    """The db host's half: the private key, readable by postgres alone."""
    private, _ = offhost_key()
    files.directory(
        name="SSH directory of the backups",
        path=CLIENT_SSH_DIR,
        user="postgres",
        group="postgres",
        mode="700",
    )
    template(
        "Key to the off-host backup store (put only)",
        "tls/pem.j2",
        CLIENT_KEY,
        mode="600",
        user="postgres",
        group="postgres",
        tls_pem=private,
    )


def backup_store() -> None:
    """The store's half, on the log server: a user whose one key runs the store script."""
    s = settings(PostgresBackupOffhostSettings)
    if not s.postgresql_backup_offhost:
        return
    base = settings(BaseSettings)
    _, public = offhost_key()
    user, home = s.postgresql_backup_offhost_user, s.postgresql_backup_offhost_dir
    tvars = {**s.model_dump(), "backup_store_script": STORE_SCRIPT, "backup_store_key": public}
    apt.packages(name="Python for the backup store", packages=["python3"], no_recommends=True)
    # A shell, because sshd runs the forced command through it; the key allows nothing else.
    server.user(
        name="Backup store user (its key runs the store script only)",
        user=user,
        home=home,
        shell="/bin/sh",
        system=True,
        create_home=False,
        ensure_home=False,  # it would hand the home to the user: it stays root's, below
        groups=[base.base_ssh_group],
    )
    # Home and .ssh owned by root: the store user cannot change its own authorized_keys.
    files.directory(name="Backup store home", path=home, user="root", group="root", mode="755")
    files.directory(
        name="Backup store SSH directory",
        path=f"{home}/.ssh",
        user="root",
        group="root",
        mode="755",
    )
    files.directory(
        name="Backup store archive", path=f"{home}/archive", user=user, group=user, mode="700"
    )
    template(
        "Backup store script (put and list only)",
        "log/maha-backup-store.py.j2",
        STORE_SCRIPT,
        mode="755",
        **tvars,
    )
    template(
        "Admit the db hosts' backup key to the store script only",
        "log/backup-store-authorized_keys.j2",
        f"{home}/.ssh/authorized_keys",
        mode="644",
        user="root",
        group="root",
        **tvars,
    )
    # Not unit(): its systemd.daemon_reload is not idempotent; the timer's restart below
    # reloads the units first whenever either file changed.
    service = template(
        "Backup store pruning service",
        "log/maha-backup-prune.service.j2",
        "/etc/systemd/system/maha-backup-prune.service",
        **tvars,
    )
    timer = template(
        "Backup store pruning timer",
        "log/maha-backup-prune.timer.j2",
        "/etc/systemd/system/maha-backup-prune.timer",
        **tvars,
    )
    restart(
        "Load the new pruning units",
        "maha-backup-prune.timer",
        when=[service, timer],
        daemon_reload=True,
    )
    systemd.service(
        name="Schedule daily pruning of the backup store",
        service="maha-backup-prune.timer",
        running=True,
        enabled=True,
    )
