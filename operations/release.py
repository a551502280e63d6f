"""Release operations: unpack, migrate, switch, restart, check, prune — Capistrano's and
Kamal's release layout as idempotent pyinfra operations.

Layout under the app root (``/srv/maha``)::

    tarballs/maha-<id>.tar.gz     what the operator pushed (files.put, by checksum)
    releases/<id>/                one unpacked release, read-only to the app user
        maha.env -> ../../shared/maha.env
        release.env               MAHA_RELEASE=<id>
    shared/maha.env               the environment, secrets included (0600, app user)
    current -> releases/<id>      what the services run; switched by rename
    previous -> releases/<id>     the release before, recorded at each switch
    pending/<service>             a restart is owed: written before a switch, removed after
                                  a passing check (a run killed in between leaves it)
    release-history               one line per switch a release made:
                                  ``<epoch> <release id> <release before it or ->``

Release ids start with their UTC build time, so sorting them orders them by age.

What a host *runs* is read from the process itself: the ``MAHA_RELEASE`` in the
environment of each service's main process (systemd loads it from ``current/release.env``
at start), never inferred from the ``current`` symlink.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File

from operations.changes import changed

MARKER = ".maha-release"  # written last inside a release: it is complete
MIGRATED = ".maha-migrated"  # this release's migrations ran to the end
PENDING = "pending"  # pending/<service>: a restart and check still owed
HISTORY = "release-history"
SERVICES = ("maha-web", "maha-worker")  # the units that run a release
BREAKING_ENV = "MAHA_ALLOW_BREAKING"  # read by the app's migrate.js


@dataclass(frozen=True)
class ReleaseState:
    current: str | None = None
    previous: str | None = None
    releases: list[str] = field(default_factory=list)  # complete releases, oldest first
    pending: dict[str, str] = field(default_factory=dict)  # service -> release it switched to
    running: dict[str, str] = field(default_factory=dict)  # service -> MAHA_RELEASE of its process
    last_release: str | None = None  # the last release a switch moved this host to...
    last_before: str | None = None  # ...the release this host ran before it...
    last_at: int = 0  # ...and when (epoch seconds)

    def needs_restart(self, service: str) -> bool:
        """A restart is owed (a marker), or the process runs a release other than current."""
        return service in self.pending or (
            self.current is not None and self.running.get(service) != self.current
        )


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
            "done; "
            f'[ -f {HISTORY} ] && echo "history=$(tail -n 1 {HISTORY})"; '
            f'for f in {PENDING}/*; do [ -f "$f" ] && '
            f'echo "pending.${{f#{PENDING}/}}=$(cat "$f")"; '
            f"done; for s in {' '.join(SERVICES)}; do "
            f"{running_release('$s', 'running.$s=')}; done; true"
        )

    def process(self, output: Iterable[str]) -> ReleaseState:
        values: dict[str, str] = {}
        releases: list[str] = []
        pending: dict[str, str] = {}
        running: dict[str, str] = {}
        history: list[str] = []
        for line in output:
            key, _, value = line.strip().partition("=")
            kind, _, service = key.partition(".")
            if key == "release":
                releases.append(value)
            elif key in ("current", "previous") and value:
                values[key] = value.rstrip("/").rsplit("/", 1)[-1]
            elif key == "history":
                history = value.split()
            elif kind == "pending" and service:
                pending[service] = value
            elif kind == "running" and service:
                running[service] = value
        at, last, before = history if len(history) == 3 else ("0", "", "")
        return ReleaseState(
            values.get("current"),
            values.get("previous"),
            sorted(releases),
            pending,
            running,
            last or None,
            None if before in ("", "-") else before,
            int(at) if at.isdigit() else 0,
        )


class ReleasesJson(Releases):
    """The :class:`Releases` fact as plain data, for pyinfra's ``fact --json`` (what the
    operator's side reads to pick a rollback target across the fleet)."""

    def process(self, output: Iterable[str]) -> dict[str, Any]:  # type: ignore[override]
        return asdict(super().process(output))


