"""The environment's CA on a host, and a server's certificate and key (``mahaops/tls.py``
issues them; the db and cache roles serve with them, clients verify with the CA).

Files are written by templates from the secrets store's values, so the Ansible export reads
them from the same store at run time; keys are 0600 (or 0640 to the service's group) and
masked in every output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pyinfra import host
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from deploys._common import template
from mahaops import tls
from mahaops.context import settings
from mahaops.secrets import current
from mahaops.settings.tls import TlsSettings

TLS_DIR = "/etc/maha/tls"
CA_FILE = f"{TLS_DIR}/ca.crt"  # clients' trust: the environment's CA, and nothing else


def trust_ca() -> OperationMeta:
    """The environment's CA certificate at ``CA_FILE``, readable by every client."""
    ca_cert, _ = tls.ca(current())
    # Made explicitly: the export's template task does not make missing directories.
    files.directory(name="Directory for the platform's CA", path=TLS_DIR, mode="755")
    return template(
        "Trust the platform's CA (internal TLS)", "tls/pem.j2", CA_FILE, mode="644", tls_pem=ca_cert
    )


def server_names() -> list[str]:
    """What clients may call this host: its private address first, its inventory name,
    loopback (tools on the host itself)."""
    private = host.data.get("private_address")
    names = [str(private)] if private else []
    for name in (host.name, "localhost", "127.0.0.1"):
        if name and str(name) not in names:
            names.append(str(name))
    return names


def server_certificate(
    label: str,
    directory: str,
    user: str,
    group: str,
    names: Sequence[str] | None = None,
    stored_as: str | None = None,
) -> tuple[OperationMeta, OperationMeta]:
    """This host's certificate and key in ``directory`` (owned by ``user``), issued or renewed
    by this run when needed; returns their operations (a change reloads the service).

    ``names`` default to ``server_names()``; a certificate for other names (the load
    balancer's public ones) is kept apart in the store under ``stored_as`` (default the
    host's name), so the host's own one is not re-issued back and forth.

    Each has a template variable of its own (not the CA's ``tls_pem``): the export then
    writes a host's values once, to its host_vars, instead of one task per host guarded
    by its name (base places them on every host, for log shipping)."""
    s = settings(TlsSettings)
    issued = tls.server_certificate(
        current(),
        stored_as or host.name,
        list(names) if names is not None else server_names(),
        s.tls_cert_days,
        s.tls_cert_renew_days,
    )
    owner: dict[str, Any] = {"user": user, "group": group}
    files.directory(name=f"{label} TLS directory", path=directory, mode="750", **owner)
    cert = template(
        f"{label} TLS certificate (from the platform's CA)",
        "tls/cert.j2",
        f"{directory}/server.crt",
        mode="644",
        tls_server_cert=issued.cert,
        **owner,
    )
    key = template(
        f"{label} TLS key",
        "tls/key.j2",
        f"{directory}/server.key",
        mode="600",
        tls_server_key=issued.key,
        **owner,
    )
    return cert, key
