"""What the app servers and an operator expect of a host with the db role (PostgreSQL).

Functions of (test bed, hosts), shared by the pyinfra tests and the exported-Ansible
tests: both must make these pass on the same kind of hosts.
"""

from __future__ import annotations

from typing import Any

from mahaops import tls
from mahaops.local.hosts import LocalHost
from mahaops.secrets import LocalSecretStore

CLIENT_PACKAGES = "postgresql-client redis-tools"
CA_FILE = "/etc/maha/tls/ca.crt"  # the environment's CA, where the roles put it on clients
OTHER_CA_FILE = "/tmp/maha-other-ca.crt"  # a CA of no environment: nothing may trust it


def run(testbed: Any, host: LocalHost, argv: list[str], env: dict[str, str] | None = None):
    """Run ``argv`` on ``host`` with ``env`` (passwords travel here, never in argv)."""
    container = testbed.environment.client.containers.get(host.container)
    code, output = container.exec_run(argv, environment=env or {})
    return code, output.decode(errors="replace")


def install_clients(testbed: Any, host: LocalHost) -> None:
    """psql and redis-cli on a client host (through the apt proxy the base role set up),
    with the environment's CA where the app role puts it (a host converged with base only
    trusts it like an app server), and another CA, to show it is refused."""
    testbed.exec(
        host,
        "command -v psql >/dev/null && command -v redis-cli >/dev/null || "
        f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        f"{CLIENT_PACKAGES} >/dev/null",
    )
    ca_cert = LocalSecretStore(testbed.env).get(tls.CA_CERT)
    other_ca = tls.new_ca_certificate(tls.new_key(), "nowhere")
    for path, pem in ((CA_FILE, ca_cert), (OTHER_CA_FILE, other_ca)):
        if pem:
            code, out = run(
                testbed,
                host,
                ["sh", "-c", 'mkdir -p "${P%/*}" && printf "%s" "$PEM" > "$P"'],
                {"PEM": pem, "P": path},
            )
            assert code == 0, out


def psql(
    testbed: Any,
    client: LocalHost,
    server: str,
    sql: str,
    user: str = "maha_app",
    password: str = "",
    database: str = "maha",
    port: int = 5432,
    sslmode: str = "",
    rootcert: str = CA_FILE,
) -> tuple[int, str]:
    """``sql`` run on ``client`` against ``server`` over TCP; (exit code, output).
    ``sslmode``: libpq's (``disable``, ``verify-full`` against ``rootcert``...); "" = psql's
    default (prefer: TLS when the server offers it, unverified)."""
    env = {"PGPASSWORD": password, "PGCONNECT_TIMEOUT": "3"}
    if sslmode:
        env.update(PGSSLMODE=sslmode, PGSSLROOTCERT=rootcert)
    return run(
        testbed,
        client,
        [
            "psql",
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            server,
            "-p",
            str(port),
            "-U",
            user,
            "-d",
            database,
            "-c",
            sql,
        ],
        env,
    )


def superuser_sql(testbed: Any, db: LocalHost, sql: str, database: str = "postgres") -> str:
    """``sql`` as the postgres superuser on the db host itself (local socket, peer auth)."""
    code, out = run(
        testbed,
        db,
        ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-d", database, "-c", sql],
    )
    assert code == 0, out
    return out.strip()


def check_client_connects(
    testbed: Any, db: LocalHost, client: LocalHost, password: str, port: int = 5432
) -> None:
    """A host in app_servers logs in as maha_app to database maha with its password, over
    TLS, the server verified against the environment's CA (verify-full)."""
    code, out = psql(
        testbed,
        client,
        db.private_address,
        "SELECT current_user || '@' || current_database() || ' ' || ssl::text "
        "FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        password=password,
        port=port,
        sslmode="verify-full",
    )
    assert code == 0, out
    assert out.strip() == "maha_app@maha true"