def running_release(service: str, prefix: str = "") -> str:
    """Shell printing ``prefix`` and the MAHA_RELEASE of ``service``'s main process (nothing
    when it does not run): what the process runs, not what ``current`` says. Read as the
    process's own user: root without CAP_SYS_PTRACE (a container) may not read it."""
    return (
        f'p=$(systemctl show -p MainPID --value "{service}" 2>/dev/null); '
        f'[ "${{p:-0}}" != 0 ] && echo "{prefix}$(runuser -u "$(stat -c %U /proc/$p)" -- '
        'cat /proc/$p/environ 2>/dev/null | tr "\\0" "\\n" | '
        "sed -n 's/^MAHA_RELEASE=//p')\""
    )


def _dir(root: str, release_id: str) -> str:
    return f"{root}/releases/{release_id}"


def _switch(root: str, target_id: str, link: str = "current") -> str:
    """Shell for an atomic switch of ``link``: a new symlink renamed over the old one."""
    q = shlex.quote
    return (
        f"ln -sfn {q('releases/' + target_id)} {q(f'{root}/{link}.maha-new')} && "
        f"mv -T {q(f'{root}/{link}.maha-new')} {q(f'{root}/{link}')}"
    )


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
    release_id: str,
    user: str,
    root: str = "/srv/maha",
    command: str = "node src/migrate.js",
    allow_breaking: bool = False,
):
    """
    Run a release's schema migrations once, as the app user, before traffic moves to it.

    + release_id: the release whose migrations run
    + user: the app user (reads the 0600 environment file)
    + root: the app root
    + command: the migration command, run in the release directory
    + allow_breaking: apply migrations marked ``-- maha: breaking`` (the app refuses them
      otherwise: hosts still on the old release would break during the roll)

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
    allow = f"{BREAKING_ENV}=1; " if allow_breaking else ""
    inner = f"set -a; . ./maha.env; . ./release.env; {allow}set +a; exec {command}"
    yield StringCommand(
        f"cd {q(directory)} && runuser -u {q(user)} -- sh -c {q(inner)} && touch {MIGRATED}"
    )


def owed_command(root: str, services: Sequence[str], release_id: str) -> str:
    """Shell writing the pending-restart markers: written before a switch, so a run killed
    after it leaves them for the next run to finish (restart and check)."""
    q = shlex.quote
    marks = " && ".join(
        f"printf '%s\\n' {q(release_id)} > {q(f'{root}/{PENDING}/{s}')}" for s in services
    )
    return f"mkdir -p {q(f'{root}/{PENDING}')}" + (f" && {marks}" if marks else "")


def owed_before_command(root: str, service: str) -> str:
    """Shell recording a restart of ``service`` as owed before a new unit or environment
    file is written (``pending/<service>``, holding the release ``current`` names); a
    marker already there (a switch's, naming the release it moved to) is kept."""
    q = shlex.quote
    pending, mark = f"{root}/{PENDING}", f"{root}/{PENDING}/{service}"
    running = f"readlink {q(root + '/current')} | sed 's|^releases/||'"
    return f"mkdir -p {q(pending)} && {{ [ -e {q(mark)} ] || {running} > {q(mark)}; }}"


@operation()
def current(release_id: str, root: str = "/srv/maha", services: Sequence[str] = ()):
    """
    Point ``current`` at a release, atomically, recording the old target as ``previous``.

    + release_id: the release to run
    + root: the app root
    + services: units owed a restart once ``current`` moves (``pending/<service>``)

    A symlink made beside ``current`` is renamed over it (``mv -T``): at every instant
    ``current`` names a whole release. Before the switch each service gets its pending
    marker and ``release-history`` a line (the release, and the one this host ran before
    it: what ``invoke rollback`` goes back to).

    **Example:**

    .. code:: python

        current(name="Switch to the release", release_id="20260101T120000Z-abc1234",
                services=["maha-web"])
    """
    state = host.get_fact(Releases, root=root)
    if state.current == release_id:
        host.noop(f"release {release_id} is already current")
        return
    q = shlex.quote
    yield StringCommand(
        f"{owed_command(root, services, release_id)} && printf '%s %s %s\\n' \"$(date +%s)\" "
        f"{q(release_id)} {q(state.current or '-')} >> {q(f'{root}/{HISTORY}')}"
    )
    if state.current:
        yield StringCommand(_switch(root, state.current, link="previous"))
    yield StringCommand(_switch(root, release_id))


def schema_guard(root: str, target_id: str, user: str) -> str:
    """Shell failing when the database's schema is newer than ``target_id``'s migrations:
    the newest version in ``schema_migrations`` (read by the app's ``src/schema-version.js``
    of the current release, else the target's) against the newest ``migrations/NNN_*.sql``
    the target ships."""
    q = shlex.quote
    target = _dir(root, target_id)
    inner = "set -a; . ./maha.env; . ./release.env; set +a; exec node src/schema-version.js"
    return (
        f"shipped=$(ls {q(target + '/migrations')} 2>/dev/null | "
        "sed -n 's/^\\([0-9][0-9]*\\)_.*\\.sql$/\\1/p' | sort | tail -n 1); "
        f"for d in {q(root + '/current')} {q(target)}; do "
        f'[ -f "$d/src/schema-version.js" ] && break; done; '
        f'applied=$(cd "$d" && runuser -u {q(user)} -- sh -c {q(inner)}) || '
        "{ echo \"cannot read the database's schema version: roll back with --force to skip "
        'this check" >&2; exit 1; }; '
        # test(1) reads 003 as 3 (base 10)
        'if [ "${applied:-0}" -gt "${shipped:-0}" ]; then '
        f'echo "refusing to roll back to {target_id}: the database is at migration $applied, '
        'the release knows migrations up to ${shipped:-none} (--force to roll back anyway)" >&2; '
        "exit 1; fi"
    )


@operation()
def rolled_back(
    target: str,
    services: Sequence[str],
    user: str = "maha-app",
    root: str = "/srv/maha",
    force: bool = False,
):
    """
    Point ``current`` at an older release ``target``, then restart its services.

    + target: the release id to run (it must be unpacked on this host)
    + services: systemd units running the release, restarted after the switch
    + user: the app user (reads the environment to ask the database its schema version)
    + root: the app root
    + force: roll back even when the database's schema is newer than ``target`` knows

    Nothing happens on a host already running ``target`` with no restart owed: a second
    rollback changes nothing. ``release-history`` is left alone (a rollback is not a
    release), so the target stays the same however often it runs.

    **Example:**

    .. code:: python

        rolled_back(name="Roll back", target="20260101T120000Z-abc1234",
                    services=["maha-web"])
    """
    state = host.get_fact(Releases, root=root)
    if target not in state.releases:
        raise ValueError(f"{host.name}: release {target} is not on this host")
    if state.current == target and not any(state.needs_restart(s) for s in services):
        host.noop(f"{host.name} already runs {target}")
        return
    if not force:
        yield StringCommand(schema_guard(root, target, user))
    yield StringCommand(owed_command(root, services, target))
    if state.current and state.current != target:
        yield StringCommand(_switch(root, state.current, link="previous"))
    yield StringCommand(_switch(root, target))
    for service in services:
        yield StringCommand(f"systemctl restart {shlex.quote(service)}")


@operation(is_idempotent=False)
def restarted(service: str, when: Sequence[OperationMeta], root: str | None = None):
    """
    Restart a service when any of the given operations changed the host, or, given the
    app ``root``, when a restart is still owed there.

    + service: the systemd unit
    + when: operations (a switched release, a new unit or environment file)
    + root: the app root: also restart when ``pending/<service>`` is there (an earlier run
      died before its restart or check) or the process runs another release than ``current``

    One restart however many of its inputs changed; in a dry run, shown only when one
    of them would change.

    **Example:**

    .. code:: python

        restarted(name="Restart maha-web", service="maha-web", when=[unit, env, switched],
                  root="/srv/maha")
    """
    owed = root is not None and host.get_fact(Releases, root=root).needs_restart(service)
    if not owed and not any(changed(op) for op in when):
        host.noop(f"{service}: nothing it runs changed")
        return
    yield StringCommand(f"systemctl restart {shlex.quote(service)}")


def _runs_current(root: str, services: Sequence[str]) -> str:
    """Shell succeeding when every service's process runs the release ``current`` names."""
    q = shlex.quote
    want = f'"$(readlink {q(root + "/current")} | sed "s|^releases/||")"'
    return " && ".join(f'[ "$({running_release(s)})" = {want} ]' for s in services) or "true"


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

    Healthy means the check passes *and* each service's process runs the release
    ``current`` names; only then are the services' pending markers removed.

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
    settled = "rm -f " + " ".join(q(f"{root}/{PENDING}/{s}") for s in services)
    back = (
        f"bad=$(readlink {q(root + '/current')}); prev=$(readlink {q(root + '/previous')}); "
        'echo "release ${bad#releases/} failed its health check" >&2; '
        f'if [ -n "$prev" ] && [ "$prev" != "$bad" ]; then '
        f'ln -sfn "$prev" {q(root + "/current.maha-new")} && '
        f"mv -T {q(root + '/current.maha-new')} {q(root + '/current')} && {restart} && "
        'echo "switched back to ${prev#releases/}" >&2; '
        # the previous release serves again before the deploy reports its failure
        f"for j in $(seq {int(retries)}); do {check} && {settled} && break; "
        f"sleep {float(interval)}; done; "
        "fi; exit 1"
    )
    # A passing check counts only from the release current names: else the restart owed
    # stays recorded and the next run tries again.
    wrong = f'echo "{", ".join(services)} does not run the release current names" >&2; exit 1'
    yield StringCommand(
        f"i=0; until {check}; do i=$((i+1)); if [ $i -ge {int(retries)} ]; then {back}; fi; "
        f"sleep {float(interval)}; done; "
        f"if {_runs_current(root, services)}; then {settled}; else {wrong}; fi"
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


def _history_kept(keep: int) -> str:
    """Shell printing the lines of ``release-history`` a trim keeps: the last ``keep`` and,
    older than those, every line of the releases ``current`` and ``previous`` name."""
    return (
        f"total=$(wc -l < {HISTORY}); cur=$(readlink current); prev=$(readlink previous); "
        f'awk -v total="$total" -v keep={int(keep)} -v cur="${{cur#releases/}}" '
        '-v prev="${prev#releases/}" '
        f"'NR > total - keep || $2 == cur || $2 == prev' {HISTORY}"
    )


class HistoryTrimmable(FactBase[int]):
    """
    How many lines of ``release-history`` a trim to ``keep`` lines would remove.

    .. code:: python

        host.get_fact(HistoryTrimmable, root="/srv/maha", keep=100)  # 0: nothing to trim
    """

    @staticmethod
    def default() -> int:
        return 0

    def command(self, root: str, keep: int) -> str:
        return (
            f"cd {shlex.quote(root)} 2>/dev/null && [ -f {HISTORY} ] || exit 0; "
            f"echo $(( $(wc -l < {HISTORY}) - $({_history_kept(keep)} | wc -l) ))"
        )

    def process(self, output: Iterable[str]) -> int:
        text = "".join(output).strip()
        return int(text) if text.isdigit() else 0


def history_trim_command(keep: int, root: str = "/srv/maha") -> str:
    """Shell trimming ``release-history`` as :class:`HistoryTrimmable` counts it; prints
    ``trimmed`` when it removed lines. Decides from the host alone (the Ansible export runs
    it as it is)."""
    return (
        f"cd {shlex.quote(root)} 2>/dev/null && [ -f {HISTORY} ] || exit 0; "
        f"{_history_kept(keep)} > {HISTORY}.maha-new && "
        f"if cmp -s {HISTORY} {HISTORY}.maha-new; then rm -f {HISTORY}.maha-new; "
        f'else mv {HISTORY}.maha-new {HISTORY} && echo "trimmed {HISTORY}"; fi'
    )


@operation()
def history_trimmed(keep: int, root: str = "/srv/maha"):
    """
    Keep ``release-history`` to its last ``keep`` lines (one per switch), never dropping
    a line of the release ``current`` or ``previous`` names.

    + keep: how many of the newest lines to keep
    + root: the app root

    ``invoke rollback`` reads only the newest line (the last switch and the release before
    it), so a bounded history loses nothing it needs.

    **Example:**

    .. code:: python

        history_trimmed(name="Keep the last 100 switches in release-history", keep=100)
    """
    excess = host.get_fact(HistoryTrimmable, root=root, keep=keep)
    if not excess:
        host.noop(f"release-history holds no more than the {keep} newest switches")
        return
    yield StringCommand(history_trim_command(keep, root))
