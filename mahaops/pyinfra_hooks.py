"""Every place the project reaches into pyinfra's internals, installed once per process.

pyinfra's public API runs a deploy its own way; the runner (``mahaops.runner``) and the
Ansible exporter (``mahaops.ansible_export``) need a little more, and this module is the
only one that touches pyinfra beyond its public API. ``install()`` refuses any pyinfra
outside ``CHECKED`` (the versions these hooks were read against); a unit test per hook
(``tests/unit/test_pyinfra_hooks.py``, ``tests/unit/test_pyinfra_speedups.py``) holds
them to pyinfra's own behaviour, so moving the pin means running those first.

What ``install()`` swaps in:

- **operation recording**: ``generate_operation_name`` and ``ensure_shared_op_meta`` are
  wrapped so subscribers (``on_operation_added``) learn, for every operation a deploy
  adds, its hash, the operation function and the frame that called it. pyinfra keeps
  names only. The runner records roles and functions; the exporter, call sites.
- **host commands**: fact reads (``_get_fact``), ``Host.run_shell_command``,
  ``put_file``, ``rsync`` and Python callbacks (``FunctionCommand.execute``) are told
  apart for one listener (``observe_host_commands``): the fact batch answers fact
  commands from memory and forgets a host's answers the moment anything else runs there.
- **speed-ups** giving pyinfra's answers faster: operation order from frames' file and
  line instead of ``inspect.stack()``, global argument types read once.
- **the Users fact**: ``server.user`` reads ``operations.facts.Users`` (one pass).
- **private upload staging**: an upload under sudo is staged by SFTP in a directory of
  its own (0700, a random name) as a 0600 file, instead of pyinfra's world-readable
  ``/tmp/pyinfra-<sha1 of the destination>``: no other user can read a secret file at any
  moment, and a new destination is born 0600 until the operation's chmod.

And what callers read through it instead of private names: ``run_operation`` (one
operation on one host), ``operation_call`` (an operation's function and arguments),
``planned_commands`` (the command lines a plan would send, unmasked, for secret checks),
``op_hash_of``, ``did_change_owner`` (which operation an ``_if`` guard asks about),
``order_by_deploy_line``; and ``send_first_when_changing`` (a command sent before a planned
operation's own, only when it changes the host: an owed restart recorded before its
configuration is written).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import posixpath
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as installed_version
from types import FrameType
from typing import Any, Protocol

import pyinfra
from pyinfra.api import arguments as pyinfra_arguments
from pyinfra.api import facts as pyinfra_facts
from pyinfra.api import util as pyinfra_util
from pyinfra.api.arguments import CONNECTOR_ARGUMENT_KEYS
from pyinfra.api.command import FileUploadCommand, FunctionCommand, StringCommand
from pyinfra.api.host import Host
from pyinfra.api.operation import OperationMeta
from pyinfra.api.operations import _run_host_op_with_context
from pyinfra.connectors.ssh import SSHConnector
from pyinfra.connectors.util import make_unix_command
from pyinfra.context import ctx_host, ctx_state
from pyinfra.operations import server as server_operations

from operations.facts import Users

CHECKED: tuple[tuple[int, int], ...] = ((3, 10),)
"""pyinfra (major, minor) releases these hooks were checked on; pyproject.toml pins the same."""


class PyinfraVersionError(RuntimeError):
    pass


def check_version(found: str | None = None) -> None:
    """Refuse a pyinfra these hooks were not checked on, saying what to do."""
    found = found or installed_version("pyinfra")
    try:
        major_minor = tuple(int(part) for part in found.split(".")[:2])
    except ValueError:
        major_minor = ()
    if major_minor not in CHECKED:
        checked = ", ".join(f"{a}.{b}.x" for a, b in CHECKED)
        raise PyinfraVersionError(
            f"pyinfra {found} is installed, but mahaops/pyinfra_hooks.py was checked on "
            f"pyinfra {checked} only: install the version pinned in pyproject.toml "
            "(.venv/bin/pip install -e .), or check the hooks against the new version "
            "(tests/unit/test_pyinfra_hooks.py) and move CHECKED and the pin together"
        )


# pyinfra.api re-exports the ``operation`` decorator under the module's name.
_operation_module: Any = importlib.import_module("pyinfra.api.operation")

# -- operation recording -----------------------------------------------------------------------


@dataclass(frozen=True)
class AddedOperation:
    op_hash: str
    func: Callable[..., Any]  # the operation's own function (``is_idempotent`` and all)
    caller: FrameType  # the frame that called the operation (deploy code)


_subscribers: list[Callable[[AddedOperation], None]] = []
# Between naming an operation and sharing its meta pyinfra does not yield, so one slot
# carries the function and caller from the first call to the second.
_pending: list[tuple[Callable[..., Any], FrameType]] = []
_original_name = _operation_module.generate_operation_name
_original_meta = _operation_module.ensure_shared_op_meta


def on_operation_added(callback: Callable[[AddedOperation], None]) -> None:
    """Call ``callback`` for every operation added on every host (once per subscriber)."""
    if callback not in _subscribers:
        _subscribers.append(callback)


def _generate_operation_name(func: Any, host: Any, kwargs: Any, global_arguments: Any) -> Any:
    # Frame 1 is pyinfra's operation wrapper; frame 2 called the operation.
    _pending[:] = [(func, sys._getframe(2))]
    return _original_name(func, host, kwargs, global_arguments)


def _ensure_shared_op_meta(state: Any, op_hash: str, *args: Any) -> Any:
    if _pending:
        func, caller = _pending.pop()
        added = AddedOperation(op_hash, func, caller)
        for callback in _subscribers:
            callback(added)
    return _original_meta(state, op_hash, *args)


# -- host commands -----------------------------------------------------------------------------


class HostCommandListener(Protocol):
    def fact_command(
        self, host: Host, command: Any, kwargs: dict[str, Any], run: Callable[[], Any]
    ) -> Any:
        """A command run to read a fact; ``run()`` runs it on the host."""

    def host_changing(self, host: Host) -> None:
        """Anything else is about to run on ``host`` (a command, an upload, a callback)."""


_listener: list[HostCommandListener] = []
_fact_depth: dict[str, int] = {}  # host name -> facts being read there now
_original_get_fact = pyinfra_facts._get_fact
_original_run = Host.run_shell_command
_original_put = Host.put_file
_original_rsync = Host.rsync
_original_function = FunctionCommand.execute


def observe_host_commands(listener: HostCommandListener) -> None:
    """Send ``listener`` every command run on a host (one listener per process)."""
    _listener[:] = [listener]


def run_unobserved(host: Host, command: Any, **kwargs: Any) -> Any:
    """``host.run_shell_command`` that no listener sees (e.g. the fact batch itself)."""
    return _original_run(host, command, **kwargs)


def _get_fact(state: Any, host: Host, *args: Any, **kwargs: Any) -> Any:
    _fact_depth[host.name] = _fact_depth.get(host.name, 0) + 1
    try:
        return _original_get_fact(state, host, *args, **kwargs)
    finally:
        _fact_depth[host.name] -= 1


def _run_shell_command(self: Host, command: Any, *args: Any, **kwargs: Any) -> Any:
    if not _listener:
        return _original_run(self, command, *args, **kwargs)
    if _fact_depth.get(self.name):
        return _listener[0].fact_command(
            self, command, kwargs, lambda: _original_run(self, command, *args, **kwargs)
        )
    _listener[0].host_changing(self)
    return _original_run(self, command, *args, **kwargs)


def _changing(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def wrapper(self: Host, *args: Any, **kwargs: Any) -> Any:
        if _listener:
            _listener[0].host_changing(self)
        return original(self, *args, **kwargs)

    return wrapper


def _function_execute(
    self: FunctionCommand, state: Any, host: Host, connector_arguments: Any
) -> Any:
    if _listener:
        _listener[0].host_changing(host)  # a Python callback may do anything
    return _original_function(self, state, host, connector_arguments)


# -- uploads under sudo: staged privately ------------------------------------------------------

_original_ssh_put = SSHConnector.put_file
_ELEVATED = ("_sudo", "_doas", "_dzdo", "_su_user")
_OTHER_USER = ("_sudo_user", "_doas_user", "_dzdo_user", "_su_user")


def staging_directory(temp_file: str) -> str:
    """A fresh directory name beside pyinfra's temp file, unguessable by other users."""
    return f"{posixpath.dirname(temp_file)}/maha-upload-{secrets.token_hex(16)}"


