"""Planning and executing: each role's deploy planned for its hosts side by side, then
the plan run phase by phase (``mahaops.roles.PHASES``), each host at its own pace.

pyinfra's default executor waits for every host at every operation, so one host's slow
operation holds up all the others. Here hosts only meet between phases: clients still
find their servers configured (base, then data tier, then app tier, then the load
balancer), and within a phase each host goes on through its own operations.
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import gevent
from pyinfra.api import State
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_inventory, ctx_state

from mahaops import pyinfra_hooks
from mahaops.hosts import HostSpec
from mahaops.roles import PHASES, ROLE_BY_NAME, Role
from mahaops.runner import report
from mahaops.runner.state import host_roles
from mahaops.settings import from_data

if TYPE_CHECKING:
    from mahaops.release.tarball import Release

# -- what each operation is: pyinfra keeps names; the report needs functions and roles -------
op_funcs: dict[str, Callable[..., Any]] = {}  # op hash -> the operation's function
op_roles: dict[str, str] = {}  # op hash -> the role whose deploy added it
_planning_role = [""]


def _record(added: pyinfra_hooks.AddedOperation) -> None:
    op_funcs.setdefault(added.op_hash, added.func)
    op_roles.setdefault(added.op_hash, _planning_role[0])


def asking_role(host: Any) -> str:
    """The role whose operation (or deploy code, while planning) reads a fact now."""
    op_hash = getattr(host, "current_op_hash", None)
    return op_roles.get(op_hash, "") if op_hash else _planning_role[0]


# -- planning -----------------------------------------------------------------------------------


def _planned_hosts(state: State, role_: Role, specs: dict[str, HostSpec]) -> list[Any]:
    return [h for h in state.inventory.iter_activated_hosts() if role_ in host_roles(specs[h.name])]


def resolve_release(state: State, roles: Iterable[Role], hosts: list[HostSpec]) -> list[Release]:
    """Build or check the run's release once, before any host is planned.

    The app and worker deploys ask for it while hosts are planned side by side, in
    greenlets; a build there would hold its lock across greenlets of this one process.
    Asked here first, the deploys find the answer cached for the run.
    """
    try:
        from mahaops.release import for_run
    except ImportError:  # before the release package existed
        from mahaops.releases import for_run  # type: ignore[no-redef]
    from mahaops.settings.app import ReleaseSettings

    specs = {h.name: h for h in hosts}
    tarballs: set[str] = set()
    for role_ in roles:
        if role_.name not in ("app", "worker"):
            continue
        for host in _planned_hosts(state, role_, specs):
            settings = from_data(ReleaseSettings, host.data.dict())
            if not settings.app_rollback:  # a rollback pushes no release
                tarballs.add(settings.app_release_tarball)
    return [for_run(tarball) for tarball in sorted(tarballs)]


def plan(state: State, roles: list[Role], hosts: list[HostSpec]) -> list[Release]:
    """Call each role's deploy for its hosts, in role order, as pyinfra's CLI would
    (the run's release resolved first); returns the releases the run pushes."""
    pyinfra_hooks.install()
    pyinfra_hooks.on_operation_added(_record)
    pyinfra_hooks.order_by_deploy_line()
    releases = resolve_release(state, roles, hosts)
    specs = {h.name: h for h in hosts}
    state.set_stage(StateStage.Prepare)
    for number, role_ in enumerate(roles):
        module = importlib.import_module(f"deploys.{role_.name}")
        deploy_func = getattr(module, role_.name)
        state.current_op_file_number = number
        _planning_role[0] = role_.name
        with ctx_state.use(state), ctx_inventory.use(state.inventory):
            # Hosts are planned side by side, as pyinfra's CLI does: a deploy's facts are
            # round trips to its host, and ctx_host is greenlet-local.
            targets = _planned_hosts(state, role_, specs)
            greenlets = [state.pool.spawn(_plan_host, host, deploy_func) for host in targets]
            gevent.joinall(greenlets, raise_error=True)
    return releases


def _plan_host(host: Any, deploy_func: Callable[[], None]) -> None:
    with ctx_host.use(host):
        deploy_func()


# -- executing ----------------------------------------------------------------------------------

failures: list[report.Failure] = []  # the first failed operation of each failed host


def execute(state: State, progress: bool) -> None:
    """Run the plan phase by phase, each host on through its own operations."""
    state.set_stage(StateStage.Execute)
    state.is_executing = True
    order = state.get_op_order()
    with ctx_state.use(state), ctx_inventory.use(state.inventory):
        for phase in PHASES:
            hashes = [h for h in order if op_roles.get(h) in phase]
            hosts = [
                h for h in state.inventory.get_active_hosts() if set(hashes) & set(state.ops[h])
            ]
            if not hosts:
                continue
            greenlets = [
                state.pool.spawn(_run_host, state, host, hashes, progress) for host in hosts
            ]
            gevent.joinall(greenlets, raise_error=True)


def _run_host(state: State, host: Any, hashes: list[str], progress: bool) -> None:
    tally: dict[str, list[int]] = {}  # role -> [operations, changed]
    started = time.monotonic()

    def line(role_name: str, failed: str = "") -> None:
        if progress:
            ops, changed = tally[role_name]
            title = ROLE_BY_NAME[role_name].title
            report.role_line(host.name, title, ops, changed, time.monotonic() - started, failed)

    current = ""
    for op_hash in hashes:
        if op_hash not in state.ops[host]:
            continue
        role_name = op_roles[op_hash]
        if current and role_name != current:
            line(current)
        current = role_name
        counts = tally.setdefault(role_name, [0, 0])
        name = report.op_name(state, op_hash)
        report.host_errors.start(host.name)
        with report.still_on(host.name, ROLE_BY_NAME[role_name].title, name, enabled=progress):
            ok = pyinfra_hooks.run_operation(state, host, op_hash)
        counts[0] += 1
        meta = state.ops[host][op_hash].operation_meta
        if ok and meta.did_change():
            counts[1] += 1
        if not ok:
            line(role_name, failed=name)
            failures.append(
                report.Failure(
                    host=host.name,
                    role=ROLE_BY_NAME[role_name].title,
                    name=name,
                    operation=report.func_name(op_funcs.get(op_hash)),
                    lines=report.host_errors.tail(host.name),
                    apt_proxy=str(host.data.get("apt_proxy") or ""),
                )
            )
            with contextlib.suppress(PyinfraError):  # "No hosts remaining!": the summary says it
                state.fail_hosts({host})
            return
    if current:
        line(current)
