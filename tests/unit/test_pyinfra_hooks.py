"""Each hook into pyinfra's internals still holds against the installed pyinfra.

Hosts here are ``@local`` (this machine, through pyinfra's local connector): the hooks
are about what pyinfra does with commands, not about any host.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from typing import Any

import pyinfra
import pytest
from pyinfra.api import Config, Inventory, State
from pyinfra.api import arguments as pyinfra_arguments
from pyinfra.api import facts as pyinfra_facts
from pyinfra.api.command import FunctionCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts import server as server_facts
from pyinfra.facts.server import Command
from pyinfra.operations import files, python, server

from mahaops import pyinfra_hooks
from operations import facts

_operation_module: Any = importlib.import_module("pyinfra.api.operation")
_PATCHED = [
    (_operation_module, "generate_operation_name"),
    (_operation_module, "ensure_shared_op_meta"),
    (_operation_module, "get_operation_order_from_stack"),
    (pyinfra_arguments, "all_global_arguments"),
    (pyinfra_facts, "_get_fact"),
    (Host, "run_shell_command"),
    (Host, "put_file"),
    (Host, "rsync"),
    (FunctionCommand, "execute"),
    (server, "Users"),
    (pyinfra, "is_cli"),
]


@pytest.fixture
def hooks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The hooks installed for one test; pyinfra as it was afterwards."""
    for owner, name in _PATCHED:
        monkeypatch.setattr(owner, name, getattr(owner, name))
    for name in ("_installed", "_subscribers", "_listener", "_pending"):
        monkeypatch.setattr(pyinfra_hooks, name, [])
    pyinfra_hooks.install()
    yield pyinfra_hooks


def _state(connect: bool = False) -> tuple[State, Host]:
    state = State(Inventory((["@local"], {})), Config())
    if connect:
        connect_all(state)
    return state, state.inventory.get_host("@local")


def test_other_pyinfra_versions_are_refused_saying_what_to_do() -> None:
    pyinfra_hooks.check_version()  # the installed one
    pyinfra_hooks.check_version("3.10.7")
    for other in ("3.11.0", "4.0", "3.9.2", "dev"):
        with pytest.raises(pyinfra_hooks.PyinfraVersionError, match=r"pyproject\.toml"):
            pyinfra_hooks.check_version(other)


def test_install_refuses_an_unchecked_pyinfra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyinfra_hooks, "_installed", [])
    monkeypatch.setattr(pyinfra_hooks, "installed_version", lambda _name: "3.11.0")
    with pytest.raises(pyinfra_hooks.PyinfraVersionError, match=r"pyinfra 3\.11\.0 is installed"):
        pyinfra_hooks.install()
    assert Host.run_shell_command is not pyinfra_hooks._run_shell_command  # nothing swapped


def test_subscribers_learn_each_operation_its_function_and_caller(hooks: Any) -> None:
    added: list[tuple[str, Any, Any, int]] = []

    def subscriber(op: pyinfra_hooks.AddedOperation) -> None:
        # The caller's frame is live: where it is now is where it called the operation.
        added.append((op.op_hash, op.func, op.caller.f_code, op.caller.f_lineno))

    hooks.on_operation_added(subscriber)
    hooks.on_operation_added(subscriber)  # subscribing twice is once
    state, host = _state()
    with ctx_state.use(state), ctx_host.use(host):
        line = sys._getframe().f_lineno + 1
        meta = server.shell(name="Say hello", commands=["echo hello"])
    this = test_subscribers_learn_each_operation_its_function_and_caller.__code__
    shell = server.shell._inner
    assert added == [(hooks.op_hash_of(meta), shell, this, line)]
    assert list(state.op_meta) == [hooks.op_hash_of(meta)]


def test_an_operations_call_is_read_back_with_its_arguments(hooks: Any) -> None:
    state, host = _state()
    with ctx_state.use(state), ctx_host.use(host):
        meta = files.directory(path="/tmp/maha-hooks", mode="755", name="Make a directory")
    op_data = state.ops[host][hooks.op_hash_of(meta)]
    args = {"path": "/tmp/maha-hooks", "mode": "755"}
    assert hooks.operation_call(op_data) == (files.directory._inner, (), args)


def test_did_change_guards_name_their_operation(hooks: Any) -> None:
    state, host = _state()
    with ctx_state.use(state), ctx_host.use(host):
        meta = server.shell(name="Say b", commands=["echo b"])
    assert hooks.did_change_owner(meta.did_change) is meta
    assert hooks.did_change_owner(meta.did_not_change) is None
    assert hooks.did_change_owner(lambda: True) is None


class _Listener:
    def __init__(self) -> None:
        self.facts: list[str] = []
        self.changing: list[str] = []

    def fact_command(self, host: Host, command: Any, kwargs: dict[str, Any], run: Any) -> Any:
        self.facts.append(str(command))
        return run()

    def host_changing(self, host: Host) -> None:
        self.changing.append(host.name)


def test_fact_commands_are_told_from_everything_else(hooks: Any) -> None:
    listener = _Listener()
    hooks.observe_host_commands(listener)
    state, host = _state(connect=True)
    with ctx_state.use(state), ctx_host.use(host):
        assert host.get_fact(Command, "echo from-a-fact") == "from-a-fact"
        assert listener.facts == ["echo from-a-fact"] and listener.changing == []
        host.run_shell_command("true")
        assert listener.changing == ["@local"]
        hooks.run_unobserved(host, "true")
        assert listener.changing == ["@local"]
        meta = python.call(name="Call back", function=lambda: None)
        state.is_executing = True
        assert hooks.run_operation(state, host, hooks.op_hash_of(meta)) is True
    assert listener.changing == ["@local", "@local"]  # a Python callback may change the host


def test_run_operation_runs_one_planned_operation_and_keeps_its_output(hooks: Any) -> None:
    state, host = _state(connect=True)
    with ctx_state.use(state), ctx_host.use(host):
        ok = server.shell(name="Succeed", commands=["echo done"])
        bad = server.shell(name="Fail", commands=["echo gone >&2; exit 3"])
    state.is_executing = True
    assert hooks.run_operation(state, host, hooks.op_hash_of(ok)) is True
    assert ok.did_change() and ok.stdout == "done"
    assert hooks.run_operation(state, host, hooks.op_hash_of(bad)) is False
    assert bad.did_error() and bad.stderr == "gone"


def test_server_user_reads_the_one_pass_users_fact_with_pyinfras_answer(hooks: Any) -> None:
    assert server.Users is facts.Users
    state, host = _state(connect=True)
    with ctx_state.use(state), ctx_host.use(host):
        theirs = host.get_fact(server_facts.Users)
        ours = host.get_fact(facts.Users)

    def unlogged(users: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        skip = ("lastlog", "login_time")  # left out on purpose: no operation reads them
        return {n: {k: v for k, v in u.items() if k not in skip} for n, u in users.items()}

    assert theirs and unlogged(ours) == unlogged(theirs)


def test_operations_are_ordered_by_deploy_line(hooks: Any) -> None:
    hooks.order_by_deploy_line()
    assert pyinfra.is_cli is True
