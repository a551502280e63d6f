"""Log role: the log server every host ships to (see deploys/log_shipping.py).

``log_backend = "graylog"`` (the default) installs Graylog as its install guide does:
MongoDB and OpenSearch from their own repositories at versions Graylog supports,
Graylog from its repository, all pinned; then the inputs hosts send to. ``"rsyslog"``
makes the host a central rsyslog receiver writing one file per host and service.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Command, LinuxDistribution
from pyinfra.operations import files, server, systemd

from deploys._backup_store import backup_store
from deploys._common import KEYRINGS, apt_repository, restart, template
from deploys._tls import CA_FILE, server_certificate, trust_ca
from deploys.log_shipping import rsyslog_certificate, tls_vars
from mahaops import masking
from mahaops.context import settings
from mahaops.secrets import secret, token
from mahaops.settings.base import BaseSettings
from mahaops.settings.log import LogServerSettings, LogShippingSettings
from operations import apt, graylog
from operations.facts import IsContainer
from operations.files import command_once, validated_template

API_URL = "http://127.0.0.1:{port}/api"
API_CREDENTIALS = "/etc/graylog/server/maha-api.curl"
OPENSEARCH_PASSWORD_FILE = "/etc/maha/opensearch-initial-admin-password"
OPENSEARCH_INSTALL = "/usr/local/sbin/maha-install-opensearch"
REPO_HOSTS = ("packages.graylog2.org", "repo.mongodb.org", "artifacts.opensearch.org")

GELF_TCP = "org.graylog2.inputs.gelf.tcp.GELFTCPInput"
GELF_UDP = "org.graylog2.inputs.gelf.udp.GELFUDPInput"
SYSLOG_TCP = "org.graylog2.inputs.syslog.tcp.SyslogTCPInput"


def heap_sizes(memory_mb: int) -> tuple[int, int]:
    """OpenSearch's and Graylog's heaps (MB) on a host that also runs MongoDB.

    A quarter of memory each: the other half is MongoDB's and the page cache that
    OpenSearch searches through. OpenSearch stays under 31 GB (compressed object
    pointers), Graylog under 16 GB; neither below 512 MB.
    """
    quarter = memory_mb // 4
    return max(512, min(quarter, 31 * 1024)), max(512, min(quarter, 16 * 1024))


def memory_mb() -> int:
    """The host's memory in MB, from /proc/meminfo (no extra tools needed)."""
    kb = host.get_fact(Command, "awk '/^MemTotal:/ {print $2}' /proc/meminfo")
    return int(str(kb).strip() or 0) // 1024


GRAYLOG_TLS_DIR = "/etc/graylog/server/tls"


def graylog_tls(ship: LogShippingSettings) -> dict[str, Any]:
    """A TCP input's TLS settings: the host's certificate from the platform's CA, clients
    required to show one from that CA (as the rsyslog receiver); or none (``log_tls`` off)."""
    if not ship.log_tls:
        return {"tls_enable": False}
    return {
        "tls_enable": True,
        "tls_cert_file": f"{GRAYLOG_TLS_DIR}/server.crt",
        "tls_key_file": f"{GRAYLOG_TLS_DIR}/server.key",  # PKCS#8, unencrypted: no password
        "tls_key_password": "",
        "tls_client_auth": "required",
        "tls_client_auth_cert_file": CA_FILE,
    }


def graylog_inputs(ship: LogShippingSettings) -> list[tuple[str, str, dict[str, Any]]]:
    """(title, type, configuration) of the inputs every host and app sends to. Both TCP
    inputs speak TLS with ``log_tls``; GELF over UDP cannot (datagrams), and nothing in the
    platform sends it: it stays plain, reachable from the platform's hosts only."""
    tcp = {
        "bind_address": "0.0.0.0",
        "recv_buffer_size": 1048576,
        "number_worker_threads": 2,
        "tcp_keepalive": True,
        **graylog_tls(ship),
        "use_null_delimiter": False,
        "max_message_size": 2097152,
    }
    return [
        (
            "Syslog TCP (RFC 5424 from every host)",
            SYSLOG_TCP,
            {
                **tcp,
                "port": ship.log_syslog_tcp_port,
                "allow_override_date": True,
                "expand_structured_data": True,  # host, role, service, release become fields
                "store_full_message": False,
                "force_rdns": False,
            },
        ),
        ("GELF TCP", GELF_TCP, {**tcp, "port": ship.log_gelf_port, "use_null_delimiter": True}),
        (
            "GELF UDP",
            GELF_UDP,
            {
                "bind_address": "0.0.0.0",
                "port": ship.log_gelf_port,
                "recv_buffer_size": 262144,
                "number_worker_threads": 2,
            },
        ),
    ]


