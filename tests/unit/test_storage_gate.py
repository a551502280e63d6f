"""The storage server's signature check and write-through (templates/storage/maha-s3.py.j2),
run in-process behind werkzeug's server on 127.0.0.1 and spoken to by boto3 and requests:
what boto3 signs passes, anything unsigned, signed by another key, tampered or expired is
refused with S3's 403, and objects outlive the process on disk."""

from __future__ import annotations

import datetime
import importlib.util
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import boto3
import pytest
import requests
from botocore.config import Config
from moto.moto_server.werkzeug_app import MotoRequestHandler
from werkzeug.serving import make_server

from mahaops.templating import render
from tests.checks.storage import s3_error_code, with_query

KEY_ID = "TESTMAHASTOREKEY2345"
SECRET = "s3cr3t/For+Tests0nly0123456789abcdefghij"
BUCKET = "maha-uploads"
REGION = "us-east-1"
ORIGIN = "https://127.0.0.1:8443"


def _module(tmp_path: Path) -> ModuleType:
    code = render(
        "storage/maha-s3.py.j2",
        storage_venv="/opt/maha-s3/venv",
        storage_config_file=str(tmp_path / "config.json"),
        storage_credentials_file=str(tmp_path / "credentials.json"),
        storage_data_dir=str(tmp_path / "data"),
    )
    path = tmp_path / "maha_s3.py"
    path.write_text(code)
    spec = importlib.util.spec_from_file_location("maha_s3_under_test", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    saved = dict(os.environ)
    try:
        spec.loader.exec_module(module)
    finally:  # the program sets moto's variables for itself: none leaks into other tests
        os.environ.clear()
        os.environ.update(saved)
    return module


@pytest.fixture(scope="module")
def module(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    return _module(tmp_path_factory.mktemp("maha-s3"))


def _config(data: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data),
        "region": REGION,
        "buckets": [BUCKET],
        "clock_skew_seconds": 900,
        "presign_max_seconds": 604800,
        "max_object_bytes": 10 * 1024 * 1024,
        "cors_origins": [ORIGIN],
    }


class Server:
    def __init__(self, module: ModuleType, data: Path) -> None:
        self.module = module
        from moto.s3.models import s3_backends

        s3_backends.reset()
        self.app = module.make_app(_config(data), KEY_ID, SECRET)
        self.httpd = make_server(
            "127.0.0.1", 0, self.app, threaded=True, request_handler=MotoRequestHandler
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def client(self, key_id: str = KEY_ID, secret: str = SECRET, **config: Any) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, **config),
        )

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server(module: ModuleType, tmp_path: Path) -> Iterator[Server]:
    running = Server(module, tmp_path / "data")
    yield running
    running.stop()


def test_the_configured_bucket_is_made_private_with_its_public_access_blocked(
    server: Server,
) -> None:
    s3 = server.client()
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [BUCKET]
    block = s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values()), block


def test_header_signed_requests_by_the_key_pass(server: Server) -> None:
    s3 = server.client()
    s3.put_object(Bucket=BUCKET, Key="a/b c+d.txt", Body=b"hello", ContentType="text/plain")
    got = s3.get_object(Bucket=BUCKET, Key="a/b c+d.txt")
    assert got["Body"].read() == b"hello"
    assert got["ContentType"] == "text/plain"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="a/")["Contents"]]
    assert keys == ["a/b c+d.txt"]


def test_unsigned_and_other_keys_are_refused(server: Server) -> None:
    server.client().put_object(Bucket=BUCKET, Key="private.txt", Body=b"secret bytes")
    unsigned = requests.get(f"{server.url}/{BUCKET}/private.txt", timeout=10)
    assert (unsigned.status_code, s3_error_code(unsigned)) == (403, "AccessDenied")
    other = server.client(key_id="TESTOTHERKEY23456777")
    with pytest.raises(other.exceptions.ClientError) as refused:
        other.get_object(Bucket=BUCKET, Key="private.txt")
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    wrong = server.client(secret="not-the-secret-at-all-0123456789abcdefgh")
    with pytest.raises(wrong.exceptions.ClientError) as refused:
        wrong.get_object(Bucket=BUCKET, Key="private.txt")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    moto_api = requests.post(f"{server.url}/moto-api/reset", timeout=10)
    assert moto_api.status_code == 403
    assert server.client().get_object(Bucket=BUCKET, Key="private.txt")["Body"].read()


