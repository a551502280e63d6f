"""Adding, removing and replacing hosts of a local environment (Docker), peers included.

Adding hosts of a role:
1. create them (or start stopped ones again), each marked ``/var/lib/maha/joining`` until
   it is in service, so a run that died half way is finished by the next one;
2. converge base on them; 3. the servers they use admit them (PostgreSQL's pg_hba and
   the firewalls of db, cache and log: ``plan.split_peers``); 4. converge their role;
5. the peers that send to them or use them (the load balancer; a new db's clients);
6. health-gated: a new app server must answer through the load balancer.
A failure after step 3 re-converges the peers without the new hosts, so none is left
admitting a host that never came up, and names the host.

Removing a host: out of service first (the load balancer stops sending it requests and
waits for those in flight; a worker's SIGTERM finishes or hands back its jobs), then its
peers re-converge without it, then the container goes (data volumes stay). A host that
is lost (its container stopped, or SSH silent) is not waited on.
"""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from docker.errors import NotFound

from mahaops.fleet.lock import STATE_DIR
from mahaops.hosts import HostSpec
from mahaops.lifecycle import haproxy
from mahaops.lifecycle import plan as planning
from mahaops.local.hosts import Environment, LocalHost
from mahaops.roles import role
from mahaops.runner import DeployResult, run_deploy
from mahaops.settings import GroupData
from mahaops.settings.local import check_shape

JOINING = "/var/lib/maha/joining"  # on a host created or restarted until it is in service
SSH_PROBE_S = 5.0  # a running host whose sshd says nothing for this long is lost


class LifecycleError(RuntimeError):
    """A step failed; the message names the host(s) and the step."""


@dataclass
class Row:
    host: str
    role: str
    action: str
    address: str = ""
    detail: str = ""


@dataclass
class Outcome:
    rows: list[Row] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    dry_output: list[DeployResult] = field(default_factory=list)