def graylog_vars(s: LogServerSettings, base: BaseSettings) -> dict[str, Any]:
    """Variables the Graylog templates see, secrets included (masked in every output)."""
    password = secret("graylog_root_password")
    # The hash is as good as the password to an offline guesser: never shown either.
    sha2 = masking.register(hashlib.sha256(password.encode()).hexdigest())
    os_heap, graylog_heap = heap_sizes(memory_mb())
    address = host.data.get("private_address") or host.name
    bind = "127.0.0.1" if s.graylog_http_bind == "loopback" else address
    return {
        **s.model_dump(),
        "apt_proxy": base.apt_proxy,
        "graylog_repo_hosts": REPO_HOSTS,
        "graylog_password_secret": secret("graylog_password_secret", lambda: token(64)),
        "graylog_root_password": password,
        "graylog_root_password_sha2": sha2,
        "graylog_http_bind_address": f"{bind}:{s.graylog_http_port}",
        "graylog_external_uri": s.graylog_external_uri or f"http://{bind}:{s.graylog_http_port}/",
        "graylog_heap_mb": s.graylog_heap_mb or graylog_heap,
        "graylog_opensearch_heap_mb": s.graylog_opensearch_heap_mb or os_heap,
        "graylog_node_name": host.name,
        "graylog_opensearch_initial_password": secret("opensearch_initial_admin_password"),
        "graylog_opensearch_password_file": OPENSEARCH_PASSWORD_FILE,
        "base_apt_timeout": base.base_apt_timeout,
    }


# A config file in a directory its package made. Not creating the directory keeps the
# plan's diff: pyinfra shows it only after the mkdir a fresh host would need.
_template = functools.partial(template, create_remote_dir=False)


def _repository(
    name: str,
    key_url: str,
    key: str,
    source: str,
    proxy: str | None,
    fingerprint: tuple[str, str],
) -> None:
    """A vendor's apt repository: ``source`` is its line after ``deb [signed-by=...]``;
    ``fingerprint`` the key's pin and the setting holding it."""
    keyring = f"{KEYRINGS}/{key}"
    apt_repository(
        f"{name}: apt repository",
        key_name=f"{name}: signing key",
        key_url=key_url,
        keyring=keyring,
        src="log/apt-source.list.j2",
        dest=f"/etc/apt/sources.list.d/{key.removesuffix('.asc')}.list",
        proxy=proxy,
        fingerprint=fingerprint[0],
        fingerprint_setting=fingerprint[1],
        graylog_apt_repository=name,
        graylog_apt_source=f"deb [signed-by={keyring}] {source}",
    )


