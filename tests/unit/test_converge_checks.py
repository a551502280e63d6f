"""The role tests' shared converge checks fail where a role breaks its promise: checked on
made-up deploy results, without hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mahaops.local.hosts import LocalHost
from mahaops.runner import DeployResult, OpOutcome
from tests.checks import converge

HOST = LocalHost("h-1", "base", "t0", "c", "10.0.0.2", 2222)


def op(name: str, status: str = "unchanged", operation: str = "files.put", idem: bool = True):
    return OpOutcome("h-1", name, status, operation, idem)


class FakeTestbed:
    """Answers each deploy with ``result``; ``after`` is the file's hash once it ran."""

    def __init__(
        self,
        result: DeployResult,
        after: str = "same",
        logins: str = "",
        plan: DeployResult | None = None,
    ) -> None:
        self.result, self.after, self.logins, self.ran = result, after, logins, False
        self.plan = plan  # what a dry run answers, when not ``result``

    def deploy(self, **kwargs: Any) -> DeployResult:
        self.ran = True
        return self.plan if kwargs.get("dry") and self.plan is not None else self.result

    def exec(self, _host: Any, command: str, check: bool = True) -> str:
        if command.startswith("sha1sum"):
            return self.after if self.ran else "same"
        return self.logins if command.startswith("journalctl") else "1700000000"


def idempotent(result: DeployResult) -> None:
    justified = {"server.shell": "guarded"}
    converge.assert_idempotent(FakeTestbed(result), ["h-1"], ["base"], justified=justified)


def test_a_second_converge_that_changes_nothing_passes() -> None:
    idempotent(DeployResult(0, [op("A"), op("B", operation="server.shell", idem=False)]))


def test_a_converged_host_whose_plan_still_shows_a_change_fails() -> None:
    # The storage role's plan showed a restart its converge never did: a guarded input.
    unchanged = DeployResult(0, [op("Install"), op("Restart")])
    planned = DeployResult(0, [op("Install"), op("Restart", "changed")])
    with pytest.raises(AssertionError):
        converge.assert_idempotent(FakeTestbed(unchanged, plan=planned), ["h-1"], ["base"])
    converge.assert_idempotent(FakeTestbed(unchanged, plan=unchanged), ["h-1"], ["base"])


@pytest.mark.parametrize(
    "result",
    [
        DeployResult(1, [op("A")]),
        DeployResult(0, [op("A", "changed")]),
        DeployResult(0, [op("A", operation="server.script", idem=False)]),
    ],
    ids=["failed", "changed", "unjustified"],
)
def test_a_second_converge_that_fails_changes_or_runs_unjustified_commands_fails(
    result: DeployResult,
) -> None:
    with pytest.raises(AssertionError):
        idempotent(result)


def dry_run(result: DeployResult, after: str = "same") -> None:
    converge.assert_dry_run(
        FakeTestbed(result, after),
        HOST,
        "/etc/x",
        roles=["base"],
        overrides={},
        changed=["A"],
        shows=["+ new line"],
    )


def test_a_dry_run_that_plans_the_change_and_shows_it_passes() -> None:
    dry_run(DeployResult(0, [op("A", "changed")], output="--- old\n+   new   line\n"))


@pytest.mark.parametrize(
    ("result", "after"),
    [
        (DeployResult(0, [op("A", "changed")], output="+ new line"), "changed on the host"),
        (DeployResult(0, [op("A", "changed"), op("B", "changed")], output="+ new line"), "same"),
        (DeployResult(0, [op("A", "changed")], output="- old line"), "same"),
    ],
    ids=["touched-the-file", "other-changes", "no-diff"],
)
def test_a_dry_run_that_touches_the_file_plans_more_or_hides_the_diff_fails(
    result: DeployResult, after: str
) -> None:
    with pytest.raises(AssertionError):
        dry_run(result, after)


def test_group_data_with_adds_the_line_to_a_copy(tmp_path: Path) -> None:
    copy = converge.group_data_with(tmp_path, "all.py", "base_x = 1")
    assert (copy / "all.py").read_text().endswith("\nbase_x = 1\n")
    assert (copy / "local.py").is_file()


@pytest.mark.parametrize(
    ("result", "logins", "fails"),
    [
        (DeployResult(2, output="all.py:  base_x:\n bad"), "", False),
        (DeployResult(1), "", True),
        (DeployResult(2, [op("A")]), "", True),
        (DeployResult(2), "Accepted publickey for maha", True),
    ],
    ids=["refused", "other-exit", "operations-ran", "logged-in"],
)
def test_settings_refused_before_any_login(
    monkeypatch: pytest.MonkeyPatch, result: DeployResult, logins: str, fails: bool
) -> None:
    monkeypatch.setattr(converge.time, "sleep", lambda _seconds: None)
    testbed = FakeTestbed(result, logins=logins)
    if fails:
        with pytest.raises(AssertionError):
            converge.assert_stopped_before_login(testbed, HOST, ["base"], Path("gd"))
    else:
        output = converge.assert_stopped_before_login(testbed, HOST, ["base"], Path("gd"))
        assert "all.py: base_x: bad" in output
