"""The platform's own certificate authority: one per environment, issuing each host's
certificate: internal services (PostgreSQL, Redis, the log receiver) serve it and clients
verify it; a log shipper shows it to the log server as its client certificate.

Internal traffic never meets a public CA, and trusting only this environment's CA means a
certificate from anywhere else (another environment's included) is refused. The CA's key
and every server key are kept like the other secrets (``mahaops.secrets``: a 0600 file
under MAHA_HOME locally, SSM on AWS) and never printed: each line of a key is masked as
well as the whole, since diffs show files line by line. Certificates are kept in the same
store, so the Ansible export reads them from it at run time as it reads passwords.

A run issues a host's certificate for its names and addresses when it has none, and
issues a new one (with a new key) when the stored one expires within
``tls_cert_renew_days``, names other addresses, was not signed by this CA, or lacks one of
the key usages (serving, client authentication).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mahaops import masking
from mahaops.secrets import SecretStore, get_or_create

CA_KEY = "tls_ca_key"
CA_CERT = "tls_ca_cert"
CA_DAYS = 3650  # the CA outlives many server certificates; replacing it re-issues them all
# A host's one certificate serves its services (PostgreSQL, Redis, the log receiver) and
# identifies it as a client (log shipping): GnuTLS in rsyslog checks the purpose each way.
USAGES = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
_PEM_BODY = re.compile(r"^[A-Za-z0-9+/=]{16,}$")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> str:
    """A new ECDSA P-256 private key, PEM (PKCS#8): small, fast, and every client here
    (libpq, OpenSSL in Redis, Node.js, GnuTLS) takes it."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def mask_key(pem: str) -> str:
    """Mask ``pem`` whole and line by line (a diff shows it a line at a time)."""
    masking.register(pem)
    for line in pem.splitlines():
        if _PEM_BODY.match(line):
            masking.register(line)
    return pem


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the platform's keys are ECDSA keys")
    return key


def new_ca_certificate(key_pem: str, env: str, now: dt.datetime | None = None) -> str:
    """The self-signed certificate of the environment's CA for ``key_pem``."""
    now = now or _now()
    key = _load_key(key_pem)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "maha"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"maha {env} internal CA"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _san(names: Sequence[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def issue(
    ca_cert_pem: str,
    ca_key_pem: str,
    names: Sequence[str],
    days: int,
    now: dt.datetime | None = None,
) -> tuple[str, str]:
    """A host's certificate for ``names`` (host names and addresses), signed by the CA, for
    serving and for client authentication; returns (certificate PEM, its new key PEM)."""
    if not names:
        raise ValueError("a server certificate needs at least one name or address")
    now = now or _now()
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    ca_key = _load_key(ca_key_pem)
    key_pem = mask_key(new_key())
    key = _load_key(key_pem)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.ExtendedKeyUsage(list(USAGES)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def signed_by(cert_pem: str, ca_cert_pem: str) -> bool:
    """Whether ``cert_pem`` was issued by the CA of ``ca_cert_pem`` (signature checked)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    ca = x509.load_pem_x509_certificate(ca_cert_pem.encode())
    if cert.issuer != ca.subject:
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def names_of(cert_pem: str) -> list[str]:
    """The names and addresses a certificate is for (its subjectAltName)."""
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n.value) for n in san]


def renewal_reason(
    cert_pem: str | None,
    key_pem: str | None,
    ca_cert_pem: str,
    names: Sequence[str],
    renew_days: int,
    now: dt.datetime | None = None,
) -> str | None:
    """Why a stored certificate must be issued again, or None while it serves."""
    if not cert_pem or not key_pem:
        return "none issued yet"
    now = now or _now()
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    if not signed_by(cert_pem, ca_cert_pem):
        return "not issued by this environment's CA"
    if sorted(names_of(cert_pem)) != sorted(str(n) for n in names):
        return "its names or addresses changed"
    if cert.not_valid_after_utc - now <= dt.timedelta(days=renew_days):
        return f"expires within {renew_days} days"
    if _load_key(key_pem).public_key() != cert.public_key():
        return "its key does not match"
    if not set(USAGES) <= set(_usages(cert)):
        return "it lacks client authentication (issued before log shipping used it)"
    return None


def _usages(cert: x509.Certificate) -> list[x509.ObjectIdentifier]:
    try:
        return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return []


# -- the environment's store ----------------------------------------------------------------


def stored_names(host_name: str) -> tuple[str, str]:
    """The store's names of a host's certificate and key."""
    slug = re.sub(r"[^a-z0-9]+", "_", host_name.lower()).strip("_")[:40] or "host"
    return f"tls_cert_{slug}", f"tls_key_{slug}"


def ca(store: SecretStore) -> tuple[str, str]:
    """The environment's CA (certificate PEM, key PEM), made on first use."""
    key = mask_key(get_or_create(store, CA_KEY, new_key))
    cert = store.get(CA_CERT)
    if cert is None or not _matches(cert, key):
        cert = new_ca_certificate(key, store.env)
        store.put(CA_CERT, cert)
    return cert, key


def _matches(cert_pem: str, key_pem: str) -> bool:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    return bool(_load_key(key_pem).public_key() == cert.public_key())


@dataclass(frozen=True)
class ServerCertificate:
    """What a server's host gets: its certificate, its key, and the CA's certificate."""

    cert: str
    key: str
    ca_cert: str
    issued: str | None  # why it was issued by this run, None when the stored one serves


def server_certificate(
    store: SecretStore,
    host_name: str,
    names: Sequence[str],
    days: int,
    renew_days: int,
) -> ServerCertificate:
    """The certificate of ``host_name`` for ``names``: the stored one while it serves, else
    a new one (new key) issued and stored."""
    if renew_days >= days:
        raise ValueError(f"tls_cert_renew_days ({renew_days}) must be below tls_cert_days")
    ca_cert, ca_key = ca(store)
    cert_name, key_name = stored_names(host_name)
    cert, key = store.get(cert_name), store.get(key_name)
    reason = renewal_reason(cert, key, ca_cert, names, renew_days)
    if reason:
        cert, key = issue(ca_cert, ca_key, names, days)
        store.put(key_name, key)
        store.put(cert_name, cert)
    assert cert and key
    return ServerCertificate(cert, mask_key(key), ca_cert, reason)


def write_ca_certificate(store: SecretStore, path: Path) -> Path:
    """The CA's certificate (public; never its key) at ``path``, for an operator's client to
    trust (``curl --cacert``, a browser's authorities): written only when it differs."""
    cert, _ = ca(store)
    if not path.exists() or path.read_text() != cert:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_text(cert)
        path.chmod(0o644)
    return path