def graylog_server(s: LogServerSettings, ship: LogShippingSettings, base: BaseSettings) -> None:
    tvars = graylog_vars(s, base)
    in_container = host.get_fact(IsContainer)
    codename = (host.get_fact(LinuxDistribution).get("release_meta") or {}).get(
        "VERSION_CODENAME", "bookworm"
    )

    # -- repositories, pinned ----------------------------------------------------------------
    if base.apt_proxy:
        _template(
            "HTTPS repositories through the package cache",
            "log/apt-https-proxy.conf.j2",
            "/etc/apt/apt.conf.d/02maha-https-proxy",
            **tvars,
        )
    _repository(
        f"MongoDB {s.graylog_mongodb_version}",
        f"https://pgp.mongodb.com/server-{s.graylog_mongodb_version}.asc",
        f"mongodb-server-{s.graylog_mongodb_version}.asc",
        f"https://repo.mongodb.org/apt/debian {codename}/mongodb-org/"
        f"{s.graylog_mongodb_version} main",
        base.apt_proxy,
        (s.graylog_mongodb_key_fingerprint, "graylog_mongodb_key_fingerprint"),
    )
    _repository(
        "OpenSearch 2.x",
        "https://artifacts.opensearch.org/publickeys/opensearch.pgp",
        "opensearch.asc",
        "https://artifacts.opensearch.org/releases/bundle/opensearch/2.x/apt stable main",
        base.apt_proxy,
        (s.graylog_opensearch_key_fingerprint, "graylog_opensearch_key_fingerprint"),
    )
    _repository(
        f"Graylog {s.graylog_version}",
        "https://packages.graylog2.org/repo/debian/keyring.gpg",
        "graylog.asc",
        f"https://packages.graylog2.org/repo/debian/ stable {s.graylog_version}",
        base.apt_proxy,
        (s.graylog_key_fingerprint, "graylog_key_fingerprint"),
    )
    _template(
        "Pin Graylog, MongoDB and OpenSearch versions",
        "log/apt-preferences.j2",
        "/etc/apt/preferences.d/maha-log",
        **tvars,
    )

    # -- MongoDB: Graylog's configuration store ---------------------------------------------
    apt.packages(name="Install MongoDB", packages=["mongodb-org"], update=True, cache_time=3600)
    systemd.service(name="Run MongoDB", service="mongod", running=True, enabled=True)

    # -- OpenSearch: the message store ------------------------------------------------------
    if not in_container:  # the kernel's, shared by every container on the machine
        server.sysctl(
            name="Allow OpenSearch its memory maps (vm.max_map_count)",
            key="vm.max_map_count",
            value=262144,
            persist=True,
            persist_file="/etc/sysctl.d/90-maha-opensearch.conf",
        )
    # The package's install script (2.12+) requires an initial admin password, even with
    # security disabled: it reaches apt-get's environment from a root-only file, never
    # through a command line.
    template(
        "OpenSearch's initial admin password (root only)",
        "log/opensearch-initial-password.j2",
        OPENSEARCH_PASSWORD_FILE,
        mode="600",
        **tvars,
    )
    _template(
        "OpenSearch's install script",
        "log/maha-install-opensearch.sh.j2",
        OPENSEARCH_INSTALL,
        mode="700",
        **tvars,
    )
    command_once(
        name=f"Install OpenSearch {s.graylog_opensearch_version}",
        command=OPENSEARCH_INSTALL,
        creates="/usr/share/opensearch/bin/opensearch",
    )
    os_conf = _template(
        "Configure OpenSearch for Graylog",
        "log/opensearch.yml.j2",
        "/etc/opensearch/opensearch.yml",
        mode="640",
        group="opensearch",
        **tvars,
    )
    os_heap = _template(
        "Size OpenSearch's heap",
        "log/opensearch-heap.options.j2",
        "/etc/opensearch/jvm.options.d/maha-heap.options",
        mode="640",
        group="opensearch",
        **tvars,
    )
    systemd.service(name="Run OpenSearch", service="opensearch", running=True, enabled=True)
    restart("Restart OpenSearch for the new configuration", "opensearch", when=[os_conf, os_heap])

    # -- Graylog ------------------------------------------------------------------------------
    apt.packages(name=f"Install Graylog {s.graylog_version}", packages=["graylog-server"])
    certificate: list[Any] = []
    if ship.log_tls:  # the TCP inputs' certificate, readable by Graylog only (its user)
        certificate = [
            trust_ca(),
            *server_certificate("Graylog", GRAYLOG_TLS_DIR, "graylog", "graylog"),
        ]
    conf = _template(
        "Configure Graylog (server.conf)",
        "log/server.conf.j2",
        "/etc/graylog/server/server.conf",
        mode="640",
        group="graylog",
        **tvars,
    )
    env = _template(
        "Size Graylog's Java heap",
        "log/graylog-server.default.j2",
        "/etc/default/graylog-server",
        **tvars,
    )
    systemd.service(name="Run Graylog", service="graylog-server", running=True, enabled=True)
    # Inputs read their certificate when they start: a renewed one needs a restart.
    restart(
        "Restart Graylog for the new configuration",
        "graylog-server",
        when=[conf, env, *certificate],
    )

    # -- inputs, through the REST API -------------------------------------------------------
    _template(
        "Credentials for Graylog's API (deploy only)",
        "log/graylog-api.curl.j2",
        API_CREDENTIALS,
        mode="600",
        **tvars,
    )
    api = API_URL.format(port=s.graylog_http_port)
    graylog.api_ready(name="Wait for Graylog's API", api_url=api)
    for title, input_type, configuration in graylog_inputs(ship):
        graylog.input(
            name=f"Graylog input: {title}",
            title=title,
            input_type=input_type,
            configuration=configuration,
            api_url=api,
            curl_config=API_CREDENTIALS,
        )


def rsyslog_receiver(s: LogServerSettings, ship: LogShippingSettings) -> None:
    tvars = {**s.model_dump(), **ship.model_dump(), **tls_vars()}
    # The same certificate the host ships with (base role): placed here too, so the log role
    # run alone never names files that are missing.
    certificate = rsyslog_certificate() if ship.log_tls else []
    apt.packages(name="Install logrotate", packages=["logrotate"], no_recommends=True)
    files.directory(
        name="Directory of received logs",
        path=s.rsyslog_remote_dir,
        user="root",
        group="adm",
        mode="750",
    )
    conf = validated_template(
        name="Receive logs from every host (rsyslog)",
        src="log/rsyslog-receiver.conf.j2",
        dest="/etc/rsyslog.d/10-maha-receiver.conf",
        validate="/usr/sbin/rsyslogd -N1 -f %s",
        mode="644",
        **tvars,
    )
    validated_template(
        name="Rotate received logs",
        src="log/logrotate-remote.j2",
        dest="/etc/logrotate.d/maha-remote",
        # logrotate reads the whole directory: check the candidate on its own.
        validate="/usr/sbin/logrotate --debug --state /dev/null %s",
        mode="644",
        **tvars,
    )
    systemd.service(name="Run rsyslog", service="rsyslog", running=True, enabled=True)
    restart("Restart rsyslog to receive", "rsyslog", when=[conf, *certificate])


@deploy("Log server")
def log() -> None:
    s = settings(LogServerSettings)
    ship = settings(LogShippingSettings)
    if ship.log_backend == "rsyslog":
        rsyslog_receiver(s, ship)
    else:
        graylog_server(s, ship, settings(BaseSettings))
    backup_store()  # the db hosts' off-host dumps, when postgresql_backup_offhost is on
