"""The mail role on real hosts: an SMTP sink that a worker's message reaches and is stored,
that a host outside the workers cannot reach, converged idempotently."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mahaops.local.hosts import LocalHost
from mahaops.runner import DeployResult
from tests.checks import converge
from tests.checks import mail as checks
from tests.conftest import Testbed, infra

pytestmark = pytest.mark.testbed

ROLES = ["base", "mail"]

JUSTIFIED_NON_IDEMPOTENT = {
    "systemd.daemon_reload": "guarded by _if on the unit file changing",
}


@dataclass
class Sink:
    server: LocalHost
    worker: LocalHost  # labelled worker: the firewall admits it (no worker role needed)
    outsider: LocalHost  # base only
    first: DeployResult


@pytest.fixture(scope="module")
def sink(testbed: Testbed) -> Sink:
    # The clients exist before the sink's deploy, so its firewall knows the worker.
    worker = testbed.host("worker", name="ml-worker-1")
    outsider = testbed.host("base", name="ml-out-1")
    server = testbed.host("mail", name="ml-mail-1")
    first = testbed.deploy(roles=ROLES, limit=[server.name, worker.name, outsider.name])
    assert first.ok, first.output
    return Sink(server, worker, outsider, first)


def test_fresh_host_runs_the_sink_sandboxed_on_port_25(sink: Sink) -> None:
    checks.check_mail(infra(sink.server))


def test_a_message_from_a_worker_arrives_and_is_counted(testbed: Testbed, sink: Sink) -> None:
    send = checks.send_script(
        sink.server.private_address,
        25,
        "campaigns@maha.test",
        "someone@example.test",
        "<check-1@maha.test>",
    )
    testbed.exec(sink.worker, send)

    stats = checks.sink_stats(testbed, sink.server, "Message-ID=<check-1@maha.test>")
    assert stats["messages"] == 1
    recipients = testbed.exec(sink.server, "maha-mail recipients").split()
    assert "someone@example.test" in recipients


def test_a_host_outside_the_workers_cannot_reach_the_sink(testbed: Testbed, sink: Sink) -> None:
    send = checks.send_script(
        sink.server.private_address,
        25,
        "campaigns@maha.test",
        "someone@example.test",
        "<outsider-1@maha.test>",
    )
    out = testbed.exec(sink.outsider, send, check=False)
    assert "Traceback" in out  # refused or timed out by the sink's firewall
    stats = checks.sink_stats(testbed, sink.server, "Message-ID=<outsider-1@maha.test>")
    assert stats["messages"] == 0


def test_the_same_message_sent_twice_shows_as_a_duplicate(testbed: Testbed, sink: Sink) -> None:
    send = checks.send_script(
        sink.server.private_address, 25, "c@maha.test", "twice@example.test", "<twice@maha.test>"
    )
    testbed.exec(sink.worker, f"{send} && {send}")

    stats = checks.sink_stats(testbed, sink.server, "Message-ID=<twice@maha.test>")
    assert (stats["messages"], stats["duplicate_message_ids"]) == (2, 1)
    assert "2 <twice@maha.test>" in testbed.exec(sink.server, "maha-mail duplicates")


def test_second_converge_changes_nothing(testbed: Testbed, sink: Sink) -> None:
    converge.assert_idempotent(
        testbed, [sink.server.name], ROLES, justified=JUSTIFIED_NON_IDEMPOTENT
    )


def test_dry_run_shows_the_unit_diff_and_changes_nothing(testbed: Testbed, sink: Sink) -> None:
    converge.assert_dry_run(
        testbed,
        sink.server,
        "/etc/systemd/system/maha-mail.service",
        roles=["mail"],
        overrides={"mail_max_message_bytes": 2048},
        changed=[
            "Mail sink | Unit maha-mail (aiosmtpd, sandboxed)",
            "Mail sink | Reload systemd for maha-mail",
            "Mail sink | Restart the mail sink for its new unit",
        ],
        shows=["--size 10485760", "--size 2048"],
    )


def test_a_bad_setting_stops_the_deploy_naming_file_and_key(
    testbed: Testbed, sink: Sink, tmp_path
) -> None:
    group_data = converge.group_data_with(tmp_path, "mail_servers.py", 'mail_smtputf8 = "yes"')
    output = converge.assert_stopped_before_login(testbed, sink.server, ROLES, group_data)
    assert "mail_servers.py" in output and "mail_smtputf8" in output
