"""``pyinfra_hooks.planned_commands``: the command lines a plan would send, as pyinfra's
connectors build them (``@local``: this machine, nothing is run but the plan's facts)."""

from __future__ import annotations

import subprocess
from io import StringIO

from pyinfra.api import Config, Inventory, State, StringCommand, operation
from pyinfra.api.connect import connect_all
from pyinfra.api.host import Host
from pyinfra.api.operation import add_op
from pyinfra.operations import files, server

from mahaops import pyinfra_hooks


@operation()
def _with_stdin(secret: str):
    yield StringCommand("cat >/dev/null", _stdin=secret)


def _plan() -> tuple[State, Host]:
    state = State(Inventory((["@local"], {})), Config(), check_for_changes=True)
    connect_all(state)
    host = state.inventory.get_host("@local")
    add_op(state, server.shell, commands=["echo one"], _env={"TOKEN": "env-secret-1"}, _sudo=True)
    add_op(state, server.shell, commands=["echo two"], _chdir="/tmp")
    add_op(state, files.put, src=StringIO("file-secret-2"), dest="/tmp/maha-never-written")
    add_op(state, _with_stdin, secret="stdin-secret-3")
    return state, host


def test_each_planned_command_is_the_line_the_connector_would_run() -> None:
    state, host = _plan()
    lines = [line for _name, line in pyinfra_hooks.planned_commands(state, host)]
    # sudo's shell with the environment exported on its command line: what ps shows
    assert lines[0].startswith("sudo -H -n sh -c ") and "TOKEN=env-secret-1" in lines[0]
    assert lines[1] == "sh -c 'cd /tmp && echo two'"
    assert "upload /tmp/maha-never-written" in lines
    assert not [line for line in lines if "file-secret-2" in line or "stdin-secret-3" in line]
    # The line runs as it stands (without sudo here): the shell pyinfra would start.
    assert subprocess.run(lines[1], shell=True, capture_output=True, text=True).stdout == "two\n"
