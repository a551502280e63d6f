"""The mail role on real hosts: an SMTP sink that a worker's message reaches and is stored,
that a host outside the workers cannot reach, converged idempotently."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import pytest

from mahaops.local.hosts import LocalHost
from mahaops.runner import DeployResult
from tests.checks import converge, ports
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


# -- a campaign of 10,000 recipients on real hosts: db, cache, worker and the sink -----------

CAMPAIGN_JS = r"""
// Run in /srv/maha/current with maha.env loaded: the app's own modules, as the web uses them.
const db = require('/srv/maha/current/src/db').connect();
const redis = require('/srv/maha/current/src/redis');
const { JobQueue } = require('/srv/maha/current/src/queue');
const [command, arg] = process.argv.slice(2);
(async () => {
  if (command === 'start') {
    const { rows } = await db.query(
      "insert into campaigns (name, recipients) values ('10k mail', $1) returning id",
      [Number(arg)]);
    const client = redis.connect('test');
    await new JobQueue(client).enqueue(rows[0].id);
    client.disconnect();
    console.log(rows[0].id);
  } else {
    const { rows } = await db.query(
      `select status, sent, result, extract(epoch from finished_at - started_at) as seconds
         from campaigns where id = $1`, [Number(arg)]);
    console.log(JSON.stringify(rows[0]));
  }
  await db.end();
})().catch((err) => { console.error(err.message); process.exit(1); });
"""

RECIPIENTS = 10_000


@dataclass
class MailPlatform:
    worker: LocalHost
    sink: LocalHost


@pytest.fixture(scope="module")
def mail_platform(testbed: Testbed, sink: Sink) -> MailPlatform:
    db = testbed.host("db", name="ml-db-1")
    cache = testbed.host("cache", name="ml-cache-1")
    worker = testbed.host("worker", name="ml-worker-2")
    servers = [db.name, cache.name, sink.server.name, worker.name]
    # The data tier and the sink first (their firewalls and pg_hba list the new worker),
    # then the worker, which finds the sink in the inventory.
    first = testbed.deploy(roles=["base", "db", "cache", "mail"], limit=servers)
    assert first.ok, first.output
    workers = testbed.deploy(roles=["base", "worker"], limit=[worker.name])
    assert workers.ok, workers.output
    testbed.exec(worker, f"cat > /srv/maha/campaign.js <<'EOF'\n{CAMPAIGN_JS}\nEOF")
    return MailPlatform(worker, sink.server)


def _campaign(testbed: Testbed, worker: LocalHost, command: str, arg: int) -> str:
    return testbed.exec(
        worker,
        "set -a; . /srv/maha/shared/maha.env; set +a; cd /srv/maha/current && "
        f"node /srv/maha/campaign.js {command} {arg}",
    ).strip()


def test_a_campaign_of_10000_reaches_each_recipient_once_across_a_worker_restart(
    testbed: Testbed, mail_platform: MailPlatform
) -> None:
    worker, sink = mail_platform.worker, mail_platform.sink
    env = testbed.exec(worker, "cat /srv/maha/shared/mail.env")
    assert f'SMTP_HOST="{sink.private_address}"' in env

    started = time.monotonic()
    campaign = int(_campaign(testbed, worker, "start", RECIPIENTS))
    header = f"X-Maha-Campaign={campaign}"

    def arrived() -> int:
        return int(checks.sink_stats(testbed, sink, header)["messages"])

    deadline = time.monotonic() + 900  # a generous bound: a loaded machine sends slowly
    while arrived() < RECIPIENTS // 3:
        assert time.monotonic() < deadline, "a third of the campaign never arrived"
        time.sleep(1)
    testbed.exec(worker, "systemctl restart maha-worker")  # SIGTERM, then a new process
    at_restart = arrived()

    deadline = time.monotonic() + 1800
    while json.loads(_campaign(testbed, worker, "status", campaign))["status"] != "done":
        assert time.monotonic() < deadline, "the campaign did not finish in 30 minutes"
        time.sleep(2)
    wall = time.monotonic() - started

    status = json.loads(_campaign(testbed, worker, "status", campaign))
    stats = checks.sink_stats(testbed, sink, header)
    assert at_restart < RECIPIENTS, "the campaign finished before the restart"
    assert status["result"]["delivered"] == RECIPIENTS
    assert stats["messages"] == RECIPIENTS
    assert stats["distinct_recipients"] == RECIPIENTS  # no gap
    assert stats["duplicate_message_ids"] == 0  # nobody twice
    span = stats["last_arrival"] - stats["first_arrival"]
    print(
        f"\ncampaign of {RECIPIENTS} over SMTP, worker restarted at {at_restart}: "
        f"{wall:.1f} s wall ({RECIPIENTS / wall:.0f} messages/s); "
        f"first to last arrival {span:.1f} s ({RECIPIENTS / span:.0f} messages/s)"
    )


def test_every_port_beyond_loopback_speaks_tls_or_ssh_or_is_plain_by_design(
    testbed: Testbed, sink: Sink
) -> None:
    ports.assert_tls_or_ssh(testbed, "mail", sink.server, {22: "ssh", 25: "plain"})


def test_stored_messages_outlive_the_container_as_after_down_and_up(
    testbed: Testbed, sink: Sink
) -> None:
    # Last in the module: the sink's container is made again, as `invoke down` then `up`
    # (volumes kept) would, and the hosts above are not used after it.
    stored = "find /var/lib/maha-mail/Maildir/new /var/lib/maha-mail/Maildir/cur -type f | wc -l"
    before = int(testbed.exec(sink.server, stored))
    assert before >= 1 and before == checks.sink_stats(testbed, sink.server)["messages"]

    testbed.environment.remove([sink.server.name])  # the container, not its data volume
    again = testbed.environment.create("mail", name=sink.server.name, image=testbed.image)

    assert int(testbed.exec(again, stored)) == before
