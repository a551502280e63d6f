"""Settings of the log role: shipping on every host, and the log server itself.

The shipping model is checked in every group file (all, local, aws): shippers and the
server must agree on the ports and the backend, so set those in ``all.py`` or an
overlay, not in ``log_servers.py``. The server model is checked in ``log_servers.py``.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from mahaops.settings.base import Cidr
from mahaops.settings.models import Fingerprint, Settings, group_settings

_SIZE = re.compile(r"^\d+[kmg]$")
_SERIES = re.compile(r"^\d+\.\d+$")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def _size(value: str) -> str:
    if not _SIZE.match(value):
        raise ValueError(f"{value!r} is not an rsyslog size (e.g. 512m, 2g)")
    return value


def _series(value: str) -> str:
    if not _SERIES.match(value):
        raise ValueError(f"{value!r} is not a release series (e.g. 6.1)")
    return value


def _version(value: str) -> str:
    if not _VERSION.match(value):
        raise ValueError(f"{value!r} is not a full version (e.g. 2.15.0)")
    return value


def _not_anywhere(value: list[str]) -> list[str]:
    anywhere = [c for c in value if c.split("/")[1:] == ["0"]]
    if anywhere:
        raise ValueError(
            f"{anywhere} admits the whole internet to an admin's tool: list the admins' "
            "networks, or leave [] and reach it through `invoke logs.ui` (an SSH tunnel)"
        )
    return value


Size = Annotated[str, AfterValidator(_size)]
Series = Annotated[str, AfterValidator(_series)]
Version = Annotated[str, AfterValidator(_version)]
Port = Annotated[int, Field(ge=1, le=65535)]


@group_settings("all", "local", "aws")
class LogShippingSettings(Settings):
    log_shipping: bool = True  # every host forwards its logs to the log server
    log_backend: Literal["graylog", "rsyslog"] = "graylog"  # what the log server runs
    log_syslog_tcp_port: Port = 1514  # RFC 5424 over TCP: shippers send, the server listens
    # TLS on that port (rsyslog's gtls; Graylog's input): shippers verify the server's
    # certificate and name against the platform's CA, the server admits only clients with a
    # certificate from that CA; plain TCP is refused. False: plain TCP, as before.
    log_tls: bool = True
    log_gelf_port: Port = 12201  # Graylog's GELF inputs (TCP and UDP), for apps that speak GELF
    log_nginx_files: str = "/var/log/nginx/*.log"  # followed when present (imfile)
    log_release_link: str = "/srv/maha/current"  # its target's name tags each line's release
    log_queue_max_disk: Size = "1g"  # spool kept while the log server is unreachable
    log_queue_mem_lines: int = Field(10000, ge=100)  # lines held in memory before spooling


@group_settings("log_servers")
class LogServerSettings(Settings):
    # -- Graylog (log_backend = "graylog") -------------------------------------------------
    graylog_version: Series = "6.1"  # repository series, pinned: upgrades stay within it
    graylog_mongodb_version: Series = "7.0"  # supported by Graylog 6.1 (5.0.7 to 7.x)
    graylog_opensearch_version: Version = "2.15.0"  # exact; Graylog 6.1 supports up to 2.15
    # Signing keys, checked before their repository is trusted ("" refuses every key):
    # MongoDB's key for the 7.0 series (pgp.mongodb.com/server-7.0.asc); set the one of
    # another series with graylog_mongodb_version.
    graylog_mongodb_key_fingerprint: Fingerprint = "E58830201F7DD82CD808AA84160D26BB1785BA38"
    # OpenSearch's release key (artifacts.opensearch.org/publickeys/opensearch.pgp)
    graylog_opensearch_key_fingerprint: Fingerprint = "C5B7498965EFD1C2924BA9D539D319879310D3FC"
    # Graylog's (packages.graylog2.org/repo/debian/keyring.gpg): not pinned by default, as
    # no published fingerprint could be checked; set it from Graylog's own documentation.
    graylog_key_fingerprint: Fingerprint = ""
    graylog_http_port: Port = 9000  # web interface and REST API
    # Where the web interface listens: "loopback" (reached only through `invoke logs.ui`, an
    # SSH tunnel) or "private" (the host's private address, from graylog_admin_cidrs).
    graylog_http_bind: Literal["loopback", "private"] = "loopback"
    # Networks admitted to the web interface when it listens on the private address; never
    # 0.0.0.0/0 or ::/0. []: none (tunnel only).
    graylog_admin_cidrs: Annotated[list[Cidr], AfterValidator(_not_anywhere)] = []
    graylog_external_uri: str | None = None  # public URI of the UI; None = http://<private>:port/
    graylog_heap_mb: int | None = Field(None, ge=512)  # None: sized from the host's memory
    graylog_opensearch_heap_mb: int | None = Field(None, ge=512)  # None: sized from memory
    graylog_root_username: str = "admin"  # its password: secret graylog_root_password
    graylog_root_timezone: str = "UTC"
    graylog_root_email: str = ""

    # -- rsyslog receiver (log_backend = "rsyslog") ----------------------------------------
    rsyslog_remote_dir: str = "/var/log/maha-remote"  # one directory per host, a file per service
    rsyslog_remote_rotate: int = Field(14, ge=1)  # rotated files kept (daily rotation)
    rsyslog_remote_rotate_period: Literal["daily", "weekly"] = "daily"
