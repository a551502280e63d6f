"""The environment's CA (mahaops/tls.py): certificates that verify against it and nothing
else, renewal near expiry, keys kept 0600 and masked."""

from __future__ import annotations

import datetime as dt
import ssl
import stat
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from mahaops import masking, tls
from mahaops.secrets import LocalSecretStore
from mahaops.settings.tls import TlsSettings

NAMES = ["10.0.0.5", "db-1", "localhost", "127.0.0.1"]


@pytest.fixture
def store(tmp_path: Path) -> LocalSecretStore:
    return LocalSecretStore("test", tmp_path / "env" / "secrets.json")


def _openssl_verify(tmp_path: Path, ca: str, cert: str, name: str) -> subprocess.CompletedProcess:
    (tmp_path / "ca.pem").write_text(ca)
    (tmp_path / "cert.pem").write_text(cert)
    flag = "-verify_ip" if name[0].isdigit() else "-verify_hostname"
    return subprocess.run(
        ["openssl", "verify", "-CAfile", "ca.pem", flag, name, "cert.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )


def test_a_server_certificate_verifies_against_its_ca_for_each_of_its_names(
    store: LocalSecretStore, tmp_path: Path
) -> None:
    issued = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    assert issued.issued == "none issued yet"
    for name in ("10.0.0.5", "db-1", "127.0.0.1"):
        done = _openssl_verify(tmp_path, issued.ca_cert, issued.cert, name)
        assert done.returncode == 0, done.stdout + done.stderr
    wrong = _openssl_verify(tmp_path, issued.ca_cert, issued.cert, "10.0.0.6")
    assert wrong.returncode != 0  # an address it was not issued for


def test_pythons_tls_client_accepts_the_chain_and_the_key_matches(
    store: LocalSecretStore, tmp_path: Path
) -> None:
    issued = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    (tmp_path / "server.crt").write_text(issued.cert)
    (tmp_path / "server.key").write_text(issued.key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")  # key fits
    client = ssl.create_default_context(cadata=issued.ca_cert)
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname


def test_a_certificate_from_another_environments_ca_is_rejected(
    store: LocalSecretStore, tmp_path: Path
) -> None:
    other = LocalSecretStore("other", tmp_path / "other" / "secrets.json")
    ours = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    theirs = tls.server_certificate(other, "db-1", NAMES, days=365, renew_days=30)
    assert not tls.signed_by(theirs.cert, ours.ca_cert)
    done = _openssl_verify(tmp_path, ours.ca_cert, theirs.cert, "10.0.0.5")
    assert done.returncode != 0
    # and a run in our environment replaces a stored certificate our CA did not sign
    store.put("tls_cert_db_1", theirs.cert)
    store.put("tls_key_db_1", theirs.key)
    again = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    assert again.issued == "not issued by this environment's CA"
    assert tls.signed_by(again.cert, ours.ca_cert)


def test_the_stored_certificate_is_kept_until_it_nears_expiry(store: LocalSecretStore) -> None:
    first = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    second = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    assert second.issued is None and (second.cert, second.key) == (first.cert, first.key)
    # the same certificate, seen 336 days later: within 30 days of its expiry
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=336)
    reason = tls.renewal_reason(first.cert, first.key, first.ca_cert, NAMES, 30, now=later)
    assert reason == "expires within 30 days"
    assert tls.renewal_reason(first.cert, first.key, first.ca_cert, NAMES, 30) is None


def test_a_certificate_near_expiry_is_renewed_with_a_new_key(store: LocalSecretStore) -> None:
    ca_cert, ca_key = tls.ca(store)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=340)
    cert, key = tls.issue(ca_cert, ca_key, NAMES, days=365, now=old)  # 25 days left
    store.put("tls_cert_db_1", cert)
    store.put("tls_key_db_1", key)
    renewed = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    assert renewed.issued == "expires within 30 days"
    assert renewed.cert != cert and renewed.key != key
    assert store.get("tls_cert_db_1") == renewed.cert  # kept for the next run
    assert tls.renewal_reason(renewed.cert, renewed.key, ca_cert, NAMES, 30) is None


def test_new_addresses_get_a_new_certificate(store: LocalSecretStore) -> None:
    tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    moved = tls.server_certificate(store, "db-1", ["10.0.0.9", "db-1"], days=365, renew_days=30)
    assert moved.issued == "its names or addresses changed"
    assert sorted(tls.names_of(moved.cert)) == ["10.0.0.9", "db-1"]


def test_the_ca_is_made_once_per_environment(store: LocalSecretStore) -> None:
    first = tls.ca(store)
    assert tls.ca(store) == first
    assert tls.ca(LocalSecretStore(store.env, store.path)) == first


def test_keys_are_kept_in_a_0600_file_and_masked_line_by_line(store: LocalSecretStore) -> None:
    issued = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    _, ca_key = tls.ca(store)
    for key in (issued.key, ca_key):
        body = [line for line in key.splitlines() if not line.startswith("-----")]
        diff = "\n".join(f"+ {line}" for line in key.splitlines())  # as a dry run shows it
        masked = masking.mask(diff)
        assert not any(line in masked for line in body), masked


def test_renewal_must_come_before_expiry() -> None:
    with pytest.raises(ValidationError, match="must be below tls_cert_days"):
        TlsSettings(tls_cert_days=30, tls_cert_renew_days=30)
    assert TlsSettings().tls_cert_renew_days == 30


def _purpose_check(tmp_path: Path, ca: str, cert: str, purpose: str) -> int:
    (tmp_path / "ca.pem").write_text(ca)
    (tmp_path / "cert.pem").write_text(cert)
    args = ["openssl", "verify", "-CAfile", "ca.pem", "-purpose", purpose, "cert.pem"]
    return subprocess.run(args, cwd=tmp_path, capture_output=True).returncode


def test_a_hosts_certificate_serves_and_authenticates_it_as_a_client(
    store: LocalSecretStore, tmp_path: Path
) -> None:
    # rsyslog's GnuTLS checks the purpose both ways: the log server's certificate must be
    # for serving, a shipping host's for client authentication (the same host certificate).
    issued = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    assert _purpose_check(tmp_path, issued.ca_cert, issued.cert, "sslserver") == 0
    assert _purpose_check(tmp_path, issued.ca_cert, issued.cert, "sslclient") == 0


def test_a_certificate_issued_for_serving_only_is_issued_again(
    store: LocalSecretStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.x509.oid import ExtendedKeyUsageOID

    monkeypatch.setattr(tls, "USAGES", (ExtendedKeyUsageOID.SERVER_AUTH,))
    old = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    monkeypatch.undo()
    renewed = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    assert renewed.issued and "client authentication" in renewed.issued
    assert renewed.cert != old.cert
    again = tls.server_certificate(store, "db-1", NAMES, days=365, renew_days=30)
    assert again.issued is None and again.cert == renewed.cert


def test_the_operator_gets_the_cas_certificate_to_trust_never_its_key(
    store: LocalSecretStore, tmp_path: Path
) -> None:
    path = tls.write_ca_certificate(store, tmp_path / "ca.crt")
    cert, key = tls.ca(store)
    assert path.read_text() == cert
    assert "PRIVATE KEY" not in path.read_text() and key not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    written = path.stat().st_mtime_ns
    tls.write_ca_certificate(store, path)
    assert path.stat().st_mtime_ns == written  # unchanged: not written again
