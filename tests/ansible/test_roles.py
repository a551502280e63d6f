"""Every exported role beyond base, run with ansible-playbook on fresh test-bed hosts: the
same role checks as the pyinfra tests (tests/checks/), and a second run that changes
nothing. One export and one run for all of them, as an operator would converge a platform.
"""

from __future__ import annotations

import re
import secrets as _random
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from mahaops.ansible_export import export
from mahaops.ansible_export.playbook import PlaybookRun, ansible_env, check, run_playbook, tool
from mahaops.ansible_export.record import to_host
from mahaops.local.hosts import LocalHost
from mahaops.roles import deployable_roles
from mahaops.secrets import LocalSecretStore
from tests.checks import app as app_checks
from tests.checks import cache as cache_checks
from tests.checks import db as db_checks
from tests.checks import lb as lb_checks
from tests.checks import log as log_checks
from tests.checks import mail as mail_checks
from tests.checks import worker as worker_checks
from tests.conftest import Testbed, infra

pytestmark = [pytest.mark.testbed, pytest.mark.slow]

# Roles whose exported role is run and checked here (base: test_base.py). A role that
# lands later joins this list with its checks once its export is verified.
CHECKED = ("db", "cache", "log", "mail", "app", "worker", "lb")


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


def test_no_task_of_the_real_deploys_is_guarded_by_host_names(platform: Platform) -> None:
    # Host-specific values are variables (host_vars, group_vars, inventory expressions).
    for path in sorted((platform.project / "roles").rglob("*.yml")):
        assert "inventory_hostname in" not in path.read_text(), path


def test_exported_platform_passes_syntax_check_and_production_lint(platform: Platform) -> None:
    for playbook in ("site.yml", "release.yml", "scale.yml", "replace.yml"):
        proc = check(platform.project, "syntax", playbook)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = check(platform.project, "lint")  # every playbook and role
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


def test_exported_playbook_runs_the_mail_sink_for_the_workers(
    testbed: Testbed, platform: Platform
) -> None:
    sink, worker = platform.hosts["mail"], platform.hosts["worker"]
    mail_checks.check_mail(infra(sink))
    message_id = f"<ansible-{_random.token_hex(4)}@maha.test>"
    send = mail_checks.send_script(
        sink.private_address, 25, "c@maha.test", "someone@example.test", message_id
    )
    testbed.exec(worker, send)
    assert mail_checks.sink_stats(testbed, sink, f"Message-ID={message_id}")["messages"] == 1


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
    for role in ("db", "cache", "log", "mail", "lb", "app", "worker"):
        assert changed.get(platform.hosts[role].name, []) == [], second.output[-8000:]


# -- the exported project keeps up: a host added by hand, a rolling release (issue 13) -----


def add_to_inventory(project: Path, new: LocalHost, sibling: LocalHost) -> None:
    """What an Ansible user does: the host under its kind and its role group in
    inventory.yml, and host_vars/<host>.yml copied from a sibling's, its address changed."""
    path = project / "inventory.yml"
    inventory = yaml.safe_load(path.read_text())
    children = inventory["all"]["children"]
    children["local"]["hosts"][new.name] = to_host(new.spec()).connection
    children["app_servers"].setdefault("hosts", {})[new.name] = {}
    path.write_text(yaml.safe_dump(inventory))
    own = yaml.safe_load((project / "host_vars" / f"{sibling.name}.yml").read_text())
    assert own["private_address"] == sibling.private_address
    own["private_address"] = new.private_address
    (project / "host_vars" / f"{new.name}.yml").write_text(yaml.safe_dump(own))


@dataclass
class Grown:
    new: LocalHost  # the app server added to the exported inventory
    run: PlaybookRun  # scale.yml
    limit: list[str]  # the platform's hosts and the new one (not the stand-in services)


@pytest.fixture(scope="module")
def grown(testbed: Testbed, platform: Platform) -> Grown:
    new = testbed.host("app")
    add_to_inventory(platform.project, new, platform.hosts["app"])
    limit = [*(h.name for h in platform.hosts.values()), new.name]
    run = run_playbook(
        platform.project, limit=limit, playbook="scale.yml", extra=["-e", f"scale_hosts={new.name}"]
    )
    assert run.ok, run.output[-8000:]
    db_checks.install_clients(testbed, new)  # psql and redis-cli, as a client
    return Grown(new, run, limit)


