"""PostgreSQL operations and facts the db role needs beyond pyinfra's own.

Passwords never leave the operator's machine: a role's password is turned into a
SCRAM-SHA-256 verifier here and only that verifier is sent (hidden from pyinfra's
output even so). A role whose stored verifier already matches its password is left
alone, so a second run changes nothing.

Everything runs as the ``postgres`` superuser over the local socket (peer auth),
through ``runuser`` from the root shell pyinfra gets with sudo.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import shlex
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import FactBase, HiddenValue, QuoteString, StringCommand, operation

SCRAM_ITERATIONS = 4096  # PostgreSQL's own default (scram_iterations)


def psql(port: int, sql: str | StringCommand, database: str = "postgres") -> StringCommand:
    """``psql`` as the postgres superuser, unaligned and quiet, stopping at the first error."""
    return StringCommand(
        "cd / && runuser -u postgres -- psql -XAtq -v ON_ERROR_STOP=1",
        f"-p {int(port)} -d {shlex.quote(database)} -c",
        QuoteString(sql),
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
    bits: list[str | StringCommand] = [f'{verb} ROLE "{role}"', *clauses]
    if set_password:
        hidden = HiddenValue(scram_verifier(password))
        bits.append(StringCommand("PASSWORD '", hidden, "'", _separator=""))
    yield psql(port, StringCommand(*bits))


@operation(is_idempotent=False)
def reload(service: str, port: int = 5432):
    """
    Reload PostgreSQL's configuration, then restart the server if a changed parameter
    can only take effect on restart (``pg_settings.pending_restart``): settings not
    known to be restart-only still never wait for the next run.

    + service: the cluster's systemd unit, e.g. ``postgresql@15-main``
    + port: port of the local server

    **Example:**

    .. code:: python

        reload(
            name="Reload PostgreSQL for new settings",
            service="postgresql@15-main",
            _if=conf.did_change,
        )
    """
    loaded = psql(port, "SELECT pg_conf_load_time()").get_raw_value()
    pending = psql(port, "SELECT name FROM pg_settings WHERE pending_restart").get_raw_value()
    unit = shlex.quote(service)
    yield StringCommand(
        f"before=$({loaded}); systemctl reload {unit} && "
        # SIGHUP is handled asynchronously: wait until the server has re-read its files.
        f'for _ in $(seq 50); do [ "$({loaded})" != "$before" ] && break; sleep 0.1; done; '
        f'if [ -n "$({pending})" ]; then systemctl restart {unit}; fi'
    )
