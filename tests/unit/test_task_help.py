"""``invoke TASK --help`` shows help for every task that takes a positional argument.

invoke hands a required positional argument whatever follows the task, ``--help``
included (pyinvoke/invoke#982): ``invoke replace --help`` once replaced a host called
"--help" (it took the deploy lock and looked for it). Found from the collection, so a new
task with a positional argument is covered without editing this file.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from invoke.collection import Collection

import tasks
from mahaops import PROJECT_ROOT


def _positional_tasks() -> list[str]:
    ns = Collection.from_module(tasks)
    found = []
    for name in ns.task_names:
        parameters = list(inspect.signature(ns[name].body).parameters.values())[1:]
        if any(p.default is inspect.Parameter.empty for p in parameters):
            found.append(name)
    return sorted(found)


def test_the_tasks_with_a_positional_argument_are_found() -> None:
    assert {"replace", "remove"} <= set(_positional_tasks())


@pytest.mark.parametrize("task", _positional_tasks())
def test_help_after_the_task_is_its_help_and_touches_nothing(task: str) -> None:
    helped = subprocess.run(
        [sys.executable, "-m", "invoke", task, "--help"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert helped.returncode == 0, helped
    assert f"{task} [--options]" in helped.stdout, helped.stdout
    assert "no host" not in helped.stdout + helped.stderr  # it was taken for a host name
