"""Recording what the deploys do: each role's deploy runs under pyinfra as for a real
converge, stopped after planning, and every operation it asked for is read back with its
arguments. Facts the deploys read (container or not, existing users) come from the real
hosts; nothing is changed on them.

Plans with the runner's ``state`` and ``engine`` (no side effects on import); gevent's
monkey patching is the exporter's own entry point's (``python -m mahaops.ansible_export``).
Where each operation was called from comes from ``mahaops.pyinfra_hooks``.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pyinfra.api import State
from pyinfra.api.arguments import all_argument_meta
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.operation import OperationMeta

from mahaops import PROJECT_ROOT, pyinfra_hooks, secrets
from mahaops.ansible_export.model import Call, ExportError, Host
from mahaops.ansible_export.project import Recording, SecretSource, StaticAssets
from mahaops.hosts import HostSpec, discover, kind_of
from mahaops.roles import Role, deployable_roles, role
from mahaops.runner.engine import plan
from mahaops.runner.state import apply_limit, build_state, check_limit
from mahaops.settings import GroupData
from operations.changes import AnyChanged

# -- where each operation was called from (deploy file:line), keyed by op hash ---------------
_locations: dict[str, str] = {}
_DEPLOYS = PROJECT_ROOT / "deploys"


def _locate(added: pyinfra_hooks.AddedOperation) -> None:
    """Where the deploy called the operation: ``deploys/worker.py:40 > deploys/app.py:200``."""
    if added.op_hash in _locations:
        return
    sites: list[str] = []
    frame = added.caller
    while frame is not None:
        path = Path(frame.f_code.co_filename)
        if path.is_relative_to(_DEPLOYS):
            sites.append(f"{path.relative_to(PROJECT_ROOT)}:{frame.f_lineno}")
        frame = frame.f_back  # type: ignore[assignment]
    _locations[added.op_hash] = " > ".join(reversed(sites)) or "?"


# -- which secrets the deploys asked for ------------------------------------------------------


class _Asked:
    """A secrets store that remembers each secret the deploys read or made."""

    def __init__(self, store: secrets.SecretStore) -> None:
        self.store = store
        self.env = store.env
        self.asked: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        value = self.store.get(name)
        if value is not None:
            self.asked[name] = value
        return value

    def put(self, name: str, value: str) -> None:
        self.store.put(name, value)
        self.asked[name] = value


# -- hosts -------------------------------------------------------------------------------------


def to_host(spec: HostSpec) -> Host:
    """pyinfra's SSH host data as Ansible connection variables."""
    data = dict(spec.data)
    connection: dict[str, Any] = {"ansible_host": data.pop("ssh_hostname", spec.name)}
    for ours, theirs in (
        ("ssh_port", "ansible_port"),
        ("ssh_user", "ansible_user"),
        ("ssh_key", "ansible_ssh_private_key_file"),
    ):
        if ours in data:
            connection[theirs] = data.pop(ours)
    ssh_args = []
    if "ssh_config_file" in data:
        ssh_args += ["-F", str(data.pop("ssh_config_file"))]
    # pyinfra's defaults, said outright: OpenSSH would take "ask" (a new host fails) and the
    # passwd entry's home, where pyinfra (paramiko) reads and adds keys in $HOME's file.
    strict = str(data.pop("ssh_strict_host_key_checking", "accept-new")).lower()
    if strict in ("off", "no", "false"):
        ssh_args.append("-o StrictHostKeyChecking=no")
    elif strict == "accept-new":
        ssh_args.append("-o StrictHostKeyChecking=accept-new")
    known = data.pop("ssh_known_hosts_file", None) or os.path.expanduser("~/.ssh/known_hosts")
    ssh_args.append(f"-o UserKnownHostsFile={known}")
    if ssh_args:
        connection["ansible_ssh_common_args"] = " ".join(ssh_args)
    connection["ansible_become"] = True  # the runner's SUDO=True
    left = sorted(k for k in data if k.startswith("ssh_"))
    if left:
        raise ExportError(f"host {spec.name}: no Ansible equivalent for {', '.join(left)}")
    return Host(spec.name, spec.groups, connection, data)


# -- calls -------------------------------------------------------------------------------------


def _operation_name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__name__}".removeprefix("pyinfra.operations.")


def _guards(value: Any, where: str) -> tuple[str, ...]:
    if value in (None, []) or isinstance(value, AnyChanged):  # any-of: see _triggers
        return ()
    hashes = []
    for guard in value if isinstance(value, list) else [value]:
        owner = pyinfra_hooks.did_change_owner(guard)
        if owner is None:
            raise ExportError(
                f"{where}: only _if=<operation>.did_change becomes a handler notification"
            )
        hashes.append(pyinfra_hooks.op_hash_of(owner))
    return tuple(hashes)


def _triggers(value: Any, guard: Any = None) -> tuple[str, ...]:
    """The project's operations that run "when any of these changed" take ``when=[op, ...]``;
    any operation can be guarded by ``_if=any_changed(op, ...)`` (operations.changes)."""
    if isinstance(guard, AnyChanged):
        value = guard.operations
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(v, OperationMeta) for v in value)
    ):
        return tuple(pyinfra_hooks.op_hash_of(v) for v in value)
    return ()


