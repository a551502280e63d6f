"""Every exported role beyond base, run with ansible-playbook on fresh test-bed hosts: the
same role checks as the pyinfra tests (tests/checks/), and a second run that changes
nothing. One export and one run for all of them, as an operator would converge a platform.
"""

from __future__ import annotations

import secrets as _random
from dataclasses import dataclass
from pathlib import Path

import pytest

from mahaops.ansible_export import export
from mahaops.ansible_export.playbook import PlaybookRun, check, run_playbook
from mahaops.local.hosts import LocalHost
from mahaops.roles import deployable_roles
from mahaops.secrets import LocalSecretStore
from tests.checks import app as app_checks
from tests.checks import cache as cache_checks
from tests.checks import db as db_checks
from tests.checks import lb as lb_checks
from tests.checks import log as log_checks
from tests.checks import worker as worker_checks
from tests.conftest import Testbed, infra

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

# Roles whose exported role is run and checked here (base: test_base.py). A role that
# lands later joins this list with its checks once its export is verified.
CHECKED = ("db", "cache", "log", "app", "worker", "lb")


@dataclass
class Platform:
    project: Path
    hosts: dict[str, LocalHost]  # role -> its fresh host
    first: PlaybookRun

    def again(self) -> PlaybookRun:
        return run_playbook(self.project, limit=[h.name for h in self.hosts.values()])


@pytest.fixture(scope="module")
def platform(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Platform:
    backing = app_checks.backing_services(testbed)  # stand-in PostgreSQL and Redis
    hosts = {role: testbed.host(role) for role in CHECKED}
    names = [h.name for h in hosts.values()]
    project = tmp_path_factory.mktemp("platform") / "project"
    exported = export(testbed.env, project, limit=names, overrides=backing)
    assert exported.ok, exported.output
    again = export(testbed.env, project.with_name("again"), limit=names, overrides=backing)
    assert again.ok, again.output
    first = run_playbook(project, limit=names)
    assert first.ok, first.output[-8000:]
    db_checks.install_clients(testbed, hosts["app"])  # psql and redis-cli, as a client
    return Platform(project, hosts, first)


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".ansible" not in p.relative_to(root).parts
    }


def test_exporting_every_role_twice_gives_byte_identical_trees(platform: Platform) -> None:
    first, again = _tree(platform.project), _tree(platform.project.with_name("again"))
    assert sorted(first) == sorted(again)
    assert [path for path in first if first[path] != again[path]] == []


def test_every_checked_deploy_is_exported_as_a_role(platform: Platform) -> None:
    exported = sorted(p.name for p in (platform.project / "roles").iterdir())
    assert exported == sorted(["base", *CHECKED])
    assert set(CHECKED) <= set(deployable_roles())


def test_exported_platform_passes_syntax_check_and_production_lint(platform: Platform) -> None:
    for what in ("syntax", "lint"):
        proc = check(platform.project, what)
        assert proc.returncode == 0, proc.stdout + proc.stderr


def test_exported_playbook_reaches_the_db_promises(testbed: Testbed, platform: Platform) -> None:
    password = LocalSecretStore(testbed.env).get("postgresql_password_maha_app")
    assert password, "the db deploy asks for the maha_app password"
    db_checks.check_db(testbed, platform.hosts["db"], platform.hosts["app"], password)


def test_exported_playbook_reaches_the_cache_promises(testbed: Testbed, platform: Platform) -> None:
    store = LocalSecretStore(testbed.env)
    password, admin = store.get("redis_password"), store.get("redis_admin_password")
    assert password and admin, "the cache deploy asks for the Redis passwords"
    cache_checks.check_cache(
        testbed, platform.hosts["cache"], platform.hosts["app"], password, admin
    )


def test_exported_playbook_serves_the_release_on_the_app_server(platform: Platform) -> None:
    app = platform.hosts["app"]
    app_checks.check_app(app, infra(app))


def test_exported_playbook_runs_the_worker_hardened(platform: Platform) -> None:
    worker_checks.check_worker(infra(platform.hosts["worker"]))


def test_exported_playbook_reaches_the_lb_promises(testbed: Testbed, platform: Platform) -> None:
    app_servers = {
        h.name: h.private_address for h in testbed.environment.hosts() if h.role == "app"
    }
    lb_checks.check_lb(infra(platform.hosts["lb"]), app_servers)


def test_exported_playbook_ships_app_server_logs_to_the_log_server(
    testbed: Testbed, platform: Platform
) -> None:
    log_host, app = platform.hosts["log"], platform.hosts["app"]
    text = f"maha-ansible-{_random.token_hex(4)}"
    log_checks.log_as(testbed, app, "maha-web", text)
    line = log_checks.arrived_line(testbed, log_host, app.name, "maha-web", text)
    assert line is not None, "the line never reached the log server"
    tags = log_checks.tags(line)
    assert (tags["host"], tags["role"], tags["service"]) == (app.name, "app", "maha-web")


def test_exported_project_reads_secrets_from_outside_the_export(
    testbed: Testbed, platform: Platform
) -> None:
    store = LocalSecretStore(testbed.env)
    value = store.get("postgresql_password_maha_app")
    assert value, "the app deploy asks for the database password"
    for path in platform.project.rglob("*"):
        if path.is_file():
            assert value.encode() not in path.read_bytes(), path
    all_vars = (platform.project / "group_vars/all.yml").read_text()
    assert f"maha_secrets_file: {store.path}" in all_vars


def test_second_ansible_run_changes_nothing(platform: Platform) -> None:
    second = platform.again()
    assert second.ok, second.output[-8000:]
    changed = second.changed_tasks
    for role in ("db", "cache", "log", "lb", "app", "worker"):
        assert changed.get(platform.hosts[role].name, []) == [], second.output[-8000:]