def _put_file_staged_privately(
    self: SSHConnector,
    filename_or_io: Any,
    remote_filename: str,
    remote_temp_filename: str | None = None,
    print_output: bool = False,
    print_input: bool = False,
    **arguments: Any,
) -> bool:
    """``SSHConnector.put_file``, its sudo copy staged in a private directory as 0600.

    pyinfra stages by SFTP in the temp directory under a name anyone can compute, with the
    SFTP server's default mode (0644), then ``cp``s it as root: a secret is world-readable
    there while it is written and copied, and a new destination gets 0644 until the chmod.
    Here SFTP first makes a 0700 directory of a random name (``mkdir`` fails if the name
    exists) and an empty 0600 file in it; pyinfra's own upload then writes into it, copies
    it and removes it. Uploads to another user's account (an ACL handover) and SCP are
    left to pyinfra: the deploys use neither.
    """
    call = functools.partial(
        _original_ssh_put,
        self,
        filename_or_io,
        remote_filename,
        print_output=print_output,
        print_input=print_input,
        **arguments,
    )
    elevated = any(arguments.get(key) for key in _ELEVATED)
    other_user = any(arguments.get(key) for key in _OTHER_USER)
    sftp = self.get_file_transfer_connection() if elevated and not other_user else None
    if sftp is None or not hasattr(sftp, "mkdir"):
        return bool(call(remote_temp_filename=remote_temp_filename))
    private = staging_directory(
        remote_temp_filename or self.host.get_temp_filename(remote_filename)
    )
    staged = f"{private}/{posixpath.basename(remote_filename) or 'upload'}"
    sftp.mkdir(private, 0o700)
    try:
        with sftp.open(staged, "wx") as handle:
            handle.chmod(0o600)  # before any byte is written
        return bool(call(remote_temp_filename=staged))
    finally:
        with contextlib.suppress(OSError):
            sftp.remove(staged)  # pyinfra's removed it, unless the copy failed
        with contextlib.suppress(OSError):
            sftp.rmdir(private)
        # No sftp.close(): pyinfra memoizes the connection for the host's later uploads.