def calls_of(state: State, roles: Sequence[Role]) -> list[Call]:
    """Every operation the deploys added to ``state``, per host, in pyinfra's order."""
    defaults = {k: meta.default(state.config) for k, meta in all_argument_meta.items()}
    result: list[Call] = []
    for op_hash in state.get_op_order():
        op_meta = state.op_meta[op_hash]
        role_name = roles[op_meta.op_order[0]].name
        for host in state.inventory:
            op_data = state.ops.get(host, {}).get(op_hash)
            if op_data is None:
                continue
            func, args, kwargs = pyinfra_hooks.operation_call(op_data)
            signature = inspect.signature(func)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            operation = _operation_name(func)
            globals_ = {**op_data.global_arguments, **op_meta.global_arguments}
            name = globals_.get("name") or operation
            location = _locations.get(op_hash, "?")
            where = f"{operation} {name!r} at {location}"
            options = {
                k: v
                for k, v in sorted(globals_.items())
                if k not in ("name", "_if") and k in defaults and v != defaults[k]
            }
            result.append(
                Call(
                    host=host.name,
                    role=role_name,
                    op_hash=op_hash,
                    operation=operation,
                    name=str(name),
                    location=location,
                    arguments=dict(bound.arguments),
                    defaults={
                        p.name: p.default
                        for p in signature.parameters.values()
                        if p.default is not inspect.Parameter.empty
                    },
                    options=options,
                    guards=_guards(globals_.get("_if"), where),
                    triggers=_triggers(bound.arguments.get("when"), globals_.get("_if")),
                )
            )
    return result


def _aws_sources(
    env: str, group_data_dir: Path, tarballs: Sequence[Path]
) -> tuple[SecretSource, StaticAssets | None]:
    """Where an AWS environment's export reads its secrets (SSM, the operator's profile),
    and the release's assets with the static bucket (named by the account, as provisioning
    names it), when the run pushes a release."""
    from mahaops.aws.config import load_environment
    from mahaops.release.assets import hashed_files, static_bucket

    loaded = load_environment(env, group_data_dir)
    spec = loaded.spec
    profile = spec.profile or ""
    path = f"/{loaded.project}/{env}"
    source = SecretSource("aws", env, ssm_path=path, region=spec.region, profile=profile)
    if not tarballs:
        return source, None
    _session, bucket = static_bucket(env, group_data_dir)
    files: dict[str, bytes] = {}
    for tarball in tarballs:
        files.update(hashed_files(tarball))
    return source, StaticAssets(bucket, spec.region, profile, files)


def record(
    env: str,
    group_data_dir: Path,
    limit: Sequence[str] = (),
    roles: Sequence[str] = (),
    overrides: dict[str, Any] | None = None,
) -> Recording:
    """Run every deploy that exists (or ``roles``) against ``env``'s hosts (or ``limit``),
    recording only."""
    group_data = GroupData(group_data_dir)
    kind = kind_of(env, group_data.files)
    specs = discover(kind, env)
    if not specs:
        raise ExportError(f"no hosts in environment {env!r} (is it up? `invoke up`)")
    check_limit(limit, specs)
    wanted = {role(name).name for name in roles}  # raises on an unknown role
    selected = [role(n) for n in deployable_roles() if not wanted or n in wanted]
    state = build_state(specs, group_data, overrides or {}, dry=False)
    apply_limit(state, limit)
    try:
        pyinfra_hooks.install()
    except pyinfra_hooks.PyinfraVersionError as exc:
        raise ExportError(str(exc)) from None
    pyinfra_hooks.on_operation_added(_locate)
    store = _Asked(secrets.store_for(kind, env))
    with secrets.using(store):
        try:
            connect_all(state)
            targets = [h for h in state.inventory if state.is_host_in_limit(h)]
            down = sorted(h.name for h in targets if h not in state.activated_hosts)
            if down:
                raise ExportError(f"unreachable: {', '.join(down)}")
            releases = plan(state, selected, specs)
            calls = calls_of(state, selected)
        finally:
            disconnect_all(state)
    local_file = str(secrets.env_dir(env) / "secrets.json") if kind == "local" else ""
    source, assets = SecretSource(kind, env, local_file), None
    if kind == "aws":
        source, assets = _aws_sources(env, group_data_dir, [r.tarball for r in releases])
    return Recording(
        env=env,
        kind=kind,
        roles=[r.name for r in selected],
        # Every host, as pyinfra's inventory held them (the deploys' peers are computed from
        # it); --limit chose whose deploys were recorded, as it chooses whom a run changes.
        hosts=[to_host(s) for s in sorted(specs, key=lambda s: s.name)],
        calls=calls,
        secrets=dict(sorted(store.asked.items())),
        group_data=group_data,
        secret_source=source,
        static_assets=assets,
        overrides=dict(overrides or {}),
    )
