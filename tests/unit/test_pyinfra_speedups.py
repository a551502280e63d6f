"""The faster stand-ins give exactly pyinfra's answers."""

from __future__ import annotations

from types import SimpleNamespace

import pyinfra
import pytest
from pyinfra.api import arguments, util

from mahaops import pyinfra_hooks as pyinfra_speedups


def _both(state):
    theirs, ours = util.get_operation_order_from_stack, pyinfra_speedups.operation_order_from_stack
    return [order(state) for order in (theirs, ours)]  # the same caller line for both


def _nested(depth: int, state):
    return _both(state) if depth == 0 else _nested(depth - 1, state)


@pytest.mark.parametrize("is_cli", [True, False])
@pytest.mark.parametrize("deploy_file", [None, __file__])
def test_operation_order_matches_pyinfras(monkeypatch, is_cli: bool, deploy_file) -> None:
    monkeypatch.setattr(pyinfra, "is_cli", is_cli)
    state = SimpleNamespace(current_deploy_filename=deploy_file, current_op_file_number=3)
    theirs, ours = _nested(4, state)
    assert ours == theirs
    assert len(ours) > 5  # the nested calls are in it


def test_global_arguments_match_pyinfras() -> None:
    assert pyinfra_speedups.all_global_arguments() == arguments.all_global_arguments()
    assert pyinfra_speedups.all_global_arguments() is not pyinfra_speedups.all_global_arguments()
