"""The exported Ansible project on fresh test-bed hosts: lint-clean, reaches the base role's
promises (the same checks as the pyinfra tests), idempotent, deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mahaops.ansible_export import export
from mahaops.ansible_export.playbook import PlaybookRun, check, run_playbook
from mahaops.local.hosts import LocalHost
from tests.checks import base as checks
from tests.conftest import Testbed, infra

pytestmark = pytest.mark.testbed


@pytest.fixture(scope="module")
def host(testbed: Testbed) -> LocalHost:
    return testbed.host("base")


@pytest.fixture(scope="module")
def project(testbed: Testbed, host: LocalHost, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ansible") / "project"
    result = export(testbed.env, out, limit=[host.name])
    assert result.ok, result.output
    return out


@pytest.fixture(scope="module")
def first_run(project: Path, host: LocalHost) -> PlaybookRun:
    run = run_playbook(project, limit=[host.name])
    assert run.ok, run.output[-6000:]
    return run


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".ansible" not in p.relative_to(root).parts
    }


def test_export_is_deterministic(
    testbed: Testbed, host: LocalHost, project: Path, tmp_path: Path
) -> None:
    again = tmp_path / "again"
    result = export(testbed.env, again, limit=[host.name])
    assert result.ok, result.output
    first, second = _tree(project), _tree(again)
    assert sorted(first) == sorted(second)
    assert [p for p in first if first[p] != second[p]] == []


def test_exported_project_passes_syntax_check(project: Path) -> None:
    proc = check(project, "syntax")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_exported_project_passes_ansible_lint_production_profile(project: Path) -> None:
    proc = check(project, "lint")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def test_exported_project_uses_native_modules_and_shares_templates_verbatim(project: Path) -> None:
    tasks = (project / "roles/base/tasks/main.yml").read_text()
    assert "ansible.builtin.shell" not in tasks
    # The one command reads sshd's effective settings for the assert after it: never a change.
    commands = [t for t in yaml.safe_load(tasks) if "ansible.builtin.command" in t]
    assert [(c["ansible.builtin.command"], c["changed_when"]) for c in commands] == [
        ({"argv": ["/usr/sbin/sshd", "-T"]}, False)
    ]
    # sshd checks the new file before it is put in place (then the reload is recorded owed)
    harden = next(t for t in yaml.safe_load(tasks) if t["name"] == "Harden sshd")
    validate = harden["ansible.builtin.template"]["validate"]
    assert validate.startswith('sh -c \'/usr/sbin/sshd -t -f "$1" && ')
    assert validate.endswith(" %s")
    template = "sshd_config.j2"
    shared = Path(__file__).parents[2] / "templates/base" / template
    assert (project / "roles/base/templates" / template).read_bytes() == shared.read_bytes()


def test_exported_playbook_changes_a_fresh_host(first_run: PlaybookRun, host: LocalHost) -> None:
    assert first_run.recap[host.name]["changed"] > 0
    assert first_run.recap[host.name]["failed"] == 0


def test_exported_playbook_reaches_the_base_promises(
    first_run: PlaybookRun, host: LocalHost
) -> None:
    checks.check_base(host, infra(host))


def test_second_ansible_run_changes_nothing(
    first_run: PlaybookRun, project: Path, host: LocalHost
) -> None:
    second = run_playbook(project, limit=[host.name])
    assert second.ok, second.output[-6000:]
    assert second.recap[host.name]["changed"] == 0, second.output[-6000:]
