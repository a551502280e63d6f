"""Log shipping, on every host (called by the base role).

rsyslog forwards what the host logs — the journal (system services, maha-web,
maha-worker) and nginx's files — to the log server as RFC 5424 over TCP, each line
tagged with host, role, service and release. With ``log_tls`` (the default) that TCP is
TLS (rsyslog's gtls driver): the host checks the server's certificate and name against the
platform's CA and shows its own certificate from that CA. A disk-assisted queue keeps lines
while the log server is unreachable and delivers them when it returns.
"""

from __future__ import annotations

import posixpath
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, systemd

from deploys._common import restart, template
from deploys._tls import CA_FILE, TLS_DIR, server_certificate, trust_ca
from mahaops.context import host_roles, members, settings
from mahaops.settings.log import LogShippingSettings
from operations import apt
from operations.files import command_once, validated_template

FORWARD_CONF = "/etc/rsyslog.d/90-maha-forward.conf"
RELEASE_TABLE = "/var/lib/maha-log/release.json"
RELEASE_SCRIPT = "/usr/local/sbin/maha-log-release"
# rsyslog's certificate and key (root's: rsyslogd runs as root on Debian), for shipping as a
# client and, on the log server, for receiving; the same host certificate as its services'.
RSYSLOG_TLS_DIR = f"{TLS_DIR}/rsyslog"


def rsyslog_certificate() -> list[OperationMeta]:
    """rsyslog's TLS driver, the platform's CA and this host's certificate and key; returns
    the files' operations (a change restarts rsyslog, which reads them at its start)."""
    apt.packages(
        name="rsyslog's TLS driver (GnuTLS)", packages=["rsyslog-gnutls"], no_recommends=True
    )
    ca = trust_ca()
    return [ca, *server_certificate("rsyslog", RSYSLOG_TLS_DIR, "root", "root")]


def tls_vars() -> dict[str, str]:
    """Where rsyslog finds the platform's CA and this host's certificate and key."""
    return {
        "log_tls_ca_file": CA_FILE,
        "log_tls_cert_file": f"{RSYSLOG_TLS_DIR}/server.crt",
        "log_tls_key_file": f"{RSYSLOG_TLS_DIR}/server.key",
    }


def template_vars(s: LogShippingSettings, log_server: tuple[str, str]) -> dict[str, Any]:
    """Variables the shipping templates see: settings plus what the inventory says."""
    return {
        **s.model_dump(),
        **tls_vars(),
        "log_server": log_server[1],
        "log_server_name": log_server[0],  # what its certificate must name
        "log_host": host.name,
        "log_role": ",".join(host_roles()) or "base",
        "log_release_table": RELEASE_TABLE,
        "log_release_dir": posixpath.dirname(s.log_release_link),
    }


@deploy("Log shipping")
def log_shipping() -> None:
    s = settings(LogShippingSettings)
    if not s.log_shipping:
        host.noop("log shipping is off (log_shipping = False)")
        return
    servers = members("log_servers")
    if not servers:
        host.noop("no log server in the inventory: logs stay on this host")
        return
    tvars = template_vars(s, servers[0])  # one log server; more would need a failover action

    files.directory(name="Log shipping state directory", path="/var/lib/maha-log", mode="755")
    template(
        "Release tagger script",
        "log/maha-log-release.j2",
        RELEASE_SCRIPT,
        mode="755",
        **tvars,
    )
    tagger_unit = template(
        "Release tagger service",
        "log/maha-log-release.service.j2",
        "/etc/systemd/system/maha-log-release.service",
        **tvars,
    )
    path = template(
        "Retag when the release link changes",
        "log/maha-log-release.path.j2",
        "/etc/systemd/system/maha-log-release.path",
        **tvars,
    )
    # A oneshot the path unit starts: only its definition is reloaded, by systemd.service
    # (idempotent, unlike systemd.daemon_reload: this runs on every host with base).
    systemd.service(
        name="Reload systemd for the release tagger",
        service="maha-log-release.service",
        running=None,
        daemon_reload=True,
        _if=tagger_unit.did_change,
    )
    # The tagger owns the table from here on; the deploy only makes sure it exists.
    command_once(
        name="Tag log lines with the current release",
        command=RELEASE_SCRIPT,
        creates=RELEASE_TABLE,
    )
    systemd.service(
        name="Watch the release link", service="maha-log-release.path", running=True, enabled=True
    )
    restart(
        "Restart the release watch for its new unit",
        "maha-log-release.path",
        when=[path],
        daemon_reload=True,
    )

    # The certificate and CA before the configuration that names them: rsyslog refuses TLS
    # (and queues lines) while a file it names is missing.
    certificate = rsyslog_certificate() if s.log_tls else []
    forward = validated_template(
        name="Forward logs to the log server",
        src="log/rsyslog-forward.conf.j2",
        dest=FORWARD_CONF,
        validate="/usr/sbin/rsyslogd -N1 -f %s",
        mode="644",
        **tvars,
    )
    systemd.service(name="Run rsyslog", service="rsyslog", running=True, enabled=True)
    restart("Restart rsyslog for the new forwarding", "rsyslog", when=[forward, *certificate])