def test_presigned_get_passes_and_tampered_or_expired_ones_are_refused(server: Server) -> None:
    s3 = server.client()
    s3.put_object(Bucket=BUCKET, Key="doc.txt", Body=b"the document")
    s3.put_object(Bucket=BUCKET, Key="other.txt", Body=b"another")
    url = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "doc.txt"}, ExpiresIn=60
    )
    ok = requests.get(url, timeout=10)
    assert (ok.status_code, ok.content) == (200, b"the document")

    tampered_path = url.replace("/doc.txt?", "/other.txt?")
    assert s3_error_code(requests.get(tampered_path, timeout=10)) == "SignatureDoesNotMatch"
    longer = with_query(url, **{"X-Amz-Expires": "3600"})
    assert s3_error_code(requests.get(longer, timeout=10)) == "SignatureDoesNotMatch"
    added = url + "&response-content-type=text%2Fhtml"
    assert s3_error_code(requests.get(added, timeout=10)) == "SignatureDoesNotMatch"
    forged = with_query(url, **{"X-Amz-Signature": "0" * 64})
    assert requests.get(forged, timeout=10).status_code == 403

    expired = s3.generate_presigned_url(
        "get_object", Params={"Bucket": BUCKET, "Key": "doc.txt"}, ExpiresIn=1
    )
    signed_at = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    server.app.verifier.clock = lambda: signed_at + datetime.timedelta(seconds=10)
    answer = requests.get(expired, timeout=10)
    assert (answer.status_code, s3_error_code(answer)) == (403, "AccessDenied")
    assert "Request has expired" in answer.text


def test_a_presigned_put_with_its_type_and_length_signed(server: Server) -> None:
    s3 = server.client()
    body = b"uploaded by a browser"
    url = s3.generate_presigned_url(
        "put_object",
        Params={
            "Bucket": BUCKET,
            "Key": "up/file.bin",
            "ContentType": "application/pdf",
            "ContentLength": len(body),
        },
        ExpiresIn=300,
    )
    query = dict(parse_qsl(urlsplit(url).query))
    assert "content-type" in query["X-Amz-SignedHeaders"].split(";")
    other_type = requests.put(url, data=body, headers={"Content-Type": "text/html"}, timeout=10)
    assert (other_type.status_code, s3_error_code(other_type)) == (403, "SignatureDoesNotMatch")
    put = requests.put(
        url, data=body, headers={"Content-Type": "application/pdf", "Origin": ORIGIN}, timeout=10
    )
    assert put.status_code == 200, put.text
    assert put.headers["Access-Control-Allow-Origin"] == ORIGIN  # the browser may read it
    got = s3.get_object(Bucket=BUCKET, Key="up/file.bin")
    assert (got["Body"].read(), got["ContentType"]) == (body, "application/pdf")


def test_a_header_signed_request_older_than_the_skew_is_refused(server: Server) -> None:
    s3 = server.client(retries={"max_attempts": 1})
    server.app.verifier.clock = lambda: (
        datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=16)
    )
    with pytest.raises(s3.exceptions.ClientError) as refused:
        s3.head_bucket(Bucket=BUCKET)
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_a_changed_body_is_refused(server: Server) -> None:
    s3 = server.client()
    sent: dict[str, Any] = {}

    def tamper(request: Any, **_: Any) -> None:
        sent["hash"] = request.headers.get("x-amz-content-sha256")
        request.body = b"something else"
        request.headers["Content-Length"] = str(len(request.body))

    s3.meta.events.register("before-send.s3.PutObject", tamper)
    with pytest.raises(s3.exceptions.ClientError):
        s3.put_object(Bucket=BUCKET, Key="t.txt", Body=b"what was signed")
    assert not s3.list_objects_v2(Bucket=BUCKET).get("Contents")


