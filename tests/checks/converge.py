"""What every role promises of a converge, whatever the role: a second run changes
nothing, a dry run changes nothing yet shows its diff, and settings that do not
validate stop the deploy before any host is reached.

Functions of (test bed, hosts, deploy results), shared by the role tests.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mahaops import PROJECT_ROOT
from mahaops.local.hosts import LocalHost
from mahaops.runner import DeployResult


def fresh_host(
    testbed: Any,
    role: str,
    name: str,
    roles: Sequence[str],
    overrides: Mapping[str, Any] | None = None,
) -> tuple[LocalHost, DeployResult]:
    """A new host ``name`` labelled ``role``, converged to ``roles``; it and its first run."""
    host = testbed.host(role, name=name)
    first = testbed.deploy(roles=roles, limit=[host.name], overrides=overrides)
    assert first.ok, first.output
    return host, first


def assert_idempotent(
    testbed: Any,
    limit: Sequence[str],
    roles: Sequence[str],
    overrides: Mapping[str, Any] | None = None,
    justified: Mapping[str, str] | None = None,
    record: Callable[[DeployResult], DeployResult] = lambda result: result,
) -> None:
    """Converging the hosts ``limit`` to ``roles`` again succeeds and changes nothing; with
    ``justified`` (operation: why it is safe), it uses no non-idempotent operation left
    out of it. A dry run then plans nothing either (a restart guarded by an input that
    would not change is no planned change). ``record`` sees the results first."""
    second = record(testbed.deploy(roles=roles, limit=limit, overrides=overrides))
    assert second.ok, second.output
    assert [op.name for op in second.changed] == []
    plan = record(testbed.deploy(roles=roles, limit=limit, overrides=overrides, dry=True))
    assert plan.ok, plan.output
    assert [op.name for op in plan.changed] == [], plan.output[-3000:]
    if justified is None:
        return
    used = {op.operation for op in second.operations if not op.idempotent}
    unexplained = used - set(justified)
    assert not unexplained, f"non-idempotent operations without a justification: {unexplained}"


def assert_dry_run(
    testbed: Any,
    host: LocalHost,
    path: str,
    roles: Sequence[str],
    overrides: Mapping[str, Any],
    changed: Sequence[str],
    shows: Sequence[str] = (),
    record: Callable[[DeployResult], DeployResult] = lambda result: result,
) -> DeployResult:
    """A dry run of ``roles`` on ``host`` with ``overrides`` plans exactly the operations
    ``changed``, prints each of ``shows`` (white space folded: diffs wrap), and leaves
    ``path`` on the host as it was. ``record`` sees the result first (e.g. to keep its
    output for the no-secret checks)."""
    before = testbed.exec(host, f"sha1sum {path}")
    plan = record(testbed.deploy(roles=roles, limit=[host.name], dry=True, overrides=overrides))
    assert plan.ok, plan.output
    assert [op.name for op in plan.changed] == list(changed)
    output = " ".join(plan.output.split())
    for text in shows:
        assert text in output, text
    assert testbed.exec(host, f"sha1sum {path}") == before
    return plan


def group_data_with(tmp_path: Path, file: str, line: str) -> Path:
    """A copy of the project's group_data with ``line`` added at the end of ``file``."""
    group_data = tmp_path / "group_data"
    shutil.copytree(PROJECT_ROOT / "group_data", group_data)
    with (group_data / file).open("a") as handle:
        handle.write(f"\n{line}\n")
    return group_data


def assert_stopped_before_login(
    testbed: Any, host: LocalHost, roles: Sequence[str], group_data: Path
) -> str:
    """A deploy of ``roles`` on ``host`` with ``group_data`` is refused (exit 2) before any
    operation and before any SSH login to the host; its output, white space folded."""
    # From the next whole second on: `date +%s` rounds down, and the previous
    # test's own logins may share the current second.
    since = int(testbed.exec(host, "date +%s")) + 1
    time.sleep(1)

    result = testbed.deploy(roles=roles, limit=[host.name], group_data=group_data)

    assert result.returncode == 2, result.output
    assert result.operations == []
    logins = testbed.exec(host, f"journalctl -u ssh --since @{since} --no-pager", check=False)
    assert "Accepted publickey" not in logins
    return " ".join(result.output.split())