# -- speed-ups: pyinfra's answers, computed for less -------------------------------------------


def _frames_outermost_first(start: FrameType | None) -> list[FrameType]:
    frames = []
    frame = start
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    frames.reverse()
    return frames


def operation_order_from_stack(state: Any) -> list[int]:
    """``pyinfra.api.util.get_operation_order_from_stack``, from frames' file and line only.

    pyinfra's reads every frame's source lines with ``inspect.stack()``; the order needs
    file names and line numbers only.
    """
    # From the caller (pyinfra's, skipped below as pyinfra's own always was) outwards.
    frames = _frames_outermost_first(sys._getframe(1))
    i = 0
    if state.current_deploy_filename:
        for i, frame in enumerate(frames):  # noqa: B007 - i is used after the loop
            if frame.f_code.co_filename == state.current_deploy_filename:
                break
    line_numbers = [state.current_op_file_number] if pyinfra.is_cli else []
    install_dir = pyinfra_util.PYINFRA_INSTALL_DIR
    for frame in frames[i:]:
        if frame.f_code.co_filename.startswith(install_dir):
            continue
        line_numbers.append(frame.f_lineno)
    return line_numbers


_original_all_global_arguments = pyinfra_arguments.all_global_arguments


@functools.cache
def _global_arguments() -> tuple[tuple[str, type], ...]:
    return tuple(_original_all_global_arguments())


def all_global_arguments() -> list[tuple[str, type]]:
    """``pyinfra.api.arguments.all_global_arguments``, its type hints evaluated once
    (pyinfra evaluates them on every call, twice per operation and fact)."""
    return list(_global_arguments())


# -- reading pyinfra's state -------------------------------------------------------------------


def run_operation(state: Any, host: Host, op_hash: str) -> bool:
    """Run one planned operation on one host, as pyinfra's executor does for each."""
    return bool(_run_host_op_with_context(state, host, op_hash))