class Lifecycle:
    """One command's work on environment ``env``; ``say`` prints a progress line."""

    kind = "local"  # the environment's kind (``mahaops.hosts.kind_of``)

    def __init__(
        self,
        env: str,
        say: Callable[[str], None] = print,
        capture: bool = False,
        environment: Environment | None = None,
    ) -> None:
        self.env = env
        self.say = say
        self.capture = capture
        self.environment = environment or Environment(env)
        self.group_data = GroupData()
        self.outcome = Outcome()

    # -- what exists ------------------------------------------------------------------------

    def host_name(self, name: str) -> str:
        """The planning name (``app-1``) of what the operator typed."""
        return name

    def named(self, changes: planning.Changes) -> planning.Changes:
        """``changes`` with the hosts' own names (the inventory's)."""
        return changes

    def persist(self, role_name: str, count: int) -> None:
        """Keep ``count`` where the platform's shape is read (locally: the hosts are the
        truth, ``up`` never removes one; nothing to keep)."""

    def existing(self) -> list[planning.Existing]:
        found = []
        for container in self.environment.containers():
            container.reload()
            name = container.labels.get("maha.host", container.name)
            running = container.status == "running"
            found.append(planning.Existing(name, container.labels["maha.role"], running))
        return found

    def hosts(self) -> list[LocalHost]:
        return self.environment.hosts()

    def specs(self, without: Iterable[str] = ()) -> list[HostSpec]:
        gone = set(without)
        return [h.spec() for h in self.hosts() if h.name not in gone]

    def data_of(self, role_name: str) -> Mapping[str, Any]:
        return self.group_data.merged(("local", role(role_name).group))

    def peers(self, changed: str) -> dict[str, planning.Peer]:
        return planning.peer_roles(changed, self.data_of)

    def check(self, changes: planning.Changes) -> None:
        """The shape after ``changes`` is one the platform runs (else ValueError)."""
        after = planning.shape_after(changes, self.existing())
        check_shape({r: n for r, n in after.items() if r != "base"})

    # -- steps --------------------------------------------------------------------------------

    def _deploy(
        self,
        what: str,
        roles: Sequence[str],
        limit: Sequence[str],
        hosts: Sequence[HostSpec] | None = None,
        dry: bool = False,
        overrides: Mapping[str, Any] | None = None,
    ) -> DeployResult:
        self.say(f"{what}: {', '.join(roles)} on {', '.join(limit)}")
        mark = time.monotonic()
        result = run_deploy(
            self.env,
            roles=roles,
            limit=limit,
            dry=dry,
            hosts=hosts,
            overrides=overrides,
            capture=self.capture,
        )
        self.outcome.timings[what] = self.outcome.timings.get(what, 0) + time.monotonic() - mark
        if dry:
            self.outcome.dry_output.append(result)
        return result

    @staticmethod
    def _blame(result: DeployResult, candidates: Iterable[str]) -> list[str]:
        """Hosts a failed run names: unreachable ones, then those with a failed operation."""
        named = set(result.unreachable) | {op.host for op in result.failed}
        blamed = sorted(n for n in candidates if n in named)
        return blamed or sorted(named) or sorted(candidates)

    def peer_hosts(
        self, changed: str, peers: Iterable[planning.Peer], without: Iterable[str] = ()
    ) -> tuple[list[str], list[str]]:
        """(host names, roles to run) for ``peers`` among the running hosts."""
        wanted = {p.role for p in peers}
        gone = set(without)
        names = [h.name for h in self.hosts() if h.role in wanted and h.name not in gone]
        roles = sorted(
            {d for p in peers for d in p.deploys},
            key=lambda r: [
                "base",
                "db",
                "cache",
                "log",
                "mail",
                "storage",
                "app",
                "worker",
                "lb",
            ].index(r),
        )
        return names, roles

    def converge_peers(
        self,
        what: str,
        changed: str,
        peers: Sequence[planning.Peer],
        without: Iterable[str] = (),
        dry: bool = False,
        extra: Sequence[HostSpec] = (),
    ) -> list[str]:
        """Re-converge ``peers`` with the inventory as it is now, minus ``without``, plus
        ``extra`` (a planned host, for dry runs). Returns the peers' names."""
        gone = list(without)
        names, roles = self.peer_hosts(changed, peers, gone)
        if not names:
            return []
        hosts = [*self.specs(gone), *extra]
        result = self._deploy(what, roles, names, hosts=hosts, dry=dry)
        if not result.ok:
            raise LifecycleError(
                f"{what} failed on {', '.join(self._blame(result, names))}: see the tables above"
            )
        return names

    def _exec(self, name: str, command: str) -> tuple[int, str]:
        container = self.environment.client.containers.get(self.environment.container_name(name))
        code, output = container.exec_run(["sh", "-c", command])
        return int(code), output.decode(errors="replace")

    def _mark(self, name: str, joining: bool) -> None:
        script = f"mkdir -p {JOINING.rpartition('/')[0]} && touch {JOINING}"
        self._exec(name, script if joining else f"rm -f {JOINING}")

    def _repair_dpkg(self, name: str) -> None:
        """A host that died during a package install comes back with dpkg interrupted, and
        every apt command then refuses: finish the interrupted configuration first."""
        code, output = self._exec(name, "timeout 600 dpkg --configure -a")
        if code != 0:
            self.say(f"warning: {name}: dpkg --configure -a: {output.strip()[-300:]}")

    def joining(self, role_name: str) -> list[str]:
        """Running hosts of ``role_name`` that a former run created but never brought in."""
        found = []
        for host in self.hosts():
            if host.role == role_name and self._exec(host.name, f"test -f {JOINING}")[0] == 0:
                found.append(host.name)
        return found

    def release_overrides(self, role_name: str) -> dict[str, Any]:
        """A new app server or worker runs the release its siblings run, when that
        release's tarball is here (else the deploy's own choice: app/ as it is)."""
        if role_name not in ("app", "worker"):
            return {}
        from mahaops.fleet.status import releases_running
        from mahaops.release import DEFAULT_OUT_DIR, verify

        siblings = [h.spec() for h in self.hosts() if h.role == role_name]
        running = {r for r in releases_running(siblings).values() if "(" not in r}
        if len(running) != 1:
            return {}
        tarball = DEFAULT_OUT_DIR / f"maha-{running.pop()}.tar.gz"
        if tarball.is_file() and verify(tarball):
            return {"app_release_tarball": str(tarball)}
        return {}

    # -- adding ---------------------------------------------------------------------------------

    def add(self, changes: planning.Changes, dry: bool = False) -> list[str]:
        """Create/restart ``changes``' hosts and bring them into service (see the module)."""
        role_name = changes.role
        peers = self.peers(role_name)
        before, after = planning.split_peers(role_name, peers)
        if dry:
            if changes.create or changes.restart:
                return self._plan_add(changes, before, after)
            return []
        mark = time.monotonic()
        self._bring_up(changes)
        self.outcome.timings["create"] = time.monotonic() - mark
        new = sorted(set(changes.create) | set(changes.restart) | set(self.joining(role_name)))
        if not new:
            return []
        overrides = self.release_overrides(role_name)
        result = self._deploy("Converging base", ["base"], new)
        if not result.ok:
            raise LifecycleError(self._failed_join(result, new, "its base converge"))
        admitted = False
        try:
            admitted = True
            self.converge_peers("Admitting at the servers it uses", role_name, before)
            result = self._deploy(f"Converging {role_name}", [role_name], new, overrides=overrides)
            if not result.ok:
                raise LifecycleError(self._failed_join(result, new, f"its {role_name} converge"))
            self.converge_peers("Re-converging peers", role_name, after)
            self.gate(role_name, new)
        except Exception as exc:
            if admitted:
                self._revoke(role_name, [*before, *after], new)
            if isinstance(exc, LifecycleError):
                raise
            raise LifecycleError(f"adding {', '.join(new)}: {exc}") from exc
        for name in new:
            self._mark(name, False)
            if name not in changes.create:
                host = next((h for h in self.hosts() if h.name == name), None)
                address = host.private_address if host else ""
                self.outcome.rows.append(Row(name, role_name, "brought in", address))
        for row in self.outcome.rows:
            if row.host in new:
                row.detail = "in service"
        return new

    def _bring_up(self, changes: planning.Changes) -> None:
        """Create ``changes.create`` and start ``changes.restart`` again, marked joining."""
        image = self.environment.prepare(progress=self.say) if changes.create else ""
        for name in changes.restart:
            self.say(f"Starting {name} again")
            container = self.environment.client.containers.get(
                self.environment.container_name(name)
            )
            container.start()
            host = self.environment._host(container)
            if host:
                self.environment.wait_for_ssh(host)
        for name in changes.create:
            self.say(f"Creating host {name}")
            host = self.environment.create(changes.role, name=name, image=image)
            self._mark(name, True)
            self.outcome.rows.append(Row(name, changes.role, "created", host.private_address))
        for name in changes.restart:
            self._mark(name, True)
            self._repair_dpkg(name)

    # -- replacing a host that keeps data (takeover.py) ----------------------------------------

    def read_state(self, name: str) -> bytes | None:
        """``/var/lib/maha`` of host ``name`` (the deploy lock, the audit log) as a tar
        archive; None when it has none."""
        container = self.environment.client.containers.get(self.environment.container_name(name))
        try:
            chunks, _ = container.get_archive(STATE_DIR)
        except Exception:  # the host has no state directory yet
            return None
        return b"".join(chunks)

    def write_state(self, name: str, archive: bytes) -> None:
        """Unpack ``archive`` (``read_state``'s, filtered) into host ``name``'s /var/lib."""
        container = self.environment.client.containers.get(self.environment.container_name(name))
        container.put_archive(STATE_DIR.rpartition("/")[0], archive)

    def create_on_data(self, role_name: str, old: str, new: str) -> str:
        """Host ``new`` on ``old``'s data volumes, ``old`` stopped; ``new``'s address."""
        image = self.environment.prepare(progress=self.say)
        # Made while the old container still holds its address, so the clients' move is
        # real; nothing on the new host opens the data before its role converges.
        host = self.environment.create(role_name, name=new, image=image, data_of=old)
        container = self.environment.client.containers.get(self.environment.container_name(old))
        container.stop(timeout=30)
        return host.private_address

    def discard_replaced(self, old: str) -> None:
        """The replaced host goes; its data volumes stay (the new host's now)."""
        self.environment.remove([old], volumes=False)

    def _failed_join(self, result: DeployResult, new: Sequence[str], step: str) -> str:
        blamed = self._blame(result, new)
        return (
            f"{', '.join(blamed)} failed {step} (see the tables above); peers do not admit "
            f"it. Run the same command again to finish, or `invoke remove --env {self.env} "
            f"{blamed[0]}`"
        )

    def _revoke(self, role_name: str, peers: Sequence[planning.Peer], new: Sequence[str]) -> None:
        """Peers back to the inventory without ``new`` (which never came into service)."""
        try:
            self.converge_peers("Peers no longer admitting it", role_name, peers, without=new)
        except LifecycleError as exc:
            self.say(f"warning: {exc}")

    def gate(self, role_name: str, names: Sequence[str], timeout: float = 90.0) -> None:
        """A new app server is in service when it answers through the load balancer."""
        if role_name not in planning.SERVING_ROLES:
            return
        from mahaops.local import platform

        address = platform.url(self.hosts())
        if not address:
            return
        mark = time.monotonic()
        seen = platform.wait_for_lb(address, set(names), timeout=timeout)
        self.outcome.timings["in service"] = time.monotonic() - mark
        missing = sorted(set(names) - seen)
        if missing:
            raise LifecycleError(
                f"{', '.join(missing)} did not answer through the load balancer in {timeout:.0f} s"
            )
        self.say(f"{', '.join(names)} answer(s) through the load balancer")

    def _plan_add(
        self,
        changes: planning.Changes,
        before: Sequence[planning.Peer],
        after: Sequence[planning.Peer],
    ) -> list[str]:
        """Dry run: the peers' deploys planned with the new hosts in the inventory, at the
        addresses Docker will most likely give them (the next free ones)."""
        planned = []
        free = self._free_addresses(len(changes.create))
        for name, address in zip(changes.create, free, strict=True):
            spec = LocalHost(
                name, changes.role, self.env, self.environment.container_name(name), address, 0
            ).spec()
            planned.append(spec)
            self.outcome.rows.append(
                Row(name, changes.role, "would be created", address, "address predicted")
            )
        for name in changes.restart:
            self.outcome.rows.append(Row(name, changes.role, "would be started again"))
        names = self.converge_peers(
            "Planning peers", changes.role, [*before, *after], dry=True, extra=planned
        )
        for name in names:
            self.outcome.rows.append(Row(name, "", "would be re-converged", "", "diffs above"))
        return [s.name for s in planned]

    def _free_addresses(self, count: int) -> list[str]:
        network = self.environment.client.networks.get(self.environment.network_name)
        subnet = ipaddress.ip_network(network.attrs["IPAM"]["Config"][0]["Subnet"])
        used = {h.private_address for h in self.hosts()}
        gateway = network.attrs["IPAM"]["Config"][0].get("Gateway")
        used.add(str(gateway or next(subnet.hosts())))
        free = []
        for address in subnet.hosts():
            if str(address) not in used:
                free.append(str(address))
                if len(free) == count:
                    break
        return free

    # -- removing -------------------------------------------------------------------------------

    def reachable(self, name: str) -> bool:
        host = next((h for h in self.hosts() if h.name == name), None)
        if host is None:
            return False
        try:
            Environment.wait_for_ssh(host, timeout=SSH_PROBE_S)
        except TimeoutError:
            return False
        return True

    def take_out(self, name: str, role_name: str) -> str:
        """Out of service, bounded: what happened, for the results table."""
        if role_name == "app":
            lb = next((h for h in self.hosts() if h.role == "lb"), None)
            note = "no load balancer"
            if lb is not None:
                self.say(f"Draining {name} at {lb.name}")
                known, left = haproxy.take_out(lb.spec(), name)
                note = "drained" if known and not left else "not a backend"
                if left:
                    note = f"{left} request(s) still open after the drain timeout"
            # Its clients (WebSockets) are told to reconnect; then nginx stops.
            self._exec(name, "timeout 60 systemctl stop maha-web nginx")
            return note
        if role_name == "worker":
            self.say(f"Stopping {name}'s worker: it finishes or hands back its jobs")
            code, output = self._exec(name, "timeout 180 systemctl stop maha-worker")
            return "jobs finished or handed back" if code == 0 else f"stop: {output.strip()}"
        return "stopped with its container"

    def remove(self, changes: planning.Changes, dry: bool = False) -> list[str]:
        """Take ``changes.remove`` out of service, re-converge peers, remove the containers."""
        role_name = changes.role
        peers = list(self.peers(role_name).values())
        if dry:
            for name in changes.remove:
                lost = name in changes.lost or not self.reachable(name)
                what = "lost: nothing to drain" if lost else self._drain_plan(role_name)
                self.outcome.rows.append(Row(name, role_name, "would be removed", "", what))
            names = self.converge_peers(
                "Planning peers", role_name, peers, without=changes.remove, dry=True
            )
            for name in names:
                self.outcome.rows.append(Row(name, "", "would be re-converged", "", "diffs above"))
            return changes.remove
        notes = {}
        for name in changes.remove:
            if name in changes.lost or not self.reachable(name):
                self.say(f"{name} is lost: nothing to drain, nothing waits on it")
                notes[name] = "lost: not drained"
            else:
                notes[name] = self.take_out(name, role_name)
        self.converge_peers("Peers without it", role_name, peers, without=changes.remove)
        for name in changes.remove:
            address = self._discard(name)
            self.outcome.rows.append(Row(name, role_name, "removed", address, notes[name]))
        return changes.remove

    def _discard(self, name: str) -> str:
        """The host goes (its data volumes stay); returns the address it had."""
        address = next((h.private_address for h in self.hosts() if h.name == name), "")
        self.say(f"Removing {name}")
        with contextlib.suppress(NotFound):  # gone already: removing is done
            self.environment.remove([name], volumes=False)
        return address

    @staticmethod
    def _drain_plan(role_name: str) -> str:
        if role_name == "app":
            return "drained at the load balancer, then stopped"
        if role_name == "worker":
            return "worker stopped: finishes or hands back its jobs"
        return "stopped with its container"
