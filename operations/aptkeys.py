"""apt signing keys checked against a pinned fingerprint before any repository trusts them.

A vendor's key is downloaded over HTTPS from the vendor's own site: a changed key there
(a compromised site, a proxy, a mirror) would otherwise be trusted for every package of
the repository. ``fingerprint_check`` is the shell check the ``apt_repository`` helper
(deploys/_common.py) runs on each newly downloaded key, before the source file naming it
exists: every primary key in the file must be the pinned one.
"""

from __future__ import annotations

import re
import shlex

FINGERPRINT = re.compile(r"^[0-9A-F]{40}$")


def fingerprints_command(keyring: str) -> str:
    """Shell printing the primary-key fingerprints of a key file (armored or binary), read
    with a throwaway gpg home: nothing is imported anywhere."""
    return (
        "{ home=$(mktemp -d) && "
        f'gpg --batch --homedir "$home" --show-keys --with-colons {shlex.quote(keyring)} '
        '2>/dev/null | awk -F: \'$1 == "pub" {p = 1; next} p && $1 == "fpr" {print $10; p = 0}\''
        '; rm -rf "$home"; }'
    )


def fingerprint_check(keyring: str, fingerprint: str, repository: str, setting: str) -> str:
    """
    Shell that fails (and removes ``keyring``) unless the file holds exactly the key
    ``fingerprint``; its message names the repository and the setting to look at.

    + keyring: path of the downloaded key file
    + fingerprint: the pinned fingerprint (40 upper-case hex digits); "" refuses every key
    + repository: the repository's name, for the message
    + setting: the setting holding the pin, for the message

    **Example:**

    .. code:: python

        server.shell(
            name="Check the PGDG signing key",
            commands=[fingerprint_check(
                "/etc/apt/keyrings/postgresql.asc",
                "B97B0AFCAA1A47F044F244A07FCC7D46ACCC4CF8",
                "PGDG",
                "postgresql_pgdg_key_fingerprint",
            )],
            _if=key.did_change,
        )
    """
    if fingerprint and not FINGERPRINT.match(fingerprint):
        raise ValueError(f"{setting}: {fingerprint!r} is not 40 upper-case hex digits")
    q_keyring = shlex.quote(keyring)
    refused = shlex.quote(
        f"{repository}: the signing key at {keyring} is not the one pinned in {setting} "
        f"({fingerprint or 'none pinned: set it from the vendor'}); removed, not trusted. "
        "Found:"
    )
    return (
        f"found=$({fingerprints_command(keyring)} | tr '\\n' ' '); "
        f'if [ -n {shlex.quote(fingerprint)} ] && [ "$found" = {shlex.quote(fingerprint + " ")} ]; '
        "then exit 0; fi; "
        f'rm -f {q_keyring}; echo {refused} "${{found:-no key}}" >&2; exit 1'
    )