def operation_call(op_data: Any) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The function, positional and keyword arguments of a planned operation on a host
    (pyinfra keeps them only in the closure of its per-host command generator)."""
    generator = inspect.unwrap(op_data.command_generator)  # under send_first_when_changing
    cells = generator.__closure__ or ()
    closure = dict(
        zip(generator.__code__.co_freevars, (c.cell_contents for c in cells), strict=True)
    )
    return closure["func"], tuple(closure["args"]), dict(closure["kwargs"])


def planned_commands(state: Any, host: Host) -> list[tuple[str, str]]:
    """``(operation name, what it sends)`` for each command the operations planned on
    ``host`` would run, in order and unmasked: a shell line exactly as the connectors build
    it (sudo, ``_env``, ``_chdir``: what ``ps`` and sudo's log would show), an upload as
    ``upload <dest>`` (its content travels by SFTP), a Python callback by name. Stdin is
    not a command line and is left out. For checks that no secret reaches a command line.
    """
    shaping = set(inspect.signature(make_unix_command).parameters) - {"command"}
    found: list[tuple[str, str]] = []
    with ctx_state.use(state), ctx_host.use(host):
        for op_hash in state.get_op_order():
            op_data = state.ops.get(host, {}).get(op_hash)
            if op_data is None:
                continue
            name = ", ".join(sorted(state.get_op_meta(op_hash).names)) or op_hash
            base = {
                k: op_data.global_arguments[k]
                for k in CONNECTOR_ARGUMENT_KEYS
                if k in op_data.global_arguments
            }
            for command in op_data.command_generator():
                arguments = {**base, **command.connector_arguments}
                if isinstance(command, StringCommand):
                    shaped = {k: v for k, v in arguments.items() if k in shaping}
                    found.append((name, make_unix_command(command, **shaped).get_raw_value()))
                elif isinstance(command, FileUploadCommand):
                    found.append((name, f"upload {command.dest}"))
                elif isinstance(command, FunctionCommand):
                    found.append((name, f"python {command.function.__name__}"))
    return found


STAGING = "maha_staging"  # set on a command that only prepares a candidate (see below)


def staging(command: Any) -> Any:
    """Mark ``command`` as one that only prepares (uploads, checks) a candidate beside its
    target: ``send_first_when_changing`` puts its command after such commands, so a
    candidate refused by its check records nothing."""
    setattr(command, STAGING, True)
    return command


def send_first_when_changing(meta: OperationMeta, command: StringCommand) -> bool:
    """Make the operation ``meta`` (planned on the current host, not run yet) send
    ``command`` before its own first command that changes the host (commands marked by
    ``staging`` come first), and only when it sends any: an operation that changes
    nothing still sends nothing. Returns False when there is nothing to amend (the
    operation already ran, or is not planned on this host).

    pyinfra keeps a planned operation's commands as a generator, called when the
    operation runs (and when a plan asks whether it would change): it is wrapped, the
    original kept as ``__wrapped__`` (``operation_call`` reads through it)."""
    if meta.is_complete():
        return False
    ops = ctx_state.get().ops.get(ctx_host.get(), {})
    op_data = ops.get(meta._hash)
    if op_data is None:
        return False
    original = op_data.command_generator

    @functools.wraps(original)
    def generator() -> Any:
        first = True
        for own in original():
            if first and not getattr(own, STAGING, False):
                first = False
                yield command
            yield own

    op_data.command_generator = generator
    return True


def op_hash_of(meta: OperationMeta) -> str:
    """The hash of the operation an ``OperationMeta`` (what an operation returns) is for."""
    return meta._hash


def did_change_owner(guard: Any) -> OperationMeta | None:
    """For an ``_if`` guard that is ``<operation>.did_change``, that operation's meta."""
    owner = getattr(guard, "__self__", None)
    if isinstance(owner, OperationMeta) and getattr(guard, "__name__", "") == "did_change":
        return owner
    return None


def guard_holds(op_data: Any) -> bool:
    """In a plan, whether an operation's ``_if`` guard would let it run.

    pyinfra checks ``_if`` only while executing; a plan must check it too, or every
    "restart when the config changed" would show as a change. ``op.did_change`` guards
    are answered by what the guarding operation *would* do.
    """
    guards = op_data.global_arguments.get("_if")
    if guards is None:
        return True
    for guard in guards if isinstance(guards, list) else [guards]:
        owner = did_change_owner(guard)
        if owner is not None:
            if not owner.will_change:
                return False
            continue
        try:
            if not guard():
                return False
        except RuntimeError:  # depends on a result only execution can give: assume it runs
            continue
    return True


def would_run(meta: OperationMeta) -> bool:
    """In a plan, whether the current host's operation ``meta`` passes its ``_if`` guard."""
    from pyinfra import host
    from pyinfra.context import ctx_host

    if not ctx_host.isset():  # outside a deploy: nothing to look the guard up in
        return True
    try:
        op_data = host.state.get_op_data_for_host(host, op_hash_of(meta))
    except KeyError:  # not one of this host's operations: nothing guards it here
        return True
    return guard_holds(op_data)


def order_by_deploy_line() -> None:
    """Order operations by deploy file, then line, across hosts, as pyinfra's CLI does."""
    pyinfra.is_cli = True


# -- installing --------------------------------------------------------------------------------

_installed: list[bool] = []


def install() -> None:
    """Check pyinfra's version and swap every hook in (once per process)."""
    if _installed:
        return
    check_version()
    _operation_module.generate_operation_name = _generate_operation_name
    _operation_module.ensure_shared_op_meta = _ensure_shared_op_meta
    _operation_module.get_operation_order_from_stack = operation_order_from_stack
    pyinfra_arguments.all_global_arguments = all_global_arguments
    pyinfra_facts._get_fact = _get_fact
    Host.run_shell_command = _run_shell_command  # type: ignore[method-assign]
    Host.put_file = _changing(_original_put)  # type: ignore[method-assign]
    Host.rsync = _changing(_original_rsync)  # type: ignore[method-assign]
    FunctionCommand.execute = _function_execute  # type: ignore[method-assign]
    server_operations.Users = Users  # type: ignore[misc]
    SSHConnector.put_file = _put_file_staged_privately  # type: ignore[method-assign]
    _installed.append(True)
