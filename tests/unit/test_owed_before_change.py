"""A restart (or reload) is recorded as owed before its inputs change the host
(``pyinfra_hooks.send_first_when_changing``, used by ``deploys._common.restart`` and
``reloaded``): the marker comes first, and only from an input that changes something.

Hosts here are ``@local`` (pyinfra's local connector): what is checked is the order and
presence of the commands pyinfra sends, on the installed pyinfra.
"""

from __future__ import annotations

import getpass
import grp
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import Config, Inventory, State, StringCommand
from pyinfra.api.connect import connect_all
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.host import Host
from pyinfra.api.operations import run_ops
from pyinfra.context import ctx_host, ctx_state
from pyinfra.operations import files

from deploys import _common
from mahaops import pyinfra_hooks
from operations.files import validated_template
from operations.services import PENDING_RESTARTS


@pytest.fixture
def local() -> Iterator[tuple[State, Host]]:
    state = State(Inventory((["@local"], {})), Config())
    connect_all(state)
    host = state.inventory.get_host("@local")
    with ctx_state.use(state), ctx_host.use(host):
        yield state, host


def sent(state: State, host: Host) -> list[str]:
    return [command for _, command in pyinfra_hooks.planned_commands(state, host)]


def test_the_first_command_goes_before_a_changing_operation_s_own(
    local: tuple[State, Host], tmp_path: Path
) -> None:
    state, host = local
    target, record = tmp_path / "conf", tmp_path / "owed"
    # Fails, and so fails the operation, if the file were already there: the order is real.
    first = StringCommand(f"test ! -e {target} && touch {record}")
    meta = files.file(name="Write conf", path=str(target))
    assert pyinfra_hooks.send_first_when_changing(meta, first)
    run_ops(state)
    assert meta.did_change() and target.exists() and record.exists()
    op_data = state.ops[host][pyinfra_hooks.op_hash_of(meta)]
    assert pyinfra_hooks.operation_call(op_data) == (files.file._inner, (), {"path": str(target)})


def test_an_operation_that_changes_nothing_sends_nothing_first(
    local: tuple[State, Host], tmp_path: Path
) -> None:
    state, _ = local
    target, record = tmp_path / "conf", tmp_path / "owed"
    target.touch()
    meta = files.file(name="Write conf", path=str(target))
    pyinfra_hooks.send_first_when_changing(meta, StringCommand(f"touch {record}"))
    run_ops(state)
    assert not meta.did_change() and not record.exists()


def test_an_operation_that_already_ran_is_left_as_it_is(
    local: tuple[State, Host], tmp_path: Path
) -> None:
    state, _ = local
    meta = files.file(name="Write conf", path=str(tmp_path / "conf"))
    run_ops(state)
    assert not pyinfra_hooks.send_first_when_changing(meta, StringCommand("false"))


@pytest.mark.parametrize(
    ("helper", "marker"), [(_common.restart, "chrony"), (_common.reloaded, "chrony.reload")]
)
def test_restart_and_reloaded_record_the_marker_before_their_changing_inputs(
    local: tuple[State, Host], tmp_path: Path, helper: Any, marker: str
) -> None:
    state, host = local
    changing = files.file(name="New conf", path=str(tmp_path / "new"))
    (tmp_path / "kept").touch()
    unchanged = files.file(name="Kept conf", path=str(tmp_path / "kept"))
    helper("Restart chrony", "chrony", when=[changing, unchanged])
    record = f"mkdir -p {PENDING_RESTARTS} && touch {PENDING_RESTARTS}/{marker}"
    commands = sent(state, host)
    assert record in commands[0] and f"touch {tmp_path}/new" in commands[1]
    assert sum(record in command for command in commands) == 2  # before the file; the restart's
    assert f"systemctl {'reload' if 'reload' in marker else 'restart'} chrony" in commands[-1]


def test_an_app_service_restart_is_owed_in_the_release_s_marker_before_its_unit_changes(
    local: tuple[State, Host], tmp_path: Path
) -> None:
    """A new unit or environment file records ``<root>/pending/<service>`` (the release
    ``current`` names) first; a marker a switch wrote is kept."""
    state, host = local
    root = tmp_path / "srv"
    (root / "releases" / "r1").mkdir(parents=True)
    (root / "current").symlink_to("releases/r1")
    unit = files.file(name="Unit", path=str(tmp_path / "maha-web.service"))
    _common.release_restarted("Restart maha-web", "maha-web", when=[unit], root=str(root))
    generator = state.ops[host][pyinfra_hooks.op_hash_of(unit)].command_generator
    record, touch = (str(c.get_raw_value()) for c in generator() if isinstance(c, StringCommand))
    assert "/pending/maha-web" in record and touch == f"touch {tmp_path}/maha-web.service"

    subprocess.run(["sh", "-c", record], check=True)
    marker = root / "pending" / "maha-web"
    assert marker.read_text().strip() == "r1"
    marker.write_text("r2\n")  # a switch's marker: the release it moved to
    subprocess.run(["sh", "-c", record], check=True)
    assert marker.read_text() == "r2\n"


@pytest.mark.parametrize(("check", "owed"), [("false", False), ("true", True)])
def test_a_validated_file_records_the_restart_only_once_its_check_passed(
    local: tuple[State, Host], tmp_path: Path, check: str, owed: bool
) -> None:
    """A candidate its check refuses never reaches the service, so no restart is owed for
    it (the next run would otherwise restart a server for a change that never landed)."""
    state, _ = local
    target, record = tmp_path / "conf", tmp_path / "owed"
    meta = validated_template(
        name="Conf",
        src="base/timezone.j2",
        dest=str(target),
        validate=f"{check} %s",
        user=getpass.getuser(),
        group=grp.getgrgid(os.getgid()).gr_name,
        base_timezone="UTC",
    )
    pyinfra_hooks.send_first_when_changing(meta, StringCommand(f"touch {record}"))
    if owed:
        run_ops(state)
    else:
        with pytest.raises(PyinfraError):
            run_ops(state)
    assert record.exists() is owed and target.exists() is owed
    assert not (tmp_path / "conf.maha-new").exists()
