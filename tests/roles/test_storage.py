"""The storage role on real hosts: the S3 API (moto behind a signature check, over TLS) that
boto3 speaks to with the environment's key through the published port, that refuses what
is unsigned, signed by another key, tampered or expired, keeps objects across a restart and
a new container, admits app servers and refuses other hosts, converged idempotently."""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from mahaops.local.hosts import LocalHost
from mahaops.runner import DeployResult
from tests.checks import converge, ports
from tests.checks import storage as checks
from tests.conftest import Testbed, infra

pytestmark = pytest.mark.testbed

ROLES = ["base", "storage"]
BUCKET = "maha-uploads"
PORT = 9000

JUSTIFIED_NON_IDEMPOTENT = {
    "systemd.daemon_reload": "guarded by _if on the unit file changing",
    "server.shell": "the virtualenv's install, guarded by _if on the wheelhouse changing",
}


@dataclass
class Storage:
    server: LocalHost
    app: LocalHost  # labelled app: the firewall admits it (no app role needed)
    outsider: LocalHost  # base only
    first: DeployResult
    cafile: Path
    outputs: list[str] = field(default_factory=list)

    def record(self, result: DeployResult) -> DeployResult:
        self.outputs.append(result.output)
        return result

    @property
    def port(self) -> int:
        return self.server.ports[PORT]


@pytest.fixture(scope="module")
def storage(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory) -> Storage:
    # The clients exist before the server's deploy, so its firewall knows the app server.
    app = testbed.host("app", name="st-app-1")
    outsider = testbed.host("base", name="st-out-1")
    server = testbed.host("storage", name="st-storage-1")
    started = time.monotonic()
    first = testbed.deploy(roles=ROLES, limit=[server.name, app.name, outsider.name])
    took = time.monotonic() - started
    print(f"first converge of the storage host and its two clients: {took:.0f} s")
    assert first.ok, first.output
    cafile = checks.ca_file(testbed.env, tmp_path_factory.mktemp("storage-ca"))
    return Storage(server, app, outsider, first, cafile, [first.output])


def _s3(testbed: Testbed, storage: Storage, **kwargs: str):
    return checks.client(testbed.env, storage.port, storage.cafile, **kwargs)


def test_fresh_host_runs_the_server_sandboxed_over_tls(storage: Storage) -> None:
    checks.check_storage(infra(storage.server), PORT)


def test_boto3_with_the_key_works_through_the_published_port(
    testbed: Testbed, storage: Storage
) -> None:
    s3 = _s3(testbed, storage)
    assert BUCKET in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values())
    s3.put_object(Bucket=BUCKET, Key="u/1/hello.txt", Body=b"hello", ContentType="text/plain")
    got = s3.get_object(Bucket=BUCKET, Key="u/1/hello.txt")
    assert (got["Body"].read(), got["ContentType"]) == (b"hello", "text/plain")


def test_unsigned_other_key_tampered_and_expired_requests_get_403(
    testbed: Testbed, storage: Storage
) -> None:
    s3 = _s3(testbed, storage)
    s3.put_object(Bucket=BUCKET, Key="private.txt", Body=b"private bytes")
    s3.put_object(Bucket=BUCKET, Key="other.txt", Body=b"other bytes")
    base = f"https://127.0.0.1:{storage.port}/{BUCKET}"
    verify = str(storage.cafile)

    unsigned = requests.get(f"{base}/private.txt", verify=verify, timeout=10)
    assert (unsigned.status_code, checks.s3_error_code(unsigned)) == (403, "AccessDenied")

    other = _s3(testbed, storage, key_id="TESTOTHERKEY23456777", secret="x" * 40)
    url = other.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "private.txt"}, ExpiresIn=60
    )
    wrong = requests.get(url, verify=verify, timeout=10)
    assert (wrong.status_code, checks.s3_error_code(wrong)) == (403, "InvalidAccessKeyId")

    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "private.txt"}, ExpiresIn=60
    )
    ok = requests.get(url, verify=verify, timeout=10)
    assert (ok.status_code, ok.content) == (200, b"private bytes")
    for tampered in (
        url.replace("/private.txt?", "/other.txt?"),
        checks.with_query(url, **{"X-Amz-Expires": "604800"}),
        checks.with_query(url, **{"X-Amz-Signature": "0" * 64}),
    ):
        refused = requests.get(tampered, verify=verify, timeout=10)
        assert (refused.status_code, checks.s3_error_code(refused)) == (
            403,
            "SignatureDoesNotMatch",
        ), tampered

    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
    expired = checks.with_query(url, **{"X-Amz-Date": old.strftime("%Y%m%dT%H%M%SZ")})
    answer = requests.get(expired, verify=verify, timeout=10)
    assert (answer.status_code, checks.s3_error_code(answer)) == (403, "AccessDenied")
    assert "Request has expired" in answer.text
    short = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "private.txt"}, ExpiresIn=1
    )
    time.sleep(2.5)
    late = requests.get(short, verify=verify, timeout=10)
    assert (late.status_code, checks.s3_error_code(late)) == (403, "AccessDenied")


