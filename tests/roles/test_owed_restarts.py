"""What a killed run leaves, the next plain run finishes. A run killed (SIGKILL of the
runner) after writing a configuration and before its restart or reload still leaves that
restart owed on the host: the next plain run does it, although nothing it writes changes
any more (issue 14, defect 2). A dpkg killed mid-install is finished before the next
install.

The kill is placed exactly: stand-in ``mkdir`` and ``systemctl`` first on sudo's PATH stop
the run the moment, with the new configuration already on disk, it goes to record a
restart as owed (the restart's own command; the exported playbook's handler) or to
restart, and the test then kills the run. A run that recorded the restart only there
(before this fix) leaves nothing, and the next run restarts nothing.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from mahaops import PROJECT_ROOT
from mahaops.ansible_export import export
from mahaops.ansible_export.playbook import ansible_env, run_playbook, tool
from mahaops.local.hosts import LocalHost
from mahaops.runner import deploy_command
from tests.checks import app as checks
from tests.checks import converge
from tests.conftest import Testbed

pytestmark = pytest.mark.testbed

OWED = "/var/lib/maha/pending-restart"
# Stand-ins first on sudo's secure_path: the run stops at whichever comes first once the new
# configuration is on disk, recording a restart as owed or restarting (reloading).
TRAP_MKDIR, TRAP_SYSTEMCTL = "/usr/local/sbin/mkdir", "/usr/local/sbin/systemctl"
TRAPPED = "/run/maha-test-trapped"  # the stopped command's PID
JOURNALD = "/etc/systemd/journald.conf.d/90-maha.conf"


@pytest.fixture(scope="module")
def server(testbed: Testbed) -> Iterator[LocalHost]:
    host = testbed.host("base", name="owe-base-1")
    first = testbed.deploy(roles=["base"], limit=[host.name])
    assert first.ok, first.output
    yield host


def kill_the_run_at_its_restart(
    testbed: Testbed,
    host: LocalHost,
    path: str,
    written: str,
    command: list[str],
    cwd: Path,
    env: Mapping[str, str] | None = None,
) -> None:
    """Run ``command`` (a deploy) and SIGKILL it, with every process it started, once
    ``path`` holds ``written`` and the run goes on to record a restart as owed, or to
    restart or reload a service."""
    new = f"grep -qF {shlex.quote(written)} {shlex.quote(path)} 2>/dev/null"
    stop = f"echo $$ > {TRAPPED}; exec sleep 600"
    mkdir = f'case "$*" in *{OWED}*) if {new}; then {stop}; fi;; esac\nexec /bin/mkdir "$@"\n'
    systemctl = (
        f'case "$1" in restart|reload) if {new}; then {stop}; fi;; esac\nexec /bin/systemctl "$@"\n'
    )
    for trap, body in ((TRAP_MKDIR, mkdir), (TRAP_SYSTEMCTL, systemctl)):
        script = shlex.quote(f"#!/bin/sh\n{body}")
        testbed.exec(host, f"printf %s {script} > {trap} && chmod 755 {trap}")
    testbed.exec(host, f"rm -f {TRAPPED}")
    run = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the run and its workers die at once
    )
    try:
        deadline = time.monotonic() + 300
        while testbed.exec(host, f"cat {TRAPPED} 2>/dev/null", check=False).strip() == "":
            assert run.poll() is None, "the run ended before it reached the restart"
            assert time.monotonic() < deadline, "the run never reached the restart"
            time.sleep(0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        stopped = testbed.exec(host, f"cat {TRAPPED} 2>/dev/null", check=False).strip()
        testbed.exec(host, f"rm -f {TRAP_MKDIR} {TRAP_SYSTEMCTL} {TRAPPED}")
        if stopped.isdigit():
            testbed.exec(host, f"kill {stopped}", check=False)


def main_pid(testbed: Testbed, host: LocalHost, service: str) -> str:
    return testbed.exec(host, f"systemctl show -p MainPID --value {service}").strip()


def test_a_restart_is_owed_from_before_its_config_is_written(
    testbed: Testbed, server: LocalHost
) -> None:
    """journald's limits written, the run killed before their restart: the next run
    restarts journald, and only that; the run after changes nothing."""
    new = {"base_journald_system_max_use": "321M"}
    before = main_pid(testbed, server, "systemd-journald")

    command = deploy_command(testbed.env, ["base"], [server.name], overrides=new, quiet=True)
    kill_the_run_at_its_restart(
        testbed, server, JOURNALD, "SystemMaxUse=321M", command, cwd=PROJECT_ROOT
    )
    assert "SystemMaxUse=321M" in testbed.exec(server, f"cat {JOURNALD}")
    assert main_pid(testbed, server, "systemd-journald") == before  # the old limits still run

    again = testbed.deploy(roles=["base"], limit=[server.name], overrides=new)
    assert again.ok, again.output
    assert [op.name for op in again.changed] == ["Base | Restart journald for the new limits"]
    assert main_pid(testbed, server, "systemd-journald") != before
    assert testbed.exec(server, f"ls {OWED}").split() == []
    settled = testbed.deploy(roles=["base"], limit=[server.name], overrides=new)
    assert settled.ok and settled.changed == [], settled.output


def test_the_exported_playbook_owes_the_restart_from_before_the_config_is_written(
    testbed: Testbed, server: LocalHost, tmp_path: Path
) -> None:
    """The same with the exported Ansible project: the template's ``validate`` records the
    restart as owed before the new file is put in place; ansible-playbook is killed before
    the restart's handler; the next run's ``stat`` of the marker notifies the restart."""
    new = {"base_journald_system_max_use": "123M"}
    project = tmp_path / "project"
    exported = export(testbed.env, project, limit=[server.name], roles=["base"], overrides=new)
    assert exported.ok, exported.output
    before = main_pid(testbed, server, "systemd-journald")

    playbook = [tool("ansible-playbook"), "site.yml", "--limit", server.name]
    kill_the_run_at_its_restart(
        testbed, server, JOURNALD, "SystemMaxUse=123M", playbook, cwd=project, env=ansible_env()
    )
    assert "SystemMaxUse=123M" in testbed.exec(server, f"cat {JOURNALD}")
    assert main_pid(testbed, server, "systemd-journald") == before

    again = run_playbook(project, limit=[server.name])
    assert again.ok, again.output[-4000:]
    restarted = [t.split(" (")[0] for t in again.changed_tasks[server.name]]
    assert "Restart journald for the new limits" in restarted, again.changed_tasks
    assert main_pid(testbed, server, "systemd-journald") != before
    assert testbed.exec(server, f"ls {OWED}").split() == []


def test_a_reload_is_owed_from_before_its_config_is_written(
    testbed: Testbed, server: LocalHost
) -> None:
    """The firewall's rules written (a port opened), the run killed before they are
    loaded: the next run loads them (the live ruleset has the port), and the run after
    changes nothing. sshd and PostgreSQL's access rules are reloaded the same way."""
    rules, opened = "/etc/nftables.conf", {"base_firewall_extra_ports": [8089]}
    command = deploy_command(testbed.env, ["base"], [server.name], overrides=opened, quiet=True)
    kill_the_run_at_its_restart(testbed, server, rules, "8089", command, cwd=PROJECT_ROOT)
    assert "8089" in testbed.exec(server, f"cat {rules}")
    assert "8089" not in testbed.exec(server, "nft list ruleset")  # written, never loaded

    again = testbed.deploy(roles=["base"], limit=[server.name], overrides=opened)
    assert again.ok, again.output
    assert [op.name for op in again.changed] == ["Base | Load the new firewall rules"]
    assert "8089" in testbed.exec(server, "nft list ruleset")
    assert testbed.exec(server, f"ls {OWED}").split() == []
    settled = testbed.deploy(roles=["base"], limit=[server.name], overrides=opened)
    assert settled.ok and settled.changed == [], settled.output


