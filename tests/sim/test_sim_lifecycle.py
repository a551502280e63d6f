"""``invoke scale`` in the sim (docs/lifecycle.md, docs/sim.md): an app server added to a
provisioned and deployed AWS environment serves through the stand-in ALB, and leaves it
again without a request failing. Its first scale-out is a fault test (issue 13): the new
instance's host is killed while its role converges; the command stops naming it, the
peers that admitted it stop admitting it, the lock is released, and the same command run
again finishes the instance, which the sim (as EC2's recovery does) has booted again.

The smallest environment the platform runs: app, db and cache, one instance each (log and
worker set to 0 through the same desired counts ``invoke scale`` keeps). The server and
the sim environment are the package's (tests/sim/conftest.py): in the whole package this
test's provision trims the environment test_sim.py's provisioning test made, and
test_sim.py's teardown test removes it afterwards; run alone, it provisions from nothing.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import docker
import pytest
from rich.console import Console

from mahaops import PROJECT_ROOT
from mahaops.ansible_export.playbook import run_playbook
from mahaops.aws import shape
from mahaops.aws.inventory import hosts as inventory_hosts
from mahaops.aws.provision import provision
from mahaops.aws.session import make_session
from mahaops.fleet import lock
from mahaops.fleet.ssh import as_root, run_one
from mahaops.sim import SIM_PROFILE, server, sim_home
from mahaops.sim.alb import listeners
from mahaops.sim.hosts import container_name
from operations.release import running_release
from tests.platform.harness import build_variant
from tests.users import User, call, session_cookie

pytestmark = [pytest.mark.testbed, pytest.mark.slow]
REGION = "eu-west-1"


def _invoke(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(Path(sys.executable).parent / "invoke"), *args],
        cwd=PROJECT_ROOT, env={**os.environ, "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"invoke {' '.join(args)}:\n{done.stdout[-6000:]}{done.stderr}"
    return done


def _get(port: int, path: str = "/health") -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.headers.get("X-Maha-Server", "")
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError as exc:
        return 0, str(exc)


def _pg_hba(db: Any) -> str:
    found = run_one(db, as_root("cat /etc/postgresql/*/main/pg_hba.conf"), timeout=60)
    assert found.ok, found.stderr + found.error
    return found.stdout


def _app_health(elbv2: Any, arn: str) -> dict[str, str]:
    found = elbv2.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {d["Target"]["Id"]: d["TargetHealth"]["State"] for d in found}


def _scale_out_killed_mid_converge(sim: server.Server) -> Any:
    """``invoke scale`` to two app servers whose new instance's host is killed while its
    role converges (the peers admit it already); the instance, as EC2 recovers it, reboots.
    Returns the instance's host, after checking the command failed naming it."""
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    invoke = str(Path(sys.executable).parent / "invoke")
    proc = subprocess.Popen(
        [invoke, "scale", "--env", "sim", "--role", "app", "--count", "2"],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    lines: list[str] = []
    victim: Any = None
    for line in proc.stdout:
        lines.append(line)
        if victim is None and "Converging app: app on maha-sim-app-2" in line:
            victim = next(h for h in inventory_hosts("sim") if h.name == "maha-sim-app-2")
            time.sleep(3)
            docker.from_env().containers.get(container_name(victim.data["instance_id"])).kill()
    out = "".join(lines)
    assert proc.wait(120) != 0, out[-6000:]
    assert victim is not None, out[-4000:]
    assert "maha-sim-app-2" in out.split("error:")[-1], out[-4000:]
    return victim


def test_a_host_killed_mid_scale_is_not_admitted_a_rerun_finishes_and_scale_in_drops_nothing(
    sim: server.Server,
) -> None:
    session = make_session(REGION, SIM_PROFILE)
    for optional in ("log", "worker"):  # the smallest platform: app, db, cache
        shape.set_desired_count(session.client("ssm"), "maha", "sim", optional, 0)
    started = time.monotonic()
    _invoke("provision", "--env", "sim")
    _invoke("deploy", "--env", "sim")
    elbv2: Any = session.client("elbv2")
    balancer = elbv2.describe_load_balancers(Names=["maha-sim"])["LoadBalancers"][0]
    arn = elbv2.describe_target_groups(Names=["maha-sim-app"])["TargetGroups"][0]["TargetGroupArn"]
    port = listeners(sim_home())[f"{balancer['DNSName']}:80"]
    deadline = time.monotonic() + 120
    while _get(port)[0] != 200 and time.monotonic() < deadline:
        time.sleep(2)
    assert _get(port)[0] == 200
    print(f"provision and deploy: {time.monotonic() - started:.0f} s")

    db = next(h for h in inventory_hosts("sim") if h.name == "maha-sim-db-1")
    victim = _scale_out_killed_mid_converge(sim)
    # The run stopped naming the instance, which nothing admits and the ALB never got.
    assert victim.data["private_address"] not in _pg_hba(db)
    assert victim.data["instance_id"] not in _app_health(elbv2, arn)
    where = lock.lock_host(inventory_hosts("sim"))
    assert where is not None and lock.current(where) is None  # the lock released
    mark = time.monotonic()
    out = _invoke("scale", "--env", "sim", "--role", "app", "--count", "2")  # finishes it
    print(f"scale out, rerun: {time.monotonic() - mark:.0f} s\n{out.stdout[-3000:]}")
    hosts = {h.name: h for h in inventory_hosts("sim")}
    new = hosts["maha-sim-app-2"]
    assert new.data["instance_id"] == victim.data["instance_id"]  # the same instance, rebooted
    assert _app_health(elbv2, arn) == {
        hosts["maha-sim-app-1"].data["instance_id"]: "healthy",
        new.data["instance_id"]: "healthy",
    }
    answered = [_get(port) for _ in range(8)]  # round robin over whole connections
    assert {status for status, _ in answered} == {200}
    assert len({server_name for _, server_name in answered}) == 2, answered  # both serve
    address = new.data["private_address"]
    assert address in _pg_hba(hosts["maha-sim-db-1"])  # PostgreSQL admits the new server
    assert shape.desired_counts(session.client("ssm"), "maha", "sim")["app"] == 2
    plan = provision("sim", dry=True, console=Console(file=io.StringIO())).plan
    instances = {c.name: c.action for c in plan if c.kind == "EC2 instance"}
    assert instances["maha-sim-app-2"] == "no change"  # a later provision keeps the scale
    assert "delete" not in instances.values()

    statuses: list[int] = []
    stop = threading.Event()

    def requests() -> None:
        while not stop.is_set():
            statuses.append(_get(port)[0])
            time.sleep(0.05)

    hammer = threading.Thread(target=requests)
    hammer.start()
    mark = time.monotonic()
    try:
        out = _invoke("scale", "--env", "sim", "--role", "app", "--count", "1")
    finally:
        stop.set()
        hammer.join()
    took = time.monotonic() - mark
    print(f"scale in: {took:.0f} s, {len(statuses)} requests\n{out.stdout[-2000:]}")
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    ec2: Any = session.client("ec2")
    gone = ec2.describe_instances(InstanceIds=[new.data["instance_id"]])["Reservations"][0]
    assert gone["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")
    assert sorted(h.name for h in inventory_hosts("sim")) == [
        "maha-sim-app-1",
        "maha-sim-cache-1",
        "maha-sim-db-1",
    ]
    assert address not in _pg_hba(hosts["maha-sim-db-1"])  # PostgreSQL forgot it
    assert _get(port)[0] == 200
    assert shape.desired_counts(session.client("ssm"), "maha", "sim")["app"] == 1


def _campaign_done(user: User, campaign: int, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        status, _, body = user.request("GET", f"/api/campaigns/{campaign}")
        found = json.loads(body) if status == 200 else {}
        if found.get("status") == "done":
            return found
        assert time.monotonic() < deadline, f"campaign {campaign} not done: {status} {body[:300]}"
        time.sleep(1)


def _release_of(host: Any, service: str) -> str:
    """The release a service's process runs (its environment), not what the symlink says."""
    found = run_one(host, as_root(running_release(service)), timeout=60)
    assert found.ok, found.stderr + found.error
    return found.stdout.strip()


def test_a_worker_scaled_in_runs_campaigns_and_a_release_switches_app_and_worker(
    sim: server.Server, tmp_path: Path
) -> None:
    # After the scale test: app, db and cache deployed; the worker count 0. A worker joins
    # with `invoke scale`, runs a signed-in user's campaign sent through the ALB, then one
    # `invoke release` switches the app server and the worker to a new build.
    session = make_session(REGION, SIM_PROFILE)
    elbv2: Any = session.client("elbv2")
    balancer = elbv2.describe_load_balancers(Names=["maha-sim"])["LoadBalancers"][0]
    port = listeners(sim_home())[f"{balancer['DNSName']}:80"]
    mark = time.monotonic()
    out = _invoke("scale", "--env", "sim", "--role", "worker", "--count", "1")
    print(f"worker scaled in: {time.monotonic() - mark:.0f} s\n{out.stdout[-2000:]}")
    hosts = {h.name: h for h in inventory_hosts("sim")}
    assert "maha-sim-worker-1" in hosts, sorted(hosts)
    assert shape.desired_counts(session.client("ssm"), "maha", "sim")["worker"] == 1

    user = User.sign_up(f"http://127.0.0.1:{port}")
    # The ALB's X-Forwarded-For, trusted from its subnets: nginx logs the client, this
    # machine, not the load balancer's own address (and rate-limits per client).
    found = run_one(hosts["maha-sim-app-1"], as_root("grep 'POST /api/signup' "
                    "/var/log/nginx/access.log | tail -n 1"), timeout=60)  # fmt: skip
    assert found.stdout.startswith("127.0.0.1 "), found.stdout + found.stderr
    first = _campaign_done(user, user.start_campaign(25, "sim before release"))
    assert (first["sent"], first["recipients"]) == (25, 25)

    variant = build_variant(tmp_path, "printf '\\n// sim release\\n' >> src/page.js")
    mark = time.monotonic()
    out = _invoke("release", "--env", "sim", "--tarball", str(variant.tarball))
    print(f"release: {time.monotonic() - mark:.0f} s\n{out.stdout[-2000:]}")
    assert _release_of(hosts["maha-sim-app-1"], "maha-web") == variant.id
    assert _release_of(hosts["maha-sim-worker-1"], "maha-worker") == variant.id
    second = _campaign_done(user, user.start_campaign(25, "sim after release"))
    assert second["sent"] == 25

    # A private upload: presigned for the sim's S3 (moto), PUT there from this machine,
    # completed by the app server's HEAD from inside the VPC, fetched back by its owner only.
    body = os.urandom(50_000)
    status, _, text = user.request(
        "POST", "/api/uploads", {"name": "sim.bin", "type": "application/octet-stream",
                                 "size": len(body)},
    )  # fmt: skip
    assert status == 201, text
    grant = json.loads(text)
    put = urllib.request.Request(grant["url"], data=body, method="PUT", headers=grant["headers"])
    with urllib.request.urlopen(put, timeout=20) as answer:
        assert answer.status == 200
    status, _, text = user.request("POST", f"/api/uploads/{grant['id']}/complete")
    assert status == 200, text
    status, headers, _ = call(
        "GET", f"http://127.0.0.1:{port}/api/uploads/{grant['id']}/download",
        headers=user.headers(), follow=False,
    )  # fmt: skip
    assert status == 302, headers
    with urllib.request.urlopen(headers["location"], timeout=20) as answer:
        assert answer.read() == body
    stranger = User.sign_up(f"http://127.0.0.1:{port}")
    assert stranger.request("GET", f"/api/uploads/{grant['id']}/download")[0] == 403


def _rows_said(stdout: str, when: str) -> dict[str, int]:
    """``Rows before, on db-1: campaigns 3, users 2`` as {table: rows}."""
    said = f"Rows {when}, on "
    (line,) = [x.split(said, 1)[1] for x in stdout.splitlines() if said in x]
    pairs = (item.rsplit(" ", 1) for item in line.split(": ", 1)[1].split(", "))
    return {table: int(count) for table, count in pairs}


def _data_volume(ec2: Any) -> dict[str, Any]:
    (volume,) = ec2.describe_volumes(
        Filters=[{"Name": "tag:Environment", "Values": ["sim"]},
                 {"Name": "tag:Purpose", "Values": ["data"]}]
    )["Volumes"]  # fmt: skip
    return dict(volume)


def test_the_db_host_replaced_or_lost_comes_back_on_its_ebs_volume_with_every_row(
    sim: server.Server,
) -> None:
    # After the worker test: app, db, cache and a worker deployed. `invoke replace` moves
    # the database to a new instance on the same EBS volume (issue 13); then that instance
    # is lost and `invoke provision` + `invoke deploy` bring it back on the volume (issue 12).
    session = make_session(REGION, SIM_PROFILE)
    ec2: Any = session.client("ec2")
    elbv2: Any = session.client("elbv2")
    balancer = elbv2.describe_load_balancers(Names=["maha-sim"])["LoadBalancers"][0]
    port = listeners(sim_home())[f"{balancer['DNSName']}:80"]
    base = f"http://127.0.0.1:{port}"
    user = User.sign_up(base)
    before = _campaign_done(user, user.start_campaign(10, "before the db moves"))
    volume = _data_volume(ec2)
    hosts = {h.name: h for h in inventory_hosts("sim")}
    old = hosts["maha-sim-db-1"]
    assert volume["Attachments"][0]["InstanceId"] == old.data["instance_id"]
    running = _release_of(hosts["maha-sim-app-1"], "maha-web")  # the worker test's release

    mark = time.monotonic()
    out = _invoke("replace", "--env", "sim", "maha-sim-db-1")
    print(f"db replaced: {time.monotonic() - mark:.0f} s\n{out.stdout[-3000:]}")
    counted = _rows_said(out.stdout, "before")
    assert counted["users"] >= 1 and counted["campaigns"] >= 1, counted
    assert _rows_said(out.stdout, "after") == counted
    hosts = {h.name: h for h in inventory_hosts("sim")}
    assert "maha-sim-db-1" not in hosts, sorted(hosts)
    new = hosts["maha-sim-db-2"]
    moved = _data_volume(ec2)
    assert moved["VolumeId"] == volume["VolumeId"]  # the same volume, now the new host's
    assert [a["InstanceId"] for a in moved["Attachments"]] == [new.data["instance_id"]]
    gone = ec2.describe_instances(InstanceIds=[old.data["instance_id"]])["Reservations"][0]
    assert gone["Instances"][0]["State"]["Name"] in ("shutting-down", "terminated")
    protected = ec2.describe_instance_attribute(
        InstanceId=new.data["instance_id"], Attribute="disableApiTermination"
    )
    assert protected["DisableApiTermination"]["Value"] is True
    # PostgreSQL's data is on the volume (the stand-in's link), the clients moved to it.
    found = run_one(new, as_root("readlink /var/lib/postgresql"), timeout=60)
    assert found.stdout.strip() == f"/dev/sim-ebs/{volume['VolumeId']}", found.stdout
    assert hosts["maha-sim-app-1"].data["private_address"] in _pg_hba(new)
    assert hosts["maha-sim-worker-1"].data["private_address"] in _pg_hba(new)
    # The clients moved to the new address on the release they ran (not a build of app/).
    assert _release_of(hosts["maha-sim-app-1"], "maha-web") == running
    assert _release_of(hosts["maha-sim-worker-1"], "maha-worker") == running
    assert user.request("GET", f"/api/campaigns/{before['id']}")[0] == 200
    assert _campaign_done(user, user.start_campaign(10, "after the move"))["sent"] == 10
    where = lock.lock_host(inventory_hosts("sim"))
    assert where is not None and where.name == "maha-sim-db-2" and lock.current(where) is None
    history = _invoke("history", "--env", "sim").stdout
    assert "replace" in history and "maha-sim-db-1" in history, history[-2000:]

    # The new instance is lost (terminated by hand); provisioning launches it again under
    # the name its volume carries, attaches the volume, and a deploy adopts the data.
    ec2.modify_instance_attribute(
        InstanceId=new.data["instance_id"], DisableApiTermination={"Value": False}
    )
    ec2.terminate_instances(InstanceIds=[new.data["instance_id"]])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[new.data["instance_id"]])
    mark = time.monotonic()
    _invoke("provision", "--env", "sim")
    _invoke("deploy", "--env", "sim")
    print(f"db lost, provisioned and deployed again: {time.monotonic() - mark:.0f} s")
    deadline = time.monotonic() + 120  # the ALB's health checks find the app server again
    while _get(port)[0] != 200 and time.monotonic() < deadline:
        time.sleep(2)
    back = {h.name: h for h in inventory_hosts("sim")}["maha-sim-db-2"]
    assert back.data["instance_id"] != new.data["instance_id"]
    assert _data_volume(ec2)["VolumeId"] == volume["VolumeId"]
    again = User(base, user.email, user.password, "", "")
    status, headers, body = call("POST", base + "/api/signin",
                                 {"email": user.email, "password": user.password})  # fmt: skip
    assert status == 200, body[:300]  # the account, written before both moves, is there
    again.cookie, again.csrf = session_cookie(headers), json.loads(body)["csrf"]
    status, _, text = again.request("GET", f"/api/campaigns/{before['id']}")
    assert status == 200 and json.loads(text)["sent"] == 10, text


def test_the_environment_exported_to_ansible_converges_its_hosts_and_publishes_assets(
    sim: server.Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # After the db test: app, db-2, cache and a worker deployed, every host handed over to
    # the deploy user. The export reads the secrets from SSM (the operator's profile, here
    # the stand-in's) and publishes the release's assets before the roles run (issue 12).
    session = make_session(REGION, SIM_PROFILE)
    account = session.client("sts").get_caller_identity()["Account"]
    bucket = f"maha-sim-static-{account}"
    s3: Any = session.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="static/")["Contents"]]
    gone = next(k for k in keys if k.endswith(".css"))
    s3.delete_object(Bucket=bucket, Key=gone)  # lost: the export's play puts it back

    project = tmp_path / "ansible"
    _invoke("export-ansible", "--env", "sim", "--out", str(project))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(sim_home() / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    mark = time.monotonic()
    run = run_playbook(project)
    print(f"exported site.yml on the sim's hosts: {time.monotonic() - mark:.0f} s")
    assert run.ok, run.output[-8000:]
    assert set(run.recap) >= {"localhost", "maha-sim-app-1", "maha-sim-db-2", "maha-sim-worker-1"}
    assert all(counts["failed"] == 0 for counts in run.recap.values()), run.recap
    assert s3.head_object(Bucket=bucket, Key=gone)["CacheControl"].endswith("immutable")
    elbv2: Any = session.client("elbv2")
    balancer = elbv2.describe_load_balancers(Names=["maha-sim"])["LoadBalancers"][0]
    port = listeners(sim_home())[f"{balancer['DNSName']}:80"]
    assert _get(port)[0] == 200  # still serving, on what Ansible converged