def test_an_app_server_added_to_the_inventory_converges_with_scale_yml(grown: Grown) -> None:
    assert grown.run.recap[grown.new.name]["changed"] > 0
    assert grown.run.recap[grown.new.name]["failed"] == 0
    app_checks.check_app(grown.new, infra(grown.new))


def test_the_added_app_servers_peers_admit_it(
    testbed: Testbed, platform: Platform, grown: Grown
) -> None:
    store = LocalSecretStore(testbed.env)
    db, cache, lb = (platform.hosts[r] for r in ("db", "cache", "lb"))
    hba = infra(db).file("/etc/postgresql/15/main/pg_hba.conf").content_string
    assert f"{grown.new.private_address}/32" in hba
    db_checks.check_client_connects(
        testbed, db, grown.new, store.get("postgresql_password_maha_app") or ""
    )
    cache_checks.check_auth(testbed, cache, grown.new, store.get("redis_password") or "")
    app = platform.hosts["app"]
    lb_checks.check_lb(
        infra(lb), {app.name: app.private_address, grown.new.name: grown.new.private_address}
    )
    # The load balancer sends it traffic once its health checks pass.
    deadline = time.monotonic() + 60
    while True:
        _, headers, _ = app_checks.http(infra(lb), "http://127.0.0.1/health")
        if headers.get("x-maha-server") == grown.new.name:
            break
        assert time.monotonic() < deadline, "the load balancer never sent the new server traffic"
        time.sleep(1)


def test_scaling_out_leaves_the_other_app_server_untouched(
    platform: Platform, grown: Grown
) -> None:
    assert grown.run.changed_tasks.get(platform.hosts["app"].name, []) == []


def _health_checked(output: str) -> list[str]:
    """The hosts, in order, that release.yml's health check ran on."""
    hosts, inside = [], False
    for line in output.splitlines():
        if line.startswith("TASK ["):
            inside = "answers its health check" in line
        elif inside and line.startswith(("ok: [", "failed: [", "fatal: [")):
            hosts.append(line.split("[", 1)[1].split("]", 1)[0])
    return hosts


def test_release_yml_checks_each_app_server_before_the_next(
    platform: Platform, grown: Grown
) -> None:
    run = run_playbook(platform.project, limit=grown.limit, playbook="release.yml")
    assert run.ok, run.output[-8000:]
    servers = sorted([platform.hosts["app"].name, grown.new.name])
    assert _health_checked(run.output) == servers
    assert run.output.count("PLAY [Release on the app servers, one at a time]") == len(servers)
    assert run.recap[platform.hosts["worker"].name]["failed"] == 0


def test_release_yml_stops_at_an_unhealthy_app_server(
    testbed: Testbed, platform: Platform, grown: Grown
) -> None:
    first, second = sorted([platform.hosts["app"], grown.new], key=lambda h: h.name)
    backing = app_checks.backing_services(testbed)["app_database_host"]
    # The first app server loses its database and Redis: its /health answers 503.
    block = (
        "nft add table inet maha_test && nft add chain inet maha_test out "
        "'{ type filter hook output priority 0; }' && "
        f"nft add rule inet maha_test out ip daddr {backing} drop"
    )
    testbed.exec(first, block)
    try:
        run = run_playbook(
            platform.project,
            limit=grown.limit,
            playbook="release.yml",
            extra=["-e", "app_health_retries=3"],
        )
    finally:
        testbed.exec(first, "nft delete table inet maha_test")
    assert not run.ok
    assert _health_checked(run.output) == [first.name]
    assert second.name not in run.recap and platform.hosts["worker"].name not in run.recap


