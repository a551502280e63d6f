"""Tasks for the log server: ``invoke logs.ui``."""

from __future__ import annotations

import socket
import threading

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task

from mahaops.hosts import HostSpec
from mahaops.tasks._common import ENV_HELP, connect


def _log_server(env: str) -> HostSpec:
    from mahaops.hosts import discover, kind_of
    from mahaops.settings import GroupData

    hosts = [h for h in discover(kind_of(env, GroupData().files), env) if "log_servers" in h.groups]
    if not hosts:
        raise Exit(f"no log server in environment {env!r} (is it up? `invoke up`)", code=1)
    return hosts[0]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@task(help={"env": ENV_HELP, "port": "local port for the tunnel (default: a free one)"})
def ui(c: Context, env: str = "local", port: int = 0) -> None:
    """Open an SSH tunnel to Graylog's web interface on the log server (Ctrl-C closes it)."""
    from mahaops.settings import GroupData, from_data
    from mahaops.settings.log import LogServerSettings, LogShippingSettings

    spec = _log_server(env)
    data = GroupData().merged(spec.groups, spec.data)
    if from_data(LogShippingSettings, data).log_backend != "graylog":
        raise Exit(f"{env}: log_backend is not graylog: no web interface to open", code=1)
    server = from_data(LogServerSettings, data)
    remote_port = server.graylog_http_port
    # Graylog listens on loopback (graylog_http_bind, the default) or the private address
    # only: the tunnel goes on from the log server itself to that address.
    private = spec.private_address
    remote_host = "127.0.0.1" if server.graylog_http_bind == "loopback" or not private else private
    local_port = port or _free_port()
    with (
        connect(spec) as connection,
        connection.forward_local(local_port, remote_port=remote_port, remote_host=remote_host),
    ):
        print(f"Graylog ({spec.name}) at http://127.0.0.1:{local_port}/  (Ctrl-C to close)")
        print("Log in as the root user; its password is secret graylog_root_password.")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Tunnel closed.")


ns = Collection("logs", ui)
