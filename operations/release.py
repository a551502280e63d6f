"""Release operations: unpack, migrate, switch, restart, check, prune — Capistrano's and
Kamal's release layout as idempotent pyinfra operations.

Layout under the app root (``/srv/maha``)::

    tarballs/maha-<id>.tar.gz     what the operator pushed (files.put, by checksum)
    releases/<id>/                one unpacked release, read-only to the app user
        maha.env -> ../../shared/maha.env
        release.env               MAHA_RELEASE=<id>
    shared/maha.env               the environment, secrets included (0600, app user)
    current -> releases/<id>      what the services run; switched by rename
    previous -> releases/<id>     the rollback target, recorded at each switch

Release ids start with their UTC build time, so sorting them orders them by age.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File

MARKER = ".maha-release"  # written last inside a release: it is complete
MIGRATED = ".maha-migrated"  # this release's migrations ran to the end


@dataclass(frozen=True)
class ReleaseState:
    current: str | None = None
    previous: str | None = None
    releases: list[str] = field(default_factory=list)  # complete releases, oldest first

    def older_than(self, release_id: str) -> str | None:
        """The newest release older than ``release_id``: what "back one release" means."""
        older = [r for r in self.releases if r < release_id]
        return older[-1] if older else None


class Releases(FactBase[ReleaseState]):
    """
    The releases on a host: the complete ones, and where ``current`` and ``previous`` point.

    .. code:: python

        state = host.get_fact(Releases, root="/srv/maha")
        state.current  # "20260101T120000Z-abc1234" or None
    """

    def command(self, root: str) -> str:
        q = shlex.quote(root)
        return (
            f"cd {q} 2>/dev/null || exit 0; "
            'echo "current=$(readlink current)"; echo "previous=$(readlink previous)"; '
            f'for d in releases/*/; do [ -f "$d{MARKER}" ] && echo "release=$(basename "$d")"; '
            "done; true"
        )

    def process(self, output: Iterable[str]) -> ReleaseState:
        values: dict[str, str] = {}
        releases: list[str] = []
        for line in output:
            key, _, value = line.strip().partition("=")
            if key == "release":
                releases.append(value)
            elif key in ("current", "previous") and value:
                values[key] = value.rstrip("/").rsplit("/", 1)[-1]
        return ReleaseState(values.get("current"), values.get("previous"), sorted(releases))


def _dir(root: str, release_id: str) -> str:
    return f"{root}/releases/{release_id}"


def _switch(root: str, target_id: str, link: str = "current") -> str:
    """Shell for an atomic switch of ``link``: a new symlink renamed over the old one."""
    q = shlex.quote
    return (
        f"ln -sfn {q('releases/' + target_id)} {q(f'{root}/{link}.maha-new')} && "
        f"mv -T {q(f'{root}/{link}.maha-new')} {q(f'{root}/{link}')}"
    )


def changed(op: OperationMeta) -> bool:
    """Whether ``op`` changed its host; while planning, whether it would."""
    return op.did_change() if op.is_complete() else bool(op.will_change)


@operation()
def unpacked(tarball: str, release_id: str, root: str = "/srv/maha"):
    """
    Unpack a pushed release tarball into ``releases/<id>``, complete or not at all.

    + tarball: remote path of ``maha-<id>.tar.gz``
    + release_id: the release's id (its directory name)
    + root: the app root

    The release is unpacked beside its final place, linked to the shared environment
    file, given its ``release.env`` and renamed into place. Files stay root's: the app
    user can read its code but not change it. Nothing happens when the release is there.

    **Example:**

    .. code:: python

        unpacked(
            name="Unpack release",
            tarball="/srv/maha/tarballs/maha-20260101T120000Z-abc1234.tar.gz",
            release_id="20260101T120000Z-abc1234",
        )
    """
    if release_id in host.get_fact(Releases, root=root).releases:
        host.noop(f"release {release_id} is already unpacked")
        return
    final = _dir(root, release_id)
    partial = f"{final}.partial"
    q = shlex.quote
    yield StringCommand(
        f"rm -rf {q(partial)} && mkdir -p {q(partial)} && "
        f"tar -xzf {q(tarball)} -C {q(partial)} --no-same-owner && "
        f"ln -sfn ../../shared/maha.env {q(partial + '/maha.env')} && "
        f"printf 'MAHA_RELEASE=%s\\n' {q(release_id)} > {q(partial + '/release.env')} && "
        f"touch {q(partial + '/' + MARKER)} && rm -rf {q(final)} && mv -T {q(partial)} {q(final)}"
    )


@operation()
def migrated(
    release_id: str, user: str, root: str = "/srv/maha", command: str = "node src/migrate.js"
):
    """
    Run a release's schema migrations once, as the app user, before traffic moves to it.

    + release_id: the release whose migrations run
    + user: the app user (reads the 0600 environment file)
    + root: the app root
    + command: the migration command, run in the release directory

    Migrations are idempotent and serialised by the app (an advisory lock), so the
    marker written on success only saves the round trip on later runs.

    **Example:**

    .. code:: python

        migrated(name="Migrate the database", release_id="20260101T120000Z-abc1234",
                 user="maha-app")
    """
    directory = _dir(root, release_id)
    if host.get_fact(File, path=f"{directory}/{MIGRATED}"):
        host.noop(f"release {release_id} is already migrated")
        return
    q = shlex.quote
    inner = f"set -a; . ./maha.env; . ./release.env; set +a; exec {command}"
    yield StringCommand(
        f"cd {q(directory)} && runuser -u {q(user)} -- sh -c {q(inner)} && touch {MIGRATED}"
    )


@operation()
def current(release_id: str, root: str = "/srv/maha"):
    """
    Point ``current`` at a release, atomically, recording the old target as ``previous``.

    + release_id: the release to run
    + root: the app root

    A symlink made beside ``current`` is renamed over it (``mv -T``): at every instant
    ``current`` names a whole release. ``previous`` becomes the rollback target.

    **Example:**

    .. code:: python

        current(name="Switch to the release", release_id="20260101T120000Z-abc1234")
    """
    state = host.get_fact(Releases, root=root)
    if state.current == release_id:
        host.noop(f"release {release_id} is already current")
        return
    if state.current:
        yield StringCommand(_switch(root, state.current, link="previous"))
    yield StringCommand(_switch(root, release_id))


@operation(is_idempotent=False)
def rolled_back(services: Sequence[str], root: str = "/srv/maha"):
    """
    Go back one release: ``current`` to the newest release older than it, then restart.

    + services: systemd units running the release, restarted after the switch
    + root: the app root

    **Example:**

    .. code:: python

        rolled_back(name="Roll back one release", services=["maha-web"])
    """
    state = host.get_fact(Releases, root=root)
    target = state.older_than(state.current) if state.current else None
    if target is None:
        raise ValueError(f"{host.name}: no release older than {state.current} to go back to")
    yield StringCommand(_switch(root, state.current or target, link="previous"))
    yield StringCommand(_switch(root, target))
    for service in services:
        yield StringCommand(f"systemctl restart {shlex.quote(service)}")


@operation(is_idempotent=False)
def restarted(service: str, when: Sequence[OperationMeta]):
    """
    Restart a service when any of the given operations changed the host.

    + service: the systemd unit
    + when: operations (a switched release, a new unit or environment file)

    One restart however many of its inputs changed; in a dry run, shown only when one
    of them would change.

    **Example:**

    .. code:: python

        restarted(name="Restart maha-web", service="maha-web", when=[unit, env, switched])
    """
    if not any(changed(op) for op in when):
        host.noop(f"{service}: nothing it runs changed")
        return
    yield StringCommand(f"systemctl restart {shlex.quote(service)}")


@operation(is_idempotent=False)
def healthy(
    check: str,
    services: Sequence[str],
    when: Sequence[OperationMeta],
    root: str = "/srv/maha",
    retries: int = 30,
    interval: float = 1.0,
):
    """
    Check the running release; when it stays unhealthy, switch back to ``previous``,
    restart, and fail the deploy.

    + check: shell command that succeeds when the release is healthy
    + services: units to restart on the previous release after a failed check
    + when: run only if one of these operations changed the host (e.g. the restart)
    + root: the app root
    + retries: tries before giving up
    + interval: seconds between tries

    **Example:**

    .. code:: python

        healthy(
            name="Check the release",
            check="curl -fsS -o /dev/null http://127.0.0.1:3000/health",
            services=["maha-web"],
            when=[restart],
        )
    """
    if not any(changed(op) for op in when):
        host.noop("nothing restarted: no check needed")
        return
    q = shlex.quote
    restart = "; ".join(f"systemctl restart {q(s)}" for s in services) or "true"
    back = (
        f"bad=$(readlink {q(root + '/current')}); prev=$(readlink {q(root + '/previous')}); "
        'echo "release ${bad#releases/} failed its health check" >&2; '
        f'if [ -n "$prev" ] && [ "$prev" != "$bad" ]; then '
        f'ln -sfn "$prev" {q(root + "/current.maha-new")} && '
        f"mv -T {q(root + '/current.maha-new')} {q(root + '/current')} && {restart} && "
        'echo "switched back to ${prev#releases/}" >&2; '
        # the previous release serves again before the deploy reports its failure
        f"for j in $(seq {int(retries)}); do {check} && break; sleep {float(interval)}; done; "
        "fi; exit 1"
    )
    yield StringCommand(
        f"i=0; until {check}; do i=$((i+1)); if [ $i -ge {int(retries)} ]; then {back}; fi; "
        f"sleep {float(interval)}; done"
    )


@operation()
def pruned(keep: int, root: str = "/srv/maha"):
    """
    Delete old releases and their tarballs, keeping the newest ``keep`` and, always,
    ``current`` and ``previous`` (the rollback target).

    + keep: how many releases to keep
    + root: the app root

    **Example:**

    .. code:: python

        pruned(name="Keep the last 5 releases", keep=5)
    """
    state = host.get_fact(Releases, root=root)
    protected = {state.current, state.previous} | set(state.releases[-keep:])
    old = [r for r in state.releases if r not in protected]
    if not old:
        host.noop(f"{len(state.releases)} release(s), none to delete")
        return
    q = shlex.quote
    paths = " ".join(f"{q(_dir(root, r))} {q(f'{root}/tarballs/maha-{r}.tar.gz')}" for r in old)
    yield StringCommand(f"rm -rf {paths}")
