"""What every deploy writes the same way: templated files, systemd units, signed apt
repositories and restarts for a changed configuration.

Each helper calls pyinfra's own operations (``files.template``, ``systemd.daemon_reload``,
``files.download``) or the project's (``services.restart_owed``), so plans, reports and the
Ansible export see exactly the operations a deploy would have called itself, under the
names it gives.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from pyinfra import host
from pyinfra.api import StringCommand
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server, systemd

from mahaops.pyinfra_hooks import send_first_when_changing
from mahaops.templating import JINJA_ENV_KWARGS, template_path
from operations import apt, release
from operations.aptkeys import fingerprint_check
from operations.facts import KeyFingerprints
from operations.services import PENDING_RESTARTS, marker, restart_owed

# The one directory of apt signing keys, each trusted only by its own repository (signed-by).
KEYRINGS = "/etc/apt/keyrings"


def template(
    name: str,
    src: str,
    dest: str,
    mode: str = "644",
    user: str | None = None,
    group: str | None = None,
    create_remote_dir: bool = True,
    **tvars: Any,
) -> OperationMeta:
    """
    A file rendered from ``templates/<src>`` as the Ansible export renders it too.

    + name: the operation's name
    + src: template under templates/ (e.g. ``cache/redis.conf.j2``)
    + dest: remote path of the file
    + mode: permissions of the file
    + user: owner of the file (None: left as it is)
    + group: group of the file (None: left as it is)
    + create_remote_dir: make the file's directory when it is missing
    + tvars: template variables
    """
    return files.template(
        name=name,
        src=template_path(src),
        dest=dest,
        mode=mode,
        user=user,
        group=group,
        create_remote_dir=create_remote_dir,
        jinja_env_kwargs=JINJA_ENV_KWARGS,
        **tvars,
    )


def unit(name: str, src: str, dest: str, *, reload_name: str, **tvars: Any) -> OperationMeta:
    """
    A systemd unit file (or drop-in), with systemd's daemon reloaded when it changed.

    + name: the file operation's name
    + src: template under templates/
    + dest: remote path under /etc/systemd/system
    + reload_name: the reload operation's name
    + tvars: template variables

    Returns the file's operation: a service that must run its new unit is gated on it.
    """
    op = template(name, src, dest, **tvars)
    systemd.daemon_reload(name=reload_name, _if=op.did_change)
    return op


def apt_repository(
    name: str,
    key_name: str,
    key_url: str,
    keyring: str,
    src: str,
    dest: str,
    proxy: str | None = None,
    fingerprint: str | None = None,
    fingerprint_setting: str = "",
    **tvars: Any,
) -> OperationMeta:
    """
    An apt repository trusted for its own signing key only, as each vendor's guide says,
    and only once the downloaded key is the pinned one.

    + name: the source file operation's name
    + key_name: the signing key operation's name
    + key_url: where the signing key is downloaded from
    + keyring: the key's path, in ``KEYRINGS`` (the source file names it in signed-by)
    + src: template of the source file (a ``.list`` line or a deb822 ``.sources``)
    + dest: remote path of the source file under /etc/apt/sources.list.d
    + proxy: HTTP proxy for the key's download
    + fingerprint: the key's pinned fingerprint; a new download of another key fails the
      run naming the repository, before the source file exists ("" refuses every key;
      None: not pinned, for callers not moved to a pin yet)
    + fingerprint_setting: the setting holding the pin, named when the check fails
    + tvars: template variables

    Returns the source file's operation: the package lists are read again when it changed.
    """
    if keyring.rpartition("/")[0] != KEYRINGS:
        raise ValueError(f"{name}: signing keys live in {KEYRINGS}, not {keyring}")
    files.directory(name="APT keyrings directory", path=KEYRINGS, mode="755")
    if fingerprint is not None:
        apt.packages(
            name="Tools to fetch and check signing keys",
            packages=["curl", "gnupg"],
            no_recommends=True,
        )
    # A key already in place is checked too: it may predate the pin (or a changed pin), and
    # download alone keeps any file that exists. Another key is fetched and checked again.
    found = host.get_fact(KeyFingerprints, path=keyring) if fingerprint is not None else None
    stale = found is not None and found != [fingerprint]
    key = files.download(
        name=key_name, src=key_url, dest=keyring, mode="644", proxy=proxy, force=stale
    )
    if fingerprint is not None:
        # Gated on the download, so the Ansible export makes it the download's handler; a
        # refused key is removed, so the next run downloads and checks it again.
        server.shell(
            name=f"{key_name}: fingerprint {fingerprint or '(none pinned)'}",
            commands=[
                fingerprint_check(
                    keyring, fingerprint, name, fingerprint_setting or "the role's settings"
                )
            ],
            _if=key.did_change,
        )
    return template(name, src, dest, **tvars)


def restart(
    name: str, service: str, when: Sequence[OperationMeta], daemon_reload: bool = False
) -> OperationMeta:
    """
    Restart ``service`` once when any of ``when`` changed the host, or when an earlier run
    died or failed before its restart (a marker in ``/var/lib/maha/pending-restart``); a
    plan shows it only then (exported to Ansible as a handler flushed from the marker).
    Each of ``when`` writes the marker before it changes anything: a run killed between
    writing a configuration and this restart leaves the restart owed.

    + name: the operation's name
    + service: the systemd unit
    + when: the operations whose change the running service must pick up
    + daemon_reload: reload systemd's units first (one of ``when`` is a unit file)
    """
    owed_before(service, when, reload=False)
    return restart_owed(name=name, service=service, when=list(when), daemon_reload=daemon_reload)


def reloaded(name: str, service: str, when: Sequence[OperationMeta]) -> OperationMeta:
    """
    Reload ``service`` once when any of ``when`` changed the host, or when an earlier run
    died or failed before its reload (a marker ``/var/lib/maha/pending-restart/<service>
    .reload``): a configuration written and never loaded is loaded by the next run.

    + name: the operation's name
    + service: the systemd unit (nginx, haproxy: reloaded without dropping connections)
    + when: the operations whose change the running service must load (its config)
    """
    owed_before(service, when, reload=True)
    return restart_owed(name=name, service=service, when=list(when), reload=True)


def release_restarted(
    name: str, service: str, when: Sequence[OperationMeta], root: str
) -> OperationMeta:
    """
    ``release.restarted`` for an app service, owed from before any of ``when`` changes the
    host: each records ``<root>/pending/<service>`` first (the release's own marker, holding
    the release ``current`` names, unless a switch already wrote one), so a run killed
    between a new unit or environment file and the restart leaves it owed; the release's
    health check removes the marker.

    + name: the operation's name
    + service: the systemd unit (maha-web, maha-worker)
    + when: the operations whose change the running service must pick up (unit,
      environment, the release switch)
    + root: the app root
    """
    record = StringCommand(release.owed_before_command(root, service))
    for op in when:
        send_first_when_changing(op, record)
    return release.restarted(name=name, service=service, when=list(when), root=root)


def owed_before(service: str, when: Sequence[OperationMeta], reload: bool) -> None:
    """Each of ``when`` records the restart (or reload) as owed on the host before it
    changes anything there: a run killed after a configuration is written and before its
    restart operation is reached still leaves the marker, and the next run restarts."""
    record = StringCommand(
        f"mkdir -p {shlex.quote(PENDING_RESTARTS)} && touch {shlex.quote(marker(service, reload))}"
    )
    for op in when:
        send_first_when_changing(op, record)
