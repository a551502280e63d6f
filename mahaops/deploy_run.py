"""Runs role deploys through pyinfra's Python API: ``python -m mahaops.deploy_run``.

A process of its own, because pyinfra's parallelism needs gevent's monkey patching,
which must happen before anything else is imported and must not leak into the
operator's task runner or the test process. Everything it prints passes through
``mahaops.masking``; with ``--json`` it also writes each operation's outcome.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402
import argparse
import importlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO, cast

import gevent
import pyinfra
from pyinfra.api import Config, Inventory, State

pyinfra_operation = importlib.import_module("pyinfra.api.operation")
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operation import OperationMeta
from pyinfra.api.operations import _run_host_op_with_context  # one host, one operation
from pyinfra.api.state import StateStage
from pyinfra.context import ctx_host, ctx_inventory, ctx_state
from rich.console import Console
from rich.table import Table

from mahaops import factcache, masking, pyinfra_speedups, secrets
from mahaops.inventory import HostSpec, discover, kind_of
from mahaops.roles import BASE, PHASES, ROLE_BY_GROUP, ROLE_BY_NAME, ROLES, Role, role
from mahaops.settings import DEFAULT_GROUP_DATA, GroupData, SettingsError, all_models, from_data
from mahaops.settings import parse_overrides as parse_set
from operations.facts import use_fast_users

sys.stdout = cast(TextIO, masking.MaskingStream(cast(TextIO, sys.__stdout__)))
sys.stderr = cast(TextIO, masking.MaskingStream(cast(TextIO, sys.__stderr__)))
console = Console(file=sys.stdout, highlight=False, soft_wrap=True)


class UsageError(Exception):
    pass


# -- which operation function each op hash came from ------------------------------------------
# pyinfra keeps names, not functions; we record the function to report operations that
# pyinfra itself declares non-idempotent.
_op_funcs: dict[str, Callable[..., Any]] = {}
_op_roles: dict[str, str] = {}  # op hash -> role whose deploy added it
_planning_role = [""]
_pending: list[Callable[..., Any]] = []
_orig_name = pyinfra_operation.generate_operation_name
_orig_meta = pyinfra_operation.ensure_shared_op_meta


def _record_name(func, host, kwargs, global_arguments):
    _pending.append(func)
    return _orig_name(func, host, kwargs, global_arguments)


def _record_meta(state, op_hash, *args):
    if _pending:
        _op_funcs.setdefault(op_hash, _pending.pop())
    _op_roles.setdefault(op_hash, _planning_role[0])
    return _orig_meta(state, op_hash, *args)


setattr(pyinfra_operation, "generate_operation_name", _record_name)  # noqa: B010
setattr(pyinfra_operation, "ensure_shared_op_meta", _record_meta)  # noqa: B010


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mahaops.deploy_run")
    parser.add_argument("--env", default="local")
    parser.add_argument("--role", action="append", default=[], help="role(s) to deploy")
    parser.add_argument("--limit", action="append", default=[], help="host or group names")
    parser.add_argument("--dry", action="store_true", help="plan with diffs, change nothing")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--group-data", type=Path, default=DEFAULT_GROUP_DATA)
    parser.add_argument("--hosts-json", type=Path, help="hosts instead of discovery (tests)")
    parser.add_argument("--json", type=Path, help="write the outcome of each operation here")
    parser.add_argument("--quiet", action="store_true", help="no progress, warnings only")
    parser.add_argument("--verbose", action="store_true", help="pyinfra's own per-host lines")
    return parser.parse_args(argv)


def load_hosts(args: argparse.Namespace, group_data: GroupData) -> tuple[str, list[HostSpec]]:
    kind = kind_of(args.env, group_data.files)
    if args.hosts_json:
        raw = json.loads(args.hosts_json.read_text())
        return kind, [HostSpec(h["name"], tuple(h["groups"]), h["data"]) for h in raw]
    return kind, discover(kind, args.env)


def select_roles(names: list[str]) -> list[Role]:
    if not names:
        return [BASE, *ROLES]
    wanted = {role(n).name for n in names}  # raises on an unknown role
    return [r for r in (BASE, *ROLES) if r.name in wanted]


def host_roles(spec: HostSpec) -> list[Role]:
    return [BASE, *(ROLE_BY_GROUP[g] for g in spec.groups if g in ROLE_BY_GROUP)]


def check_host_settings(spec: HostSpec, data: dict[str, Any]) -> None:
    for model in all_models():
        try:
            from_data(model, data)
        except Exception as exc:
            raise SettingsError(f"host {spec.name}", "-", str(exc)) from None


def build_state(
    hosts: list[HostSpec], group_data: GroupData, overrides: dict[str, Any], dry: bool
) -> State:
    names_data = []
    groups: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for spec in hosts:
        data = group_data.merged(spec.groups, spec.data, overrides)
        check_host_settings(spec, data)
        names_data.append((spec.name, data))
        for group in spec.groups:
            groups.setdefault(group, ([], {}))[0].append(spec.name)
    inventory = Inventory((names_data, {}), **groups)
    config = Config(
        PARALLEL=max(1, len(hosts)),
        SUDO=True,
        CONNECT_TIMEOUT=15,
        DIFF=dry,
        FAIL_PERCENT=100,  # one host failing does not stop the others; the summary shows it
    )
    # Planning evaluates each operation against the host (and logs diffs) only in dry runs;
    # a real run evaluates once, while executing.
    return State(inventory, config, check_for_changes=dry)


def plan(state: State, roles: list[Role], hosts: list[HostSpec]) -> None:
    """Call each role's deploy for its hosts, in role order, as pyinfra's CLI would."""
    specs = {h.name: h for h in hosts}
    pyinfra.is_cli = True  # order operations by deploy file, then line, across hosts
    state.set_stage(StateStage.Prepare)
    for number, role_ in enumerate(roles):
        module = importlib.import_module(f"deploys.{role_.name}")
        deploy_func = getattr(module, role_.name)
        state.current_op_file_number = number
        _planning_role[0] = role_.name
        with ctx_state.use(state), ctx_inventory.use(state.inventory):
            # Hosts are planned side by side, as pyinfra's CLI does: a deploy's facts are
            # round trips to its host, and ctx_host is greenlet-local.
            targets = [
                h
                for h in state.inventory.iter_activated_hosts()
                if role_ in host_roles(specs[h.name])
            ]
            greenlets = [state.pool.spawn(_plan_host, host, deploy_func) for host in targets]
            gevent.joinall(greenlets, raise_error=True)


def execute(state: State, report: bool) -> None:
    """Run the plan phase by phase (``PHASES``), each host on through its own operations.

    pyinfra's default waits for every host at every operation, so a role's operations on
    one host hold up every other host's. Here hosts only meet between phases: clients
    still find their servers configured (base, then data tier, then app tier, then the
    load balancer), and within a phase each host goes at its own pace.
    """
    state.is_executing = True
    order = state.get_op_order()
    for phase in PHASES:
        hashes = [h for h in order if _op_roles.get(h) in phase]
        hosts = [h for h in state.inventory.get_active_hosts() if set(hashes) & set(state.ops[h])]
        if not hosts:
            continue
        greenlets = [state.pool.spawn(_run_host, state, host, hashes, report) for host in hosts]
        gevent.joinall(greenlets, raise_error=True)


def _run_host(state: State, host: Any, hashes: list[str], report: bool) -> None:
    tally: dict[str, list[int]] = {}  # role -> [operations, changed]
    started = time.monotonic()

    def line(role_name: str, failed: str = "") -> None:
        if not report:
            return
        ops, changed = tally[role_name]
        what = (
            f"[red]failed: {masking.mask(failed)}[/]"
            if failed
            else (f"[yellow]{changed} changed[/]" if changed else "[dim]no change[/]")
        )
        console.print(
            f"[bold]{host.name}[/] {ROLE_BY_NAME[role_name].title}: {ops} operations, {what} "
            f"[dim]({time.monotonic() - started:.1f}s)[/]"
        )

    current = ""
    for op_hash in hashes:
        if op_hash not in state.ops[host]:
            continue
        role_name = _op_roles[op_hash]
        if current and role_name != current:
            line(current)
        current = role_name
        counts = tally.setdefault(role_name, [0, 0])
        ok = _run_host_op_with_context(state, host, op_hash)
        counts[0] += 1
        meta = state.ops[host][op_hash].operation_meta
        if ok and meta.did_change():
            counts[1] += 1
        if not ok:
            names = state.op_meta[op_hash].names
            line(role_name, failed=sorted(names)[0] if names else op_hash)
            state.fail_hosts({host})
            return
    if current:
        line(current)


def _asking_role(host: Any) -> str:
    """The role whose operation (or deploy code, while planning) reads a fact now."""
    op_hash = getattr(host, "current_op_hash", None)
    return _op_roles.get(op_hash, "") if op_hash else _planning_role[0]


def _plan_host(host: Any, deploy_func: Callable[[], None]) -> None:
    with ctx_host.use(host):
        deploy_func()


def outcomes(state: State, dry: bool) -> list[dict[str, Any]]:
    results = []
    for op_hash in state.get_op_order():
        meta = state.op_meta[op_hash]
        name = sorted(meta.names)[0] if meta.names else op_hash
        func = _op_funcs.get(op_hash)
        for host in state.inventory:
            host_ops = state.ops.get(host, {})
            if op_hash not in host_ops:
                continue
            op_meta = host_ops[op_hash].operation_meta
            if dry:
                with ctx_state.use(state), ctx_inventory.use(state.inventory), ctx_host.use(host):
                    would = op_meta.will_change and _condition_holds(host_ops[op_hash])
                    status = "changed" if would else "unchanged"
            elif not op_meta.is_complete():
                status = "skipped"
            elif op_meta.did_error():
                status = "failed"
            else:
                status = "changed" if op_meta.did_change() else "unchanged"
            results.append(
                {
                    "host": host.name,
                    "name": masking.mask(name),
                    "status": status,
                    "operation": _func_name(func),
                    "idempotent": bool(getattr(func, "is_idempotent", True)),
                }
            )
    return results


def _condition_holds(op_data: Any) -> bool:
    """In a dry run, whether an ``_if`` guard would let the operation run.

    pyinfra checks ``_if`` only while executing; a plan must check it too, or every
    "restart when the config changed" would show as a change. ``op.did_change`` guards
    are answered by what the guarding operation *would* do.
    """
    guards = op_data.global_arguments.get("_if")
    if guards is None:
        return True
    for guard in guards if isinstance(guards, list) else [guards]:
        owner = getattr(guard, "__self__", None)
        if isinstance(owner, OperationMeta) and guard.__name__ == "did_change":
            if not owner.will_change:
                return False
            continue
        try:
            if not guard():
                return False
        except RuntimeError:  # depends on a result only execution can give: assume it runs
            continue
    return True


def _func_name(func: Callable[..., Any] | None) -> str:
    if func is None:
        return "?"
    return f"{func.__module__.replace('pyinfra.operations.', '')}.{func.__name__}"


def summary(results: list[dict[str, Any]], dry: bool, elapsed: float) -> None:
    verb = "would change" if dry else "changed"
    table = Table(title=f"{'Plan' if dry else 'Result'} ({elapsed:.1f}s)", title_justify="left")
    table.add_column("host")
    table.add_column("operations", justify="right")
    table.add_column(verb, justify="right")
    table.add_column("failed", justify="right")
    facts = factcache.stats()
    if facts:
        table.add_column("facts batched / live", justify="right")
    hosts: dict[str, list[dict[str, Any]]] = {}
    for item in results:
        hosts.setdefault(item["host"], []).append(item)
    for host, items in hosts.items():
        changed = sum(i["status"] == "changed" for i in items)
        failed = sum(i["status"] in ("failed", "skipped") for i in items)
        row = [
            host,
            str(len(items)),
            f"[yellow]{changed}[/]" if changed else "0",
            f"[red]{failed}[/]" if failed else "0",
        ]
        if facts:
            hits, misses = facts.get(host, (0, 0))
            row.append(f"{hits} / {misses}")
        table.add_row(*row)
    console.print(table)
    changed_ops = [i for i in results if i["status"] != "unchanged"]
    if changed_ops:
        ops = Table(title=f"Operations that {verb}" if not dry else "Planned changes")
        ops.add_column("host")
        ops.add_column("operation")
        ops.add_column("status")
        for item in changed_ops:
            colour = {"changed": "yellow", "failed": "red", "skipped": "red"}[item["status"]]
            label = "will change" if dry and item["status"] == "changed" else item["status"]
            ops.add_row(item["host"], item["name"], f"[{colour}]{label}[/]")
        console.print(ops)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CHATTER = re.compile(r"^(--> Starting operation|\[[^]]+\]\s+(Success|No changes|Connected))")


class _Compact(logging.Filter):
    """Drops pyinfra's per-host progress lines; our one line per operation replaces them.
    Diffs, warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        return not _CHATTER.match(_ANSI.sub("", record.getMessage()).strip())