def test_a_dpkg_killed_mid_install_is_finished_before_the_next_install(
    testbed: Testbed, server: LocalHost
) -> None:
    """dpkg killed while it configures a package (its postinst kills it, once) leaves dpkg
    interrupted: apt refuses every install until ``dpkg --configure -a``. A plain deploy
    with a package to install finishes dpkg's work first and installs it."""
    build, deb = "/tmp/maha-killed-dpkg", "/tmp/maha-killed-dpkg.deb"
    control = (
        "Package: maha-killed-dpkg\nVersion: 1\nArchitecture: all\n"
        "Maintainer: test <test@example.org>\nDescription: dpkg killed in its postinst\n"
    )
    postinst = (
        "#!/bin/sh\nif [ ! -e /var/tmp/maha-killed-once ]; then\n"
        "  touch /var/tmp/maha-killed-once; kill -9 $PPID\nfi\nexit 0\n"
    )
    testbed.exec(
        server,
        f"mkdir -p {build}/DEBIAN && printf %s {shlex.quote(control)} > {build}/DEBIAN/control"
        f" && printf %s {shlex.quote(postinst)} > {build}/DEBIAN/postinst"
        f" && chmod 755 {build}/DEBIAN/postinst && dpkg-deb --build {build} {deb}",
    )
    testbed.exec(server, "apt-get remove -y htop")  # the next deploy has one to install
    try:
        testbed.exec(server, f"dpkg -i {deb}", check=False)
        assert testbed.exec(server, "ls -A /var/lib/dpkg/updates").split() != []
        refused = testbed.exec(server, "apt-get install -y --no-download htop", check=False)
        assert "dpkg was interrupted" in refused

        done = testbed.deploy(roles=["base"], limit=[server.name])
        assert done.ok, done.output
        status = "dpkg-query -W -f '${Status}\\n' htop maha-killed-dpkg"
        assert testbed.exec(server, status).splitlines() == ["install ok installed"] * 2
        assert testbed.exec(server, "ls -A /var/lib/dpkg/updates").split() == []
    finally:
        testbed.exec(server, "dpkg --configure -a; dpkg -P maha-killed-dpkg", check=False)