def check_tls_only(
    testbed: Any, db: LocalHost, client: LocalHost, password: str, port: int = 5432
) -> None:
    """An app server's plain connection is refused, and a server certificate is accepted
    only from the environment's CA (another CA's trust fails the handshake's check)."""
    code, out = psql(
        testbed,
        client,
        db.private_address,
        "SELECT 1",
        password=password,
        port=port,
        sslmode="disable",
    )
    assert code != 0 and "no pg_hba.conf entry" in out and "no encryption" in out, out
    code, out = psql(
        testbed,
        client,
        db.private_address,
        "SELECT 1",
        password=password,
        port=port,
        sslmode="verify-full",
        rootcert=OTHER_CA_FILE,
    )
    assert code != 0 and "certificate verify failed" in out, out


def check_refusals(
    testbed: Any, db: LocalHost, client: LocalHost, password: str, port: int = 5432
) -> None:
    """Wrong passwords and the superuser are refused even from an app server."""
    code, out = psql(
        testbed, client, db.private_address, "SELECT 1", password="wrong-pass", port=port
    )
    assert code != 0 and "password authentication failed" in out, out
    code, out = psql(
        testbed,
        client,
        db.private_address,
        "SELECT 1",
        user="postgres",
        database="postgres",
        password=password,
        port=port,
    )
    assert code != 0 and "no pg_hba.conf entry" in out, out


def outsider_error(
    testbed: Any, db: LocalHost, outsider: LocalHost, password: str, port: int = 5432
) -> str:
    """What a host outside app_servers and workers gets when it tries (it must fail)."""
    code, out = psql(
        testbed, outsider, db.private_address, "SELECT 1", password=password, port=port
    )
    assert code != 0, f"{outsider.name} got in: {out}"
    return out


def check_server(testbed: Any, db: LocalHost, version: int = 15, port: int = 5432) -> None:
    """The server: listening on its private address and localhost only, scram, checksums."""
    listening = testbed.exec(db, f"ss -Htln 'sport = :{port}'")
    addresses = sorted(line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines())
    assert addresses == sorted(["127.0.0.1", db.private_address]), listening
    assert superuser_sql(testbed, db, "SHOW server_version_num")[:2] == str(version)
    assert superuser_sql(testbed, db, "SHOW password_encryption") == "scram-sha-256"
    assert superuser_sql(testbed, db, "SHOW data_checksums") == "on"
    assert (
        superuser_sql(
            testbed,
            db,
            "SELECT pg_encoding_to_char(encoding) FROM pg_database WHERE datname = 'maha'",
        )
        == "UTF8"
    )
    hba = testbed.exec(db, f"stat -c '%U %a' /etc/postgresql/{version}/main/pg_hba.conf")
    assert hba.strip() == "postgres 640"
    key = testbed.exec(db, f"stat -c '%U %a' /etc/postgresql/{version}/main/tls/server.key")
    assert key.strip() == "postgres 600"
    assert superuser_sql(testbed, db, "SHOW ssl") == "on"


def check_backups_scheduled(testbed: Any, db: LocalHost) -> None:
    """The nightly backup timer is enabled and waiting."""
    assert testbed.exec(db, "systemctl is-enabled maha-pg-backup.timer").strip() == "enabled"
    assert testbed.exec(db, "systemctl is-active maha-pg-backup.timer").strip() == "active"


def started_at(testbed: Any, db: LocalHost) -> str:
    """When the server last started: changes on restart, not on reload."""
    return superuser_sql(testbed, db, "SELECT pg_postmaster_start_time()")


def check_db(
    testbed: Any,
    db: LocalHost,
    client: LocalHost,
    password: str,
    version: int = 15,
    port: int = 5432,
) -> None:
    """The db role's promises, checked on a converged db host and an app server."""
    check_server(testbed, db, version, port)
    check_client_connects(testbed, db, client, password, port)
    check_tls_only(testbed, db, client, password, port)
    check_refusals(testbed, db, client, password, port)
    check_backups_scheduled(testbed, db)
