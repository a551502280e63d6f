"""Invoke tasks for the log server: ``invoke logs.ui``."""

from __future__ import annotations

import socket
import threading

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from mahaops.inventory import HostSpec


def _log_server(env: str) -> HostSpec:
    from mahaops.inventory import discover, kind_of
    from mahaops.settings import GroupData

    hosts = [h for h in discover(kind_of(env, GroupData().files), env) if "log_servers" in h.groups]
    if not hosts:
        raise Exit(f"no log server in environment {env!r} (is it up? `invoke up`)", code=1)
    return hosts[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@task(
    help={
        "env": "environment: 'local' (Docker on this machine) or one from group_data/aws.py",
        "port": "local port for the tunnel (default: a free one)",
    }
)
def ui(c: Context, env: str = "local", port: int = 0) -> None:
    """Open an SSH tunnel to Graylog's web interface on the log server (Ctrl-C closes it)."""
    from fabric import Config, Connection

    from mahaops.settings import GroupData, from_data
    from mahaops.settings.log import LogServerSettings, LogShippingSettings

    spec = _log_server(env)
    data = GroupData().merged(spec.groups, spec.data)
    if from_data(LogShippingSettings, data).log_backend != "graylog":
        raise Exit(f"{env}: log_backend is not graylog: no web interface to open", code=1)
    remote_port = from_data(LogServerSettings, data).graylog_http_port
    local_port = port or _free_port()
    config = Config(
        runtime_ssh_path=spec.data.get("ssh_config_file"),
        overrides={"load_ssh_configs": bool(spec.data.get("ssh_config_file"))},
    )
    connection = Connection(
        host=str(spec.data.get("ssh_hostname", spec.private_address)),
        port=int(spec.data.get("ssh_port", 22)),
        user=str(spec.data.get("ssh_user", "maha")),
        config=config,
        connect_kwargs={"key_filename": spec.data["ssh_key"]} if spec.data.get("ssh_key") else {},
    )
    # Graylog listens on every address of the host; the firewall admits only admins,
    # the tunnel arrives from the host itself.
    with connection.forward_local(local_port, remote_port=remote_port, remote_host="127.0.0.1"):
        print(f"Graylog ({spec.name}) at http://127.0.0.1:{local_port}/  (Ctrl-C to close)")
        print("Log in as the root user; its password is secret graylog_root_password.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Tunnel closed.")


logs = Collection("logs")
logs.add_task(ui)