def test_an_app_service_restart_for_a_new_environment_survives_a_killed_run(
    testbed: Testbed,
) -> None:
    """maha-web's environment file rewritten (a new ``app_env`` value), the run killed
    before the restart: the process still runs the current release, so only the release's
    marker, written before the file, makes the next run restart it and check it."""
    backing = checks.backing_services(testbed)
    server, _ = converge.fresh_host(testbed, "app", "owe-app-1", ["base", "app"], backing)
    env_file, new = "/srv/maha/shared/maha.env", {**backing, "app_env": {"MAHA_OWED": "yes"}}
    before = main_pid(testbed, server, "maha-web")

    command = deploy_command(testbed.env, ["base", "app"], [server.name], overrides=new, quiet=True)
    kill_the_run_at_its_restart(testbed, server, env_file, "MAHA_OWED=yes", command, PROJECT_ROOT)
    assert main_pid(testbed, server, "maha-web") == before
    assert testbed.exec(server, "ls /srv/maha/pending").split() == ["maha-web"]

    again = testbed.deploy(roles=["base", "app"], limit=[server.name], overrides=new)
    assert again.ok, again.output
    assert [op.status for op in again.named("Restart maha-web")] == ["changed"]
    pid = main_pid(testbed, server, "maha-web")
    assert pid != before
    # Read as the process's own user: root in a container may not read another's environ.
    environ = f'runuser -u "$(stat -c %U /proc/{pid})" -- cat /proc/{pid}/environ'
    assert "MAHA_OWED=yes" in testbed.exec(server, environ).split("\0")
    assert testbed.exec(server, "ls -A /srv/maha/pending").split() == []
