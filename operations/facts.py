"""Facts the project's deploys read (pyinfra facts: a command and a parser)."""

from __future__ import annotations

import shlex

from pyinfra.api import FactBase
from pyinfra.facts import server as server_facts

from operations.aptkeys import fingerprints_command


class IsContainer(FactBase[bool]):
    """
    Whether the host is a container (Docker, LXC, systemd-nspawn...), where kernel
    settings and clock discipline belong to the machine underneath.

    .. code:: python

        if not host.get_fact(IsContainer):
            ...
    """

    def command(self) -> str:
        return (
            "systemd-detect-virt --container --quiet 2>/dev/null && echo yes "
            "|| { test -f /.dockerenv && echo yes || echo no; }"
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"


class Users(server_facts.Users):
    """
    pyinfra's ``Users`` (same answer, same parser), read in one pass.

    pyinfra's command forks five programs per account (``grep``, ``id`` twice,
    ``lastlog``...): a quarter of a second of CPU on a stock Debian host, on every host
    at every run. This one reads the account, group and shadow databases once, through
    NSS as ``id`` does. ``lastlog`` is left out: no operation reads it.

    .. code:: python

        if "olduser" in host.get_fact(Users):
            ...
    """

    def command(self) -> str:
        return (
            "{ getent group | sed 's/^/G:/'; getent shadow 2>/dev/null | sed 's/^/S:/'; "
            "getent passwd | sed 's/^/P:/'; } | awk -F: '"
            '$1 == "G" { name[$4] = $2; n = split($5, m, ",");'
            ' for (i = 1; i <= n; i++) if (m[i] != "") extra[m[i]] = extra[m[i]] " " $2; next }'
            ' $1 == "S" { pw[$2] = $3; next }'
            ' $1 == "P" { g = ($5 in name) ? name[$5] : $5;'
            ' print substr($0, 3) "|" g "|" g extra[$2] "||" pw[$2] }'
            "'"
        )


class KeyFingerprints(FactBase["list[str] | None"]):
    """
    The primary-key fingerprints in a signing key file, ``None`` when there is no file;
    ``["?"]`` when they cannot be read (no gpg yet), which no pin matches.

    .. code:: python

        found = host.get_fact(KeyFingerprints, path="/etc/apt/keyrings/postgresql.asc")
    """

    def command(self, path: str) -> str:
        q = shlex.quote(path)
        return (
            f"if [ ! -e {q} ]; then echo absent; "
            "elif ! command -v gpg >/dev/null; then echo '?'; "
            f"else {fingerprints_command(path)}; echo end; fi"
        )

    def process(self, output: list[str]) -> list[str] | None:
        lines = [line.strip() for line in output if line.strip()]
        if lines == ["absent"]:
            return None
        return [line for line in lines if line != "end"] if lines[-1:] == ["end"] else ["?"]
