"""PostgreSQL operations and facts the db role needs beyond pyinfra's own.

Passwords never leave the operator's machine: a role's password is turned into a
SCRAM-SHA-256 verifier here and only that verifier is sent, on psql's stdin (never a
command line) and masked in every output. A role whose stored verifier already matches
its password is left alone, so a second run changes nothing.

Everything runs as the ``postgres`` superuser over the local socket (peer auth),
through ``runuser`` from the root shell pyinfra gets with sudo.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, QuoteString, StringCommand, operation
from pyinfra.api.operation import OperationMeta

from mahaops import masking
from operations.services import due, marker

SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


def psql(port: int, sql: str | StringCommand, database: str = "postgres") -> StringCommand:
    """``psql`` as the postgres superuser, unaligned and quiet, stopping at the first error."""
    return StringCommand(
        "cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1",
        f"-p {int(port)} -d {shlex.quote(database)} -c",
        QuoteString(sql),
    )


def psql_stdin(port: int, sql: str, database: str = "postgres") -> StringCommand:
    """``psql`` as the postgres superuser reading ``sql`` from its stdin (for secrets)."""
    return StringCommand(
        "cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1",
        f"-p {int(port)} -d {shlex.quote(database)} -f -",
        _stdin=sql,
    )


def _if_running(port: int, command: str) -> str:
    # Nothing to read before the server is installed and up (e.g. a dry run of a fresh host).
    return (
        "command -v pg_isready >/dev/null 2>&1 && cd / && "
        f"runuser -u postgres -- pg_isready -q -p {int(port)} >/dev/null 2>&1 || exit 0; "
        f"{command}"
    )


# -- facts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleState:
    login: bool
    connection_limit: int
    verifier: str  # "" when the role has no password


class PostgresRoleStates(FactBase[dict[str, RoleState]]):
    """
    Roles of the cluster with what the role operation compares: login, connection limit
    and the stored password verifier (never a password). Empty when the server is down.

    .. code:: python

        roles = host.get_fact(PostgresRoleStates, port=5432)
        roles["maha_app"].login
    """

    default = dict

    def command(self, port: int = 5432) -> str:
        query = (
            "SELECT rolname, rolcanlogin, rolconnlimit, coalesce(rolpassword, '') "
            "FROM pg_authid WHERE rolname !~ '^pg_'"
        )
        return _if_running(port, psql(port, query).get_raw_value())

    def process(self, output: list[str]) -> dict[str, RoleState]:
        roles = {}
        for line in output:
            name, login, limit, verifier = line.split("|", 3)
            roles[name] = RoleState(login == "t", int(limit), verifier)
        return roles


class PostgresPendingRestart(FactBase[list[str]]):
    """
    Parameters the running server has read but can only apply after a restart
    (``pg_settings.pending_restart``). Empty when the server is down.

    .. code:: python

        if host.get_fact(PostgresPendingRestart, port=5432):
            ...
    """

    default = list

    def command(self, port: int = 5432) -> str:
        query = "SELECT name FROM pg_settings WHERE pending_restart ORDER BY name"
        return _if_running(port, psql(port, query).get_raw_value())

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


# -- passwords -----------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def scram_verifier(
    password: str, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677)."""
    salt = salt if salt is not None else os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return f"SCRAM-SHA-256${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def verifier_matches(password: str, verifier: str) -> bool:
    """Whether ``verifier`` (as in pg_authid) was made from ``password``."""
    try:
        method, rest = verifier.split("$", 1)
        params, _keys = rest.split("$", 1)
        iterations, salt = params.split(":", 1)
        if method != "SCRAM-SHA-256":
            return False  # md5 or none: set a SCRAM verifier
        expected = scram_verifier(password, base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return hmac.compare_digest(expected, verifier)


# -- operations ----------------------------------------------------------------------------


@operation()
def role(
    role: str,
    password: str,
    login: bool = True,
    connection_limit: int = -1,
    port: int = 5432,
):
    """
    Create or update a PostgreSQL login role whose password is a SCRAM-SHA-256 verifier
    made on this machine: the password itself is never sent, printed or logged.

    + role: name of the role (a plain identifier)
    + password: its password; set only when the stored verifier does not match it
    + login: whether the role may log in
    + connection_limit: connections the role may hold at once, -1 for no limit
    + port: port of the local server

    Maps to Ansible's ``community.postgresql.postgresql_user`` with a pre-hashed password.

    **Example:**

    .. code:: python

        role(
            name="PostgreSQL user maha_app",
            role="maha_app",
            password=secret("postgresql_password_maha_app"),
        )
    """
    current = host.get_fact(PostgresRoleStates, port=port).get(role)
    clauses = []
    if current is None or current.login != login:
        clauses.append("LOGIN" if login else "NOLOGIN")
    if current is None or current.connection_limit != connection_limit:
        clauses.append(f"CONNECTION LIMIT {int(connection_limit)}")
    set_password = current is None or not verifier_matches(password, current.verifier)
    if not clauses and not set_password:
        host.noop(f"postgresql role {role} is up to date")
        return

    verb = "CREATE" if current is None else "ALTER"
    sql = " ".join([f'{verb} ROLE "{role}"', *clauses])
    if not set_password:
        yield psql(port, sql)
        return
    # The verifier is as good as the password to an offline guesser: it goes through
    # psql's stdin, never a command line (ps, sudo's log), and is masked in any output.
    verifier = masking.register(scram_verifier(password))
    yield psql_stdin(port, f"{sql} PASSWORD '{verifier}';")


def reload_command(service: str, port: int = 5432) -> str:
    """Shell reloading PostgreSQL's configuration and waiting until the server re-read it,
    then restarting if a changed parameter needs it; the reload's owed marker
    (``operations.services.marker``) is removed only when all of that succeeded."""
    loaded = psql(port, "SELECT pg_conf_load_time()").get_raw_value()
    pending = psql(port, "SELECT name FROM pg_settings WHERE pending_restart").get_raw_value()
    unit = shlex.quote(service)
    wait = f'[ "$({loaded})" != "$before" ] && break; sleep 0.1'
    return (
        f"before=$({loaded}) && systemctl reload {unit} && "
        # SIGHUP is handled asynchronously: wait until the server has re-read its files.
        f"{{ for _ in $(seq 50); do {wait}; done; }} && "
        f'if [ -n "$({pending})" ]; then systemctl restart {unit}; fi && '
        f"rm -f {shlex.quote(marker(service, reload=True))}"
    )


@operation()
def reload(service: str, when: Sequence[OperationMeta], port: int = 5432):
    """
    Reload PostgreSQL's configuration when any of ``when`` changed the host, or when an
    earlier run left the reload owed; then restart the server if a changed parameter can
    only take effect on restart (``pg_settings.pending_restart``): settings not known to
    be restart-only still never wait for the next run.

    + service: the cluster's systemd unit, e.g. ``postgresql@15-main``
    + when: the operations whose change the server must read (its settings, certificate)
    + port: port of the local server

    Owed as ``operations.services.restart_owed`` with ``reload``: its inputs record
    ``/var/lib/maha/pending-restart/<service>.reload`` before they change the host
    (``deploys._common.owed_before``); this removes it once the server read them.

    **Example:**

    .. code:: python

        reload(
            name="Reload PostgreSQL for new settings",
            service="postgresql@15-main",
            when=[conf],
        )
    """
    if due(service, when, reload=True):
        yield StringCommand(reload_command(service, port))


# -- a data directory that outlived its host -----------------------------------------------


def _cluster_paths(version: str | int, cluster: str) -> tuple[str, str]:
    return f"/var/lib/postgresql/{version}/{cluster}", f"/etc/postgresql/{version}/{cluster}"


class OrphanedData(FactBase[bool]):
    """
    Whether a cluster's data directory is there without its configuration: a replaced
    host (or container) on a kept data volume. Debian's packages create no cluster there,
    so the server would never start.

    .. code:: python

        if host.get_fact(OrphanedData, version="15", cluster="main"):
            ...
    """

    def command(self, version: str | int, cluster: str = "main") -> str:
        data, conf = map(shlex.quote, _cluster_paths(version, cluster))
        return (
            f"test -f {data}/PG_VERSION && ! test -f {conf}/postgresql.conf"
            " && echo orphaned || echo ok"
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "orphaned"


def adopt_command(version: str | int, cluster: str = "main") -> str:
    """The shell command ``adopt_data`` runs; a no-op unless the data is orphaned."""
    data, conf = map(shlex.quote, _cluster_paths(version, cluster))
    scratch = shlex.quote(f"/var/lib/postgresql/{version}/.maha-adopt-{cluster}")
    v, c = shlex.quote(str(version)), shlex.quote(cluster)
    return (
        f"test -f {data}/PG_VERSION || exit 0; test -f {conf}/postgresql.conf && exit 0; "
        # pg_createcluster writes Debian's configuration for a fresh data directory; it is
        # made in a scratch directory and pointed at the kept one, never touching it.
        f"rmdir {conf} 2>/dev/null; rm -rf {scratch} && "
        f"pg_createcluster -d {scratch} {v} {c} >/dev/null && "
        f"pg_conftool {v} {c} set data_directory {data} && rm -rf {scratch} && "
        # The postgres user of a new host may have another uid than the one that wrote it.
        f"chown -R postgres:postgres {data} && systemctl daemon-reload"
    )


@operation()
def adopt_data(version: str | int, cluster: str = "main"):
    """
    Give a data directory that outlived its host its cluster configuration back, so the
    server starts on the kept data. The data itself is not touched (only its owner is
    set to this host's ``postgres`` user); the role's templates then configure the
    cluster as usual.

    + version: PostgreSQL major, e.g. ``"15"``
    + cluster: cluster name (Debian's default ``main``)

    **Example:**

    .. code:: python

        adopt_data(name="Adopt kept data", version="15")
    """
    if not host.get_fact(OrphanedData, version=version, cluster=cluster):
        host.noop(f"postgresql {version}/{cluster} has its configuration")
        return
    yield adopt_command(version, cluster)