class _UncheckedLocalHostKeys(logging.Filter):
    """Local containers get new host keys on reused loopback ports, so their keys are
    deliberately not checked (see mahaops/local/hosts.py); the warning is noise there."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.WARNING and record.msg.startswith("No host key"))


def configure_logging(quiet: bool, local: bool, verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    if not verbose:
        handler.addFilter(_Compact())
    if local:
        handler.addFilter(_UncheckedLocalHostKeys())
    handler.addFilter(masking.MaskingFilter())
    logger = logging.getLogger("pyinfra")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        group_data = GroupData(args.group_data)
        configure_logging(
            args.quiet, local=kind_of(args.env, group_data.files) == "local", verbose=args.verbose
        )
        overrides = parse_set(args.overrides)
        roles = select_roles(args.role)
        kind, hosts = load_hosts(args, group_data)
        if args.limit:
            wanted = set(args.limit)
            known = {h.name for h in hosts} | {g for h in hosts for g in h.groups}
            unknown = wanted - known
            if unknown:
                raise UsageError(f"--limit: no host or group named {', '.join(sorted(unknown))}")
        if not hosts:
            raise UsageError(f"no hosts in environment {args.env!r} (is it up? `invoke up`)")
        state = build_state(hosts, group_data, overrides, args.dry)
    except (SettingsError, UsageError, ValueError) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    if args.limit:
        state.limit_hosts = [
            h for h in state.inventory if h.name in args.limit or set(h.groups) & set(args.limit)
        ]
    results: list[dict[str, Any]] = []
    with secrets.using(secrets.store_for(kind, args.env)):
        try:
            factcache.install(secrets.env_dir(args.env), role_of=_asking_role)
            use_fast_users()
            pyinfra_speedups.install()
            connect_all(state)
            factcache.prefetch(state, {r.name for r in roles})
            plan(state, roles, hosts)
            if not args.dry:
                state.set_stage(StateStage.Execute)
                with ctx_state.use(state), ctx_inventory.use(state.inventory):
                    execute(state, report=not args.quiet)
        except PyinfraError as exc:
            console.print(f"[red]error:[/] {exc}")
        except Exception as exc:  # a bug in a deploy: still report what ran
            logging.getLogger("pyinfra").exception("deploy failed")
            console.print(f"[red]error:[/] {type(exc).__name__}: {exc}")
        finally:
            results = outcomes(state, args.dry)
            disconnect_all(state)
            factcache.save()
    unreachable = [h.name for h in state.inventory if h not in state.activated_hosts]
    if state.limit_hosts:
        unreachable = [n for n in unreachable if n in {h.name for h in state.limit_hosts}]
    summary(results, args.dry, time.monotonic() - started)
    for name in unreachable:
        console.print(f"[red]unreachable:[/] {name}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "dry": args.dry,
                    "operations": results,
                    "unreachable": unreachable,
                    "facts": factcache.stats(),
                }
            )
        )
    failed = unreachable or any(r["status"] in ("failed", "skipped") for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)
