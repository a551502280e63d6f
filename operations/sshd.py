"""sshd's effective settings, as the running daemon's configuration parser sees them.

sshd takes the first value it reads for most keywords, from its main file and every file
an ``Include`` brings in: a file checked with ``sshd -t`` may still not be what sshd does
(a drop-in read earlier wins). ``sshd -T`` prints what it would do, so that is what the
base role checks after writing its configuration.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation

SSHD = "/usr/sbin/sshd"


class SshdEffective(FactBase[dict[str, str]]):
    """
    sshd's effective settings (``sshd -T``): lower-case keyword -> value; keywords given
    more than once (``listenaddress``, ``hostkey``...) have their values joined by ``, ``.

    .. code:: python

        host.get_fact(SshdEffective)["passwordauthentication"]  # "no"
    """

    def command(self) -> str:
        return f"{SSHD} -T"

    def process(self, output: Iterable[str]) -> dict[str, str]:
        result: dict[str, str] = {}
        for line in output:
            keyword, _, value = line.strip().partition(" ")
            if keyword:
                result[keyword] = f"{result[keyword]}, {value}" if keyword in result else value
        return result


def differences(expected: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """Each expected setting sshd does not have, as ``keyword is VALUE (expected WANTED)``."""
    return [
        f"{keyword} is {actual.get(keyword, '(unset)')!s} (expected {wanted})"
        for keyword, wanted in expected.items()
        if actual.get(keyword) != wanted
    ]


def check_command(expected: Mapping[str, str]) -> str:
    """Shell doing what ``effective`` does: print each setting that differs and fail."""
    wanted = " ".join(shlex.quote(f"{k} {v}") for k, v in expected.items())
    return (
        f"out=$({SSHD} -T) && bad=0 && for want in {wanted}; do "
        'printf "%s\\n" "$out" | grep -qixF "$want" || '
        '{ echo "sshd: expected $want, has: $(printf "%s\\n" "$out" | grep -i "^${want%% *} ")" '
        '>&2; bad=1; }; done && [ "$bad" = 0 ]'
    )


@operation(is_idempotent=True)
def effective(expected: dict[str, str], pending: bool = False):
    """
    Fail unless sshd's effective settings (``sshd -T``) include ``expected``: whatever
    file sshd reads them from, these are the values it applies. Where they differ, the
    check runs on the host and fails, printing each (a plan shows it as to be run).

    + expected: lower-case keyword -> value, as ``sshd -T`` prints them
    + pending: the configuration is about to change (a plan): the run checks it once the
      new configuration is in place, so the plan does not judge the old one

    **Example:**

    .. code:: python

        effective(
            name="sshd applies the hardened settings",
            expected={"passwordauthentication": "no", "permitrootlogin": "no"},
        )
    """
    if pending:
        host.noop("sshd's effective settings are checked once its new configuration is in place")
        return
    actual: dict[str, str] = host.get_fact(SshdEffective)
    if differences(expected, actual):
        # The check's own shell, run on the host: it prints each setting that differs and
        # fails, so the run stops there and its report shows them (a plan lists it).
        yield StringCommand(check_command(expected))
    else:
        host.noop("sshd applies the project's settings")


def admits_command(user: str, keys: Sequence[str] = ()) -> str:
    """Shell doing what ``admits`` does: explain each reason sshd would refuse ``user``."""
    quoted_keys = " ".join(shlex.quote(k.split()[1]) for k in keys if len(k.split()) > 1)
    return (
        f"u={shlex.quote(user)}; bad=0; "
        'no() { echo "sshd would refuse $u: $*" >&2; bad=1; }; '
        'entry=$(getent passwd "$u") || { no "no such user"; exit 1; }; '
        'home=$(printf "%s" "$entry" | cut -d: -f6); groups=" $(id -Gn "$u") "; '
        f'out=$({SSHD} -T -C "user=$u,host=localhost,addr=127.0.0.1") || exit 1; '
        'get() { printf "%s\\n" "$out" | sed -n "s/^$1 //p"; }; '
        '[ "$(get pubkeyauthentication)" = yes ] || no "PubkeyAuthentication is not yes"; '
        'allow=$(get allowgroups); if [ -n "$allow" ]; then ok=0; '
        'for g in $allow; do case "$groups" in *" $g "*) ok=1;; esac; done; '
        '[ $ok = 1 ] || no "in none of AllowGroups ($allow; has$groups)"; fi; '
        'for g in $(get denygroups); do case "$groups" in *" $g "*) no "DenyGroups $g";; esac; '
        "done; "
        'allow=$(get allowusers); if [ -n "$allow" ]; then ok=0; '
        'for x in $allow; do [ "$x" = "$u" ] && ok=1; done; '
        '[ $ok = 1 ] || no "not in AllowUsers ($allow)"; fi; '
        'for x in $(get denyusers); do [ "$x" = "$u" ] && no "DenyUsers"; done; '
        'f=$(get authorizedkeysfile | cut -d" " -f1 | sed "s|%h|$home|g; s|%u|$u|g"); '
        'case "$f" in /*) ;; *) f="$home/$f";; esac; '
        '[ -s "$f" ] || no "no key in $f"; '
        'for d in "$f" "$(dirname "$f")" "$home"; do '
        '[ -e "$d" ] && case "$(stat -c %a "$d")" in *[2367]?|*[2367]) '
        'no "$d is writable by others (StrictModes)";; esac; done; '
        f"for k in {quoted_keys}; do "
        'grep -qF "$k" "$f" 2>/dev/null || no "the operator\'s key is not in $f"; done; '
        '[ "$bad" = 0 ]'
    )


@operation(is_idempotent=True)
def admits(user: str, keys: Sequence[str] = ()):
    """
    Fail unless sshd, with the configuration on disk, would let ``user`` log in by key:
    ``sshd -T -C user=...`` with its AllowGroups/AllowUsers/DenyGroups/DenyUsers against
    the user's groups, the user's authorized_keys file (present, not writable by others,
    holding each of ``keys``). Run it after writing sshd's configuration and before the
    reload that would apply it: a refusal stops the run while the running sshd still
    has its old configuration, and the session the run came in on still works.

    + user: the account the next runs log in as
    + keys: public keys (``ssh-ed25519 AAAA... comment``) that must be authorized for it

    **Example:**

    .. code:: python

        admits(name="sshd admits the deploy user", user="maha", keys=[operator_key])
    """
    yield StringCommand(admits_command(user, keys))
