"""apt with a bound: pyinfra's own apt operations, each command stopped after ``timeout``;
installs first finish what a killed dpkg left.

apt's own timeouts cover a connection that stalls, not every wait (a fetch method left
waiting on a half-closed connection was seen to hang for 14 minutes). Wrapping each
command in ``timeout`` puts a hard bound on the host itself: when it fires, apt and its
children are stopped there (no apt is left running) and the operation fails.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.operations import apt as pyinfra_apt

DEFAULT_TIMEOUT = 600  # BaseSettings.base_apt_timeout's default
KILL_AFTER = 10  # seconds between TERM and KILL when the bound is reached

# dpkg journals each status change in /var/lib/dpkg/updates and empties it when it ends
# cleanly: entries there mean a dpkg was killed (a run killed mid-install), and apt then
# refuses every install ("dpkg was interrupted"). apt killed between two dpkg runs leaves
# no journal but packages unpacked and not configured, which ``dpkg --audit`` lists; one
# unpacked without the dependency it waited for makes apt refuse every install ("unmet
# dependencies"). Either way: dpkg's work finished, then apt's (``-f install`` fetches
# what is missing), as apt's own messages ask. When all is well this is one ls and one
# dpkg --audit, in the install's own command.
REPAIR_INTERRUPTED = (
    'if [ -n "$(ls -A /var/lib/dpkg/updates 2>/dev/null)" ] '
    '|| [ -n "$(dpkg --audit 2>/dev/null)" ]; then '
    "echo 'dpkg was interrupted: dpkg --configure -a, apt-get -f install' >&2; "
    "export DEBIAN_FRONTEND=noninteractive; "
    "dpkg --force-confdef --force-confold --configure -a; "
    "apt-get -f install -y -q --no-install-recommends "
    "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold; fi"
)


def bounded(command: Any, timeout: int, repair: bool = False) -> Any:
    """``command`` run under ``timeout`` (after ``REPAIR_INTERRUPTED`` when ``repair``);
    commands that are not shell strings pass as they are."""
    if isinstance(command, StringCommand):
        command = command.get_raw_value()
    if not isinstance(command, str):
        return command
    if repair:
        command = f"{REPAIR_INTERRUPTED}; {command}"
    stopped = shlex.quote(
        f"apt stopped after {int(timeout)}s (base_apt_timeout): is the package cache or "
        "mirror answering?"
    )
    return StringCommand(
        f"timeout --kill-after={KILL_AFTER} {int(timeout)} sh -c {shlex.quote(command)}; "
        f"rc=$?; if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo {stopped} >&2; fi; exit $rc"
    )


def _bounded_all(
    commands: Iterator[Any], timeout: int | None, repair: bool = False
) -> Iterator[Any]:
    if timeout is None:  # the host's setting
        timeout = int(host.data.get("base_apt_timeout", DEFAULT_TIMEOUT))
    for command in commands:
        yield bounded(command, timeout, repair)


@operation(is_idempotent=False)
def update(cache_time: int | None = None, timeout: int | None = None):
    """
    Update apt's package lists, stopping after ``timeout`` seconds.

    + cache_time: skip when the lists were updated less than this many seconds ago
    + timeout: the longest ``apt-get update`` may run on the host before it is stopped
      (default: the host's ``base_apt_timeout`` setting)

    Maps to Ansible's ``apt`` with ``update_cache`` and the task keyword ``timeout``.

    **Example:**

    .. code:: python

        apt.update(name="Read the PGDG package lists", cache_time=3600, timeout=300)
    """
    yield from _bounded_all(pyinfra_apt.update._inner(cache_time=cache_time), timeout)


@operation()
def packages(
    packages: str | list[str] | None = None,
    present: bool = True,
    latest: bool = False,
    update: bool = False,
    cache_time: int | None = None,
    no_recommends: bool = False,
    timeout: int | None = None,
):
    """
    Install or remove apt packages, each apt command stopped after ``timeout`` seconds,
    after finishing what an interrupted dpkg or apt left (``dpkg --configure -a`` and
    ``apt-get -f install``, only then).

    + packages: package name(s)
    + present: whether the packages should be installed
    + latest: upgrade them to the newest version
    + update: update the package lists first
    + cache_time: with ``update``, skip it when the lists are younger than this (seconds)
    + no_recommends: do not install recommended packages
    + timeout: the longest one apt command may run on the host before it is stopped
      (default: the host's ``base_apt_timeout`` setting)

    Maps to Ansible's ``apt`` with the task keyword ``timeout``.

    **Example:**

    .. code:: python

        apt.packages(
            name="Install nginx",
            packages=["nginx"],
            update=True,
            cache_time=3600,
            no_recommends=True,
            timeout=600,
        )
    """
    commands = pyinfra_apt.packages._inner(
        packages=packages,
        present=present,
        latest=latest,
        update=update,
        cache_time=cache_time,
        no_recommends=no_recommends,
    )
    yield from _bounded_all(commands, timeout, repair=True)