def test_cors_preflight_is_answered_for_the_configured_origins_only(server: Server) -> None:
    def preflight(origin: str) -> requests.Response:
        return requests.options(
            f"{server.url}/{BUCKET}/x.bin",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "PUT",
                "Access-Control-Request-Headers": "content-type",
            },
            timeout=10,
        )

    ok = preflight(ORIGIN)
    assert ok.status_code == 200
    assert ok.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert "PUT" in ok.headers["Access-Control-Allow-Methods"]
    assert ok.headers["Access-Control-Allow-Headers"] == "content-type"
    assert preflight("https://evil.example").status_code == 403


def _preflight(server: Server, origin: str, headers: str = "content-type") -> requests.Response:
    return requests.options(
        f"{server.url}/{BUCKET}/x.bin",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": headers,
        },
        timeout=10,
    )


def test_the_buckets_own_cors_rules_are_answered_first_and_kept(
    module: ModuleType, tmp_path: Path
) -> None:
    first = Server(module, tmp_path / "data")
    try:
        first.client().put_bucket_cors(
            Bucket=BUCKET,
            CORSConfiguration={
                "CORSRules": [
                    {
                        "AllowedOrigins": ["https://*.maha.test"],
                        "AllowedMethods": ["PUT", "GET"],
                        "AllowedHeaders": ["content-*"],
                        "ExposeHeaders": ["ETag"],
                        "MaxAgeSeconds": 600,
                    }
                ]
            },
        )
    finally:
        first.stop()
    again = Server(module, tmp_path / "data")  # the rules came back from the disk
    try:
        ok = _preflight(again, "https://app.maha.test")
        assert ok.status_code == 200
        assert ok.headers["Access-Control-Allow-Origin"] == "https://app.maha.test"
        assert ok.headers["Access-Control-Max-Age"] == "600"
        assert ok.headers["Access-Control-Expose-Headers"] == "ETag"
        assert _preflight(again, "https://app.maha.test", "x-other").status_code == 403
        assert _preflight(again, ORIGIN).status_code == 403  # the bucket's rules rule
        again.client().delete_bucket_cors(Bucket=BUCKET)
        assert _preflight(again, ORIGIN).status_code == 200  # the configured origins again
    finally:
        again.stop()


def test_objects_are_written_through_and_loaded_at_start(
    module: ModuleType, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = Server(module, data)
    try:
        s3 = first.client()
        s3.put_object(
            Bucket=BUCKET, Key="kept.txt", Body=b"kept", ContentType="text/plain",
            Metadata={"owner": "7"},
        )  # fmt: skip
        s3.put_object(Bucket=BUCKET, Key="gone.txt", Body=b"gone")
        s3.copy_object(Bucket=BUCKET, Key="copy.txt", CopySource=f"{BUCKET}/kept.txt")
        s3.delete_object(Bucket=BUCKET, Key="gone.txt")
        s3.put_object(Bucket=BUCKET, Key="batch.txt", Body=b"b")
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": "batch.txt"}]})
        upload = s3.create_multipart_upload(Bucket=BUCKET, Key="big.bin")
        part = s3.upload_part(
            Bucket=BUCKET, Key="big.bin", UploadId=upload["UploadId"], PartNumber=1,
            Body=b"x" * (5 * 1024 * 1024),
        )  # fmt: skip
        s3.complete_multipart_upload(
            Bucket=BUCKET, Key="big.bin", UploadId=upload["UploadId"],
            MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
        )  # fmt: skip
        etag = s3.head_object(Bucket=BUCKET, Key="big.bin")["ETag"]
    finally:
        first.stop()

    again = Server(module, data)  # a new process's memory: only the disk
    try:
        s3 = again.client()
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"])
        assert keys == ["big.bin", "copy.txt", "kept.txt"]
        kept = s3.get_object(Bucket=BUCKET, Key="kept.txt")
        assert (kept["Body"].read(), kept["ContentType"], kept["Metadata"]) == (
            b"kept",
            "text/plain",
            {"owner": "7"},
        )
        assert s3.get_object(Bucket=BUCKET, Key="copy.txt")["Body"].read() == b"kept"
        assert s3.head_object(Bucket=BUCKET, Key="big.bin")["ETag"] == etag
    finally:
        again.stop()