def test_replace_yml_drains_the_old_app_server_and_stops_it(
    testbed: Testbed, platform: Platform, grown: Grown
) -> None:
    # The new host is the one scale.yml added (converging it again changes nothing); the
    # old one is the platform's first app server. It stops serving: only the fault test,
    # which reads neither, comes after.
    old, lb = platform.hosts["app"], platform.hosts["lb"]
    run = run_playbook(
        platform.project,
        limit=grown.limit,
        playbook="replace.yml",
        extra=["-e", f"replace_new={grown.new.name}", "-e", f"replace_old={old.name}"],
    )
    assert run.ok, run.output[-8000:]
    assert "Drain the old host, then take it out of service" in run.changed_tasks[lb.name]
    ask = (
        "import socket; s = socket.socket(socket.AF_UNIX); "
        "s.connect('/run/haproxy/admin.sock'); s.sendall(b'show stat\\n'); "
        "print(s.makefile().read())"
    )
    stat = testbed.exec(lb, f'python3 -c "{ask}"')
    [row] = [r.split(",") for r in stat.splitlines() if r.startswith(f"app_servers,{old.name},")]
    assert row[17] == "MAINT", row  # status
    assert not infra(old).service("maha-web").is_running
    servers = {
        app_checks.http(infra(lb), "http://127.0.0.1/health")[1].get("x-maha-server")
        for _ in range(6)
    }
    assert servers == {grown.new.name}


# -- a new host dies during scale.yml (issue 13) ----------------------------------------------


def _admitted(testbed: Testbed, platform: Platform, host: LocalHost) -> dict[str, bool]:
    """Where ``host`` is let in: PostgreSQL's pg_hba, the db's and cache's firewalls (the
    rulesets the base role loads) and the load balancer's backends."""
    network = f"{host.private_address}/32"
    db, cache, lb = (platform.hosts[r] for r in ("db", "cache", "lb"))
    return {
        "pg_hba": network in testbed.exec(db, "cat /etc/postgresql/15/main/pg_hba.conf").split(),
        "db nftables": f" {network}" in testbed.exec(db, "cat /etc/nftables.conf"),
        "cache nftables": f" {network}" in testbed.exec(cache, "cat /etc/nftables.conf"),
        "haproxy": f"server {host.name} " in testbed.exec(lb, "cat /etc/haproxy/haproxy.cfg"),
    }


def test_an_app_server_killed_mid_scale_is_named_not_admitted_and_a_rerun_completes(
    testbed: Testbed, platform: Platform, grown: Grown
) -> None:
    # Last in this module: it adds a third app server (the release and replace tests count
    # the app servers they reach). "localhost" in --limit: the control node keeps the run
    # going past a dead host and settles it.
    new = testbed.host("app")
    add_to_inventory(platform.project, new, grown.new)
    limit = [*grown.limit, new.name, "localhost"]
    command = [tool("ansible-playbook"), "scale.yml", "-e", f"scale_hosts={new.name}"]
    command += ["--limit", ",".join(limit)]
    proc = subprocess.Popen(
        command,
        cwd=platform.project,
        env=ansible_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    killed = False
    for line in proc.stdout:
        lines.append(line)
        if not killed and line.startswith("TASK [app : "):
            # Killed while its role converges: the db and cache admit it already.
            time.sleep(3)
            testbed.environment.client.containers.get(new.container).kill()
            killed = True
    output = "".join(lines)
    assert proc.wait(600) != 0, output[-8000:]
    assert killed, output[-8000:]
    assert f"{new.name} failed during scale.yml" in output, output[-8000:]
    assert not any(_admitted(testbed, platform, new).values()), (
        _admitted(testbed, platform, new),
        output[-8000:],
    )

    # Back (Docker may give it another port and address), the same command finishes it.
    testbed.environment.client.containers.get(new.container).start()
    [back] = [h for h in testbed.environment.hosts() if h.name == new.name]
    testbed.environment.wait_for_ssh(back)
    add_to_inventory(platform.project, back, grown.new)
    run = run_playbook(
        platform.project,
        limit=limit,
        playbook="scale.yml",
        extra=["-e", f"scale_hosts={new.name}"],
    )
    assert run.ok, run.output[-8000:]
    assert all(_admitted(testbed, platform, back).values())
    app_checks.check_app(back, infra(back))
    lb = platform.hosts["lb"]
    deadline = time.monotonic() + 60
    while True:
        _, headers, _ = app_checks.http(infra(lb), "http://127.0.0.1/health")
        if headers.get("x-maha-server") == back.name:
            break
        assert time.monotonic() < deadline, "the load balancer never sent the new server traffic"
        time.sleep(1)
    assert re.search(rf"^{re.escape(back.name)}\s*:.*failed=0", run.output, re.M)
