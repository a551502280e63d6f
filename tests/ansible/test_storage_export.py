"""The storage role exported to Ansible, run on a fresh host of its own: lint-clean, the same
promises as the pyinfra test (tests/checks/storage.py), the wheelhouse copied into the
project, the access key read from the store (never written), and a second run that changes
nothing. Apart from test_roles.py so the whole platform's run there does not wait on it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from mahaops.ansible_export import export
from mahaops.ansible_export.playbook import PlaybookRun, check, run_playbook
from mahaops.local.hosts import LocalHost
from tests.checks import storage as checks
from tests.conftest import Testbed, infra

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

PORT = 9000


@dataclass
class Exported:
    project: Path
    host: LocalHost
    first: PlaybookRun


@pytest.fixture(scope="module")
def exported(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    host = testbed.host("storage", name="sx-storage-1")
    project = tmp_path_factory.mktemp("storage-export") / "project"
    result = export(testbed.env, project, limit=[host.name])
    assert result.ok, result.output
    first = run_playbook(project, limit=[host.name])
    assert first.ok, first.output[-8000:]
    return Exported(project, host, first)


def test_exported_storage_passes_production_lint(exported: Exported) -> None:
    proc = check(exported.project, "lint")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_the_wheelhouse_is_in_the_project_and_the_key_is_not(
    testbed: Testbed, exported: Exported
) -> None:
    wheelhouses = list((exported.project / "roles" / "storage").rglob("maha-s3-*.tar"))
    assert len(wheelhouses) == 1
    _, secret = checks.credentials(testbed.env)
    for path in exported.project.rglob("*"):
        if path.is_file() and path.suffix != ".tar":
            assert secret.encode() not in path.read_bytes(), path


def test_exported_playbook_runs_the_storage_server(
    testbed: Testbed, exported: Exported, tmp_path: Path
) -> None:
    checks.check_storage(infra(exported.host), PORT)
    s3 = checks.client(
        testbed.env, exported.host.ports[PORT], checks.ca_file(testbed.env, tmp_path)
    )
    s3.put_object(Bucket="maha-uploads", Key="from-ansible.txt", Body=b"ansible")
    got = s3.get_object(Bucket="maha-uploads", Key="from-ansible.txt")
    assert got["Body"].read() == b"ansible"


def test_second_ansible_run_changes_nothing(exported: Exported) -> None:
    second = run_playbook(exported.project, limit=[exported.host.name])
    assert second.ok, second.output[-8000:]
    assert second.changed_tasks.get(exported.host.name, []) == [], second.output[-8000:]