def test_a_presigned_put_then_get_round_trips_the_bytes(testbed: Testbed, storage: Storage) -> None:
    s3 = _s3(testbed, storage)
    body = bytes(range(256)) * 64
    put_url = s3.generate_presigned_url(
        "put_object",
        Params={
            "Bucket": BUCKET,
            "Key": "u/2/upload.bin",
            "ContentType": "application/octet-stream",
            "ContentLength": len(body),
        },
        ExpiresIn=300,
    )
    verify = str(storage.cafile)
    put = requests.put(
        put_url, data=body, headers={"Content-Type": "application/octet-stream"}, verify=verify,
        timeout=30,
    )  # fmt: skip
    assert put.status_code == 200, put.text
    get_url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "u/2/upload.bin"}, ExpiresIn=60
    )
    got = requests.get(get_url, verify=verify, timeout=30)
    assert (got.status_code, got.content) == (200, body)


def test_an_app_server_reaches_it_and_an_outsider_cannot(
    testbed: Testbed, storage: Storage
) -> None:
    # The app server verifies the certificate with the CA it already has; unsigned: 403.
    assert checks.probe(testbed, storage.app, storage.server) == "403"
    assert checks.probe(testbed, storage.outsider, storage.server).startswith("unreachable")


def test_every_port_beyond_loopback_speaks_tls_or_ssh(testbed: Testbed, storage: Storage) -> None:
    ports.assert_tls_or_ssh(testbed, "storage", storage.server, {22: "ssh", PORT: "tls"})


def test_objects_survive_a_restart_and_a_new_container(testbed: Testbed, storage: Storage) -> None:
    s3 = _s3(testbed, storage)
    s3.put_object(Bucket=BUCKET, Key="kept/a.txt", Body=b"kept", Metadata={"owner": "1"})
    testbed.exec(storage.server, "systemctl restart maha-s3")
    _wait_for(lambda: _s3(testbed, storage).head_bucket(Bucket=BUCKET))
    got = _s3(testbed, storage).get_object(Bucket=BUCKET, Key="kept/a.txt")
    assert (got["Body"].read(), got["Metadata"]) == (b"kept", {"owner": "1"})
    assert "kept/a.txt" in testbed.exec(storage.server, f"maha-s3 ls {BUCKET}")

    # The container goes, its data volume stays; a new one on it is converged afresh.
    testbed.environment.remove([storage.server.name])
    storage.server = testbed.environment.create(
        "storage", name=storage.server.name, image=testbed.image
    )
    again = storage.record(
        testbed.deploy(roles=ROLES, limit=[storage.server.name, storage.app.name])
    )
    assert again.ok, again.output
    got = _s3(testbed, storage).get_object(Bucket=BUCKET, Key="kept/a.txt")
    assert got["Body"].read() == b"kept"


def _wait_for(call, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            call()
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_second_converge_changes_nothing(testbed: Testbed, storage: Storage) -> None:
    converge.assert_idempotent(
        testbed,
        [storage.server.name],
        ROLES,
        justified=JUSTIFIED_NON_IDEMPOTENT,
        record=storage.record,
    )


def test_dry_run_shows_the_settings_diff_and_changes_nothing(
    testbed: Testbed, storage: Storage
) -> None:
    converge.assert_dry_run(
        testbed,
        storage.server,
        "/etc/maha-storage/maha-s3.json",
        roles=["storage"],
        overrides={"storage_loglevel": "info"},
        changed=[
            "Storage | S3 server settings (maha-s3.json)",
            "Storage | Restart the S3 server for its new program, settings or certificate",
        ],
        shows=['"loglevel": "warning"', '"loglevel": "info"'],
        record=storage.record,
    )


def test_a_bad_setting_stops_the_deploy_naming_file_and_key(
    testbed: Testbed, storage: Storage, tmp_path: Path
) -> None:
    group_data = converge.group_data_with(
        tmp_path, "storage_servers.py", 'storage_cors_origins = ["not an origin"]'
    )
    output = converge.assert_stopped_before_login(testbed, storage.server, ROLES, group_data)
    assert "storage_servers.py" in output and "storage_cors_origins" in output


def test_the_secret_key_is_never_printed_nor_logged(testbed: Testbed, storage: Storage) -> None:
    _, secret = checks.credentials(testbed.env)
    assert len(storage.outputs) >= 3
    for output in storage.outputs:
        assert secret not in output
    journal = testbed.exec(storage.server, "journalctl --no-pager -o cat -u maha-s3")
    assert "https on" in journal and secret not in journal
    processes = testbed.exec(storage.server, "ps -eo args")
    assert secret not in processes
