"""A run killed (SIGKILL of the runner) after writing a configuration and before its
restart or reload still leaves that restart owed on the host: the next plain run does it,
although nothing it writes changes any more (issue 14, defect 2).

The kill is placed exactly: a stand-in ``mkdir`` first on sudo's PATH stops the run the
moment it goes to record a restart as owed with the new configuration already on disk
(the restart's own command), and the test then kills the runner. A run that recorded the
restart only there (before this fix) leaves nothing, and the next run restarts nothing.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from mahaops import PROJECT_ROOT
from mahaops.local.hosts import LocalHost
from mahaops.runner import deploy_command
from tests.conftest import Testbed

pytestmark = pytest.mark.testbed

OWED = "/var/lib/maha/pending-restart"
TRAP = "/usr/local/sbin/mkdir"  # before /bin on sudo's secure_path
TRAPPED = "/run/maha-test-trapped"  # the stopped command's PID


@pytest.fixture(scope="module")
def server(testbed: Testbed) -> Iterator[LocalHost]:
    host = testbed.host("base", name="owe-base-1")
    first = testbed.deploy(roles=["base"], limit=[host.name])
    assert first.ok, first.output
    yield host


def kill_the_run_at_its_restart(
    testbed: Testbed, host: LocalHost, path: str, written: str, overrides: Mapping[str, Any]
) -> None:
    """Run the base role with ``overrides`` and SIGKILL the runner once ``path`` holds
    ``written`` and the run goes on to record a restart as owed."""
    trap = (
        "#!/bin/sh\n"
        f'case "$*" in *{OWED}*)\n'
        f"  if grep -qF {shlex.quote(written)} {shlex.quote(path)} 2>/dev/null; then\n"
        f"    echo $$ > {TRAPPED}; exec sleep 600\n"
        "  fi;;\n"
        "esac\n"
        'exec /bin/mkdir "$@"\n'
    )
    testbed.exec(host, f"rm -f {TRAPPED}; printf %s {shlex.quote(trap)} > {TRAP}; chmod 755 {TRAP}")
    command = deploy_command(testbed.env, ["base"], [host.name], overrides=overrides, quiet=True)
    run = subprocess.Popen(
        command, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 300
        while testbed.exec(host, f"cat {TRAPPED} 2>/dev/null", check=False).strip() == "":
            assert run.poll() is None, "the run ended before it reached the restart"
            assert time.monotonic() < deadline, "the run never reached the restart"
            time.sleep(0.2)
    finally:
        run.kill()
        run.wait()
        stopped = testbed.exec(host, f"cat {TRAPPED} 2>/dev/null", check=False).strip()
        testbed.exec(host, f"rm -f {TRAP} {TRAPPED}")
        if stopped.isdigit():
            testbed.exec(host, f"kill {stopped}", check=False)


def main_pid(testbed: Testbed, host: LocalHost, service: str) -> str:
    return testbed.exec(host, f"systemctl show -p MainPID --value {service}").strip()


def test_a_restart_is_owed_from_before_its_config_is_written(
    testbed: Testbed, server: LocalHost
) -> None:
    """journald's limits written, the run killed before their restart: the next run
    restarts journald, and only that; the run after changes nothing."""
    conf = "/etc/systemd/journald.conf.d/90-maha.conf"
    new = {"base_journald_system_max_use": "321M"}
    before = main_pid(testbed, server, "systemd-journald")

    kill_the_run_at_its_restart(testbed, server, conf, "SystemMaxUse=321M", new)
    assert "SystemMaxUse=321M" in testbed.exec(server, f"cat {conf}")
    assert main_pid(testbed, server, "systemd-journald") == before  # the old limits still run

    again = testbed.deploy(roles=["base"], limit=[server.name], overrides=new)
    assert again.ok, again.output
    assert [op.name for op in again.changed] == ["Base | Restart journald for the new limits"]
    assert main_pid(testbed, server, "systemd-journald") != before
    assert testbed.exec(server, f"ls {OWED}").split() == []
    settled = testbed.deploy(roles=["base"], limit=[server.name], overrides=new)
    assert settled.ok and settled.changed == [], settled.output
