"""Load balancer role: HAProxy, the ELB's stand-in on the local platform.

It balances the app servers' nginx (addresses from the inventory), takes a server out
after failed active health checks and back after passing ones, passes WebSocket
upgrades through and tells nginx the client's address in X-Forwarded-For.

With ``lb_tls`` it terminates TLS on ``lb_https_port`` (``https://``, ``wss://``) with a
certificate from the environment's CA for the names clients use, and tells nginx the
scheme in X-Forwarded-Proto, as the ALB does.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import NoGroupError
from pyinfra.operations import files, systemd

from deploys._common import reloaded, restart, unit
from deploys._tls import server_certificate
from mahaops.context import settings
from mahaops.settings.lb import LbSettings
from operations import apt
from operations.files import validated_template

TLS_DIR = "/etc/haproxy/tls"
# HAProxy finds the key beside the certificate (server.key, ssl-load-extra-del-ext).
TLS_CERT = f"{TLS_DIR}/server.crt"


def tls_names(extra: list[str]) -> list[str]:
    """What clients call the load balancer: loopback first (the published port), then the
    host's name and private address, then ``lb_tls_names``."""
    names: list[str] = []
    for name in ("localhost", "127.0.0.1", host.name, host.data.get("private_address"), *extra):
        if name and str(name) not in names:
            names.append(str(name))
    return names


def app_servers() -> list[dict[str, Any]]:
    """The app servers as HAProxy servers: name, private address, nginx port."""
    try:
        members = inventory.get_group("app_servers")
    except NoGroupError:
        return []
    return [
        {
            "name": h.name,
            "address": h.data.get("private_address"),
            "port": int(h.data.get("nginx_listen_port", 80)),
        }
        for h in sorted(members, key=lambda h: h.name)
        if h.data.get("private_address")
    ]


@deploy("Load balancer")
def lb() -> None:
    s = settings(LbSettings)
    backends = app_servers()
    apt.packages(name="Install HAProxy", packages=["haproxy"], no_recommends=True)
    files.directory(name="HAProxy drop-in directory", path="/etc/systemd/system/haproxy.service.d")
    dropin = unit(
        "HAProxy logs to the journal",
        "lb/haproxy-override.conf.j2",
        "/etc/systemd/system/haproxy.service.d/90-maha.conf",
        reload_name="Reload systemd for HAProxy",
    )
    certificate = []
    if s.lb_tls:  # before the configuration: haproxy -c loads the certificate it names
        # root's only: HAProxy reads it before it drops to its user, on start and reload
        certificate = list(
            server_certificate(
                "HAProxy",
                TLS_DIR,
                "root",
                "root",
                names=tls_names(s.lb_tls_names),
                stored_as=f"{host.name}-https",
            )
        )
    conf = validated_template(
        name="HAProxy: app servers with health checks (checked by haproxy -c)",
        src="lb/haproxy.cfg.j2",
        dest="/etc/haproxy/haproxy.cfg",
        validate="/usr/sbin/haproxy -c -q -f %s",
        mode="644",
        **s.model_dump(),
        lb_backends=backends,
        lb_tls_cert=TLS_CERT,
    )
    systemd.service(name="Run HAProxy", service="haproxy", running=True, enabled=True)
    reloaded("Reload HAProxy for the new configuration", "haproxy", when=[conf, *certificate])
    restart("Restart HAProxy for its new unit settings", "haproxy", when=[dropin])
