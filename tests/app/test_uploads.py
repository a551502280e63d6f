"""Private uploads (issue 15 item 2): presigned PUTs straight to the bucket, a HEAD before an
upload counts, each user's own list, downloads through short-lived signed URLs (S3 presigned
GETs, or CloudFront signed URLs with a CDN), 403 for another user and for nobody signed in.

The bucket is a moto S3 server from the project's virtualenv on 127.0.0.1 (plain http here;
the storage role's TLS endpoint is tested end to end with the platform). Browsers are played
by Python's http.client, sending exactly what the app tells a browser to send.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.users import User

from .harness import APP_DIR, LOCALHOST, App, Processes, Web, free_port, wait_for

BUCKET = "maha-uploads-test"
REGION: Final = "eu-west-1"
KEY_ID = "TESTMAHAUPLOADSKEY02"  # moto accepts any key; the app signs with this one
SECRET_KEY = "maha-test-secret-access-key-for-uploads"
MAX_BYTES = 64 * 1024  # MAHA_UPLOAD_MAX_BYTES in these tests
URL_SECONDS = 60  # MAHA_UPLOAD_URL_SECONDS in these tests
CDN = "https://cdn.uploads.example.test"
CDN_KEY_ID = "K2MAHATESTKEYPAIR"


# -- plain HTTP, as a browser does it: no redirects followed, no header added ----------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> Answer:
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.hostname == LOCALHOST, url
    connection = http.client.HTTPConnection(LOCALHOST, parts.port, timeout=10)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        connection.request(method, target, body=body, headers=headers or {})
        answer = connection.getresponse()
        found = {name.lower(): value for name, value in answer.getheaders()}
        return Answer(answer.status, found, answer.read())
    finally:
        connection.close()


def api(web: Web, method: str, path: str, payload: Any = None, user: User | None = None) -> Answer:
    headers = user.headers(method) if user else {}
    body = None
    if payload is not None:
        body = json.dumps(payload).encode()
        headers["Content-Type"] = "application/json"
    return raw(method, web.url + path, body, headers)


# -- the storage: moto's S3 server -------------------------------------------------------------


@dataclass
class Storage:
    endpoint: str
    client: Any  # boto3's S3 client, straight to moto (the test's own look at the bucket)

    def env(self, **more: str | int) -> dict[str, str | int]:
        return {
            "MAHA_UPLOADS_BUCKET": BUCKET,
            "MAHA_S3_REGION": REGION,
            "MAHA_S3_ENDPOINT": self.endpoint,
            "MAHA_S3_PUBLIC_ENDPOINT": self.endpoint,
            "MAHA_S3_FORCE_PATH_STYLE": "1",
            "MAHA_S3_ACCESS_KEY_ID": KEY_ID,
            "MAHA_S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "MAHA_UPLOAD_MAX_BYTES": MAX_BYTES,
            "MAHA_UPLOAD_URL_SECONDS": URL_SECONDS,
            **more,
        }

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=BUCKET, Key=key)
        except ClientError as error:
            if error.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def keys(self) -> set[str]:
        listed = self.client.list_objects_v2(Bucket=BUCKET)
        return {item["Key"] for item in listed.get("Contents", [])}


@pytest.fixture(scope="module")
def storage(processes: Processes) -> Storage:
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    proc = processes.start("moto-s3", [str(moto), "-H", LOCALHOST, "-p", str(port)])
    endpoint = f"http://{LOCALHOST}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET_KEY,
        config=Config(s3={"addressing_style": "path"}, proxies={}),
    )

    def answers() -> bool:
        try:
            return client.list_buckets() is not None
        except BotoCoreError:  # not listening yet
            return False

    wait_for(answers, 30, f"moto's S3 (log: {proc.log})", 0.2)
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return Storage(endpoint, client)


@pytest.fixture(scope="module")
def uploads_web(migrated: App, storage: Storage) -> Web:
    return migrated.start_web("app-uploads-1", APP_DIR, **storage.env())


@pytest.fixture(scope="module")
def cdn_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, rsa.RSAPublicKey]:
    """A CloudFront key pair: the private key's PEM file (as the deploy writes it) and the
    public key CloudFront would hold."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path_factory.mktemp("cloudfront") / "cloudfront-signing.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    pem.chmod(0o600)
    return pem, key.public_key()


@pytest.fixture(scope="module")
def cdn_web(migrated: App, storage: Storage, cdn_key: tuple[Path, rsa.RSAPublicKey]) -> Web:
    more = {
        "MAHA_UPLOADS_CDN_URL": CDN,
        "MAHA_CLOUDFRONT_KEY_ID": CDN_KEY_ID,
        "MAHA_CLOUDFRONT_PRIVATE_KEY_FILE": str(cdn_key[0]),
    }
    return migrated.start_web("app-uploads-cdn-1", APP_DIR, **storage.env(**more))


# -- helpers -----------------------------------------------------------------------------------


def presign(
    web: Web, user: User, data: bytes, name: str = "notes.txt", kind: str = "text/plain"
) -> dict[str, Any]:
    answer = api(web, "POST", "/api/uploads", {"name": name, "type": kind, "size": len(data)}, user)
    assert answer.status == 201, answer.body
    given: dict[str, Any] = answer.json()
    return given


def put(given: dict[str, Any], data: bytes, **override: str) -> Answer:
    """The browser's PUT: the URL, method and headers the app gave (http.client adds
    Content-Length from the body, as a browser does)."""
    return raw(given["method"], given["url"], data, {**given["headers"], **override})


def upload(
    web: Web, user: User, data: bytes, name: str = "notes.txt", kind: str = "text/plain"
) -> int:
    """Presign, PUT, complete: the id of a stored upload."""
    given = presign(web, user, data, name, kind)
    assert put(given, data).status == 200
    done = api(web, "POST", f"/api/uploads/{given['id']}/complete", user=user)
    assert done.status == 200, done.body
    assert done.json()["status"] == "stored"
    return int(given["id"])


def listed(web: Web, user: User) -> dict[int, dict[str, Any]]:
    answer = api(web, "GET", "/api/uploads", user=user)
    assert answer.status == 200, answer.body
    return {item["id"]: item for item in answer.json()["uploads"]}


def key_of(migrated: App, upload_id: int) -> str:
    return migrated.postgres.sql(f"select object_key from uploads where id = {int(upload_id)}")


# -- the tests ---------------------------------------------------------------------------------


def test_two_users_upload_list_and_download_only_their_own(
    uploads_web: Web, storage: Storage, migrated: App
) -> None:
    alice, bob = User.sign_up(uploads_web.url), User.sign_up(uploads_web.url)
    alice_data, bob_data = secrets.token_bytes(5000), b"bob's file\n" * 10

    given = presign(uploads_web, alice, alice_data, 'Résumé "final".pdf', "application/pdf")
    # The browser is sent to the storage endpoint, never to the app, for the file's bytes.
    assert given["url"].startswith(f"{storage.endpoint}/{BUCKET}/uploads/")
    assert given["method"] == "PUT" and given["headers"] == {"Content-Type": "application/pdf"}
    assert given["expiresIn"] == URL_SECONDS
    assert put(given, alice_data).status == 200
    done = api(uploads_web, "POST", f"/api/uploads/{given['id']}/complete", user=alice)
    assert done.status == 200, done.body
    alice_id = int(given["id"])
    bob_id = upload(uploads_web, bob, bob_data, "bob.txt")

    # Each sees their own, and the key names its owner.
    assert set(listed(uploads_web, alice)) == {alice_id}
    assert set(listed(uploads_web, bob)) == {bob_id}
    item = listed(uploads_web, alice)[alice_id]
    assert item["name"] == 'Résumé "final".pdf' and item["size"] == 5000
    assert item["type"] == "application/pdf" and item["status"] == "stored"
    alice_user_id = json.loads(alice.request("GET", "/api/me")[2])["user"]["id"]
    assert key_of(migrated, alice_id).startswith(f"uploads/{alice_user_id}/")

    # The owner is sent to a short-lived presigned GET on the storage endpoint: same bytes.
    answer = api(uploads_web, "GET", f"/api/uploads/{alice_id}/download", user=alice)
    assert answer.status == 302, answer.body
    location = answer.headers["location"]
    assert location.startswith(f"{storage.endpoint}/{BUCKET}/uploads/")
    query = dict(parse_qsl(urlsplit(location).query))
    assert query["X-Amz-Expires"] == str(URL_SECONDS) and "X-Amz-Signature" in query
    fetched = raw("GET", location)
    assert fetched.status == 200 and fetched.body == alice_data
    assert "attachment" in fetched.headers.get("content-disposition", "")
    assert "filename*=UTF-8''R%C3%A9sum%C3%A9" in fetched.headers["content-disposition"]

    # Another user, and nobody signed in: 403 for the file, whatever they try.
    for who in (bob, None):
        assert api(uploads_web, "GET", f"/api/uploads/{alice_id}/download", user=who).status == 403
    assert api(uploads_web, "POST", f"/api/uploads/{alice_id}/complete", user=bob).status == 403
    assert api(uploads_web, "DELETE", f"/api/uploads/{alice_id}", user=bob).status == 403
    assert api(uploads_web, "GET", "/api/uploads").status == 401
    assert storage.exists(key_of(migrated, alice_id))


def test_a_presigned_put_signs_the_declared_size_and_type(uploads_web: Web) -> None:
    """S3 (and the storage role's signature check) refuse a PUT whose signed headers differ:
    the URL signs content-length and content-type, and its signature is SigV4's for exactly
    the declared values (recomputed here), not for another size or type."""
    user = User.sign_up(uploads_web.url)
    given = presign(uploads_web, user, b"x" * 100, "a.txt", "text/plain")
    parts = urlsplit(given["url"])
    query = dict(parse_qsl(parts.query))
    assert query["X-Amz-SignedHeaders"] == "content-length;content-type;host"
    assert "x-amz-checksum-crc32" not in parts.query.lower()  # no checksum of an empty body

    def signature(length: int, kind: str) -> str:
        return sigv4_query_signature(
            "PUT", given["url"], {"content-length": str(length), "content-type": kind}
        )

    assert signature(100, "text/plain") == query["X-Amz-Signature"]
    assert signature(101, "text/plain") != query["X-Amz-Signature"]
    assert signature(100, "text/html") != query["X-Amz-Signature"]


def test_complete_needs_the_object_with_its_declared_size(
    uploads_web: Web, storage: Storage, migrated: App
) -> None:
    user = User.sign_up(uploads_web.url)
    data = b"declared bytes" * 10
    given = presign(uploads_web, user, data)
    complete = f"/api/uploads/{given['id']}/complete"

    # Nothing PUT yet: 409, still pending, not listed.
    assert api(uploads_web, "POST", complete, user=user).status == 409
    assert given["id"] not in listed(uploads_web, user)
    assert api(uploads_web, "GET", f"/api/uploads/{given['id']}/download", user=user).status == 409

    # A body of another size: moto does not check signatures, so it may store it; the app
    # then refuses to count it and removes the object.
    shorter = put(given, data[:-1])
    if shorter.status == 200:
        refused = api(uploads_web, "POST", complete, user=user)
        assert refused.status == 409 and b"not the declared one" in refused.body
        assert not storage.exists(key_of(migrated, given["id"]))
    else:
        assert shorter.status == 403
    assert given["id"] not in listed(uploads_web, user)

    # The declared bytes, then: stored.
    assert put(given, data).status == 200
    assert api(uploads_web, "POST", complete, user=user).status == 200
    assert given["id"] in listed(uploads_web, user)


def test_limits_and_bad_declarations(uploads_web: Web) -> None:
    user = User.sign_up(uploads_web.url)
    post = lambda payload: api(uploads_web, "POST", "/api/uploads", payload, user)  # noqa: E731
    over = post({"name": "big.bin", "type": "application/octet-stream", "size": MAX_BYTES + 1})
    assert over.status == 413 and str(MAX_BYTES).encode() in over.body
    assert (
        post({"name": "max.bin", "type": "application/octet-stream", "size": MAX_BYTES}).status
        == 201
    )
    for bad in (
        {"name": "", "type": "text/plain", "size": 1},
        {"name": "a/b.txt", "type": "text/plain", "size": 1},
        {"name": "x\n.txt", "type": "text/plain", "size": 1},
        {"name": "a.txt", "type": "text plain", "size": 1},
        {"name": "a.txt", "type": "text/plain; charset=utf-8", "size": 1},
        {"name": "a.txt", "type": "text/plain", "size": -1},
        {"name": "a.txt", "type": "text/plain", "size": "10"},
        {"name": "a.txt", "type": "text/plain", "size": 1.5},
    ):
        assert post(bad).status == 400, bad


def test_changes_need_the_csrf_token(uploads_web: Web, storage: Storage, migrated: App) -> None:
    user = User.sign_up(uploads_web.url)
    upload_id = upload(uploads_web, user, b"keep me")
    cookie_only = {"Cookie": user.cookie, "Content-Type": "application/json"}
    body = json.dumps({"name": "a.txt", "type": "text/plain", "size": 1}).encode()

    assert raw("POST", uploads_web.url + "/api/uploads", body, cookie_only).status == 403
    assert (
        raw("POST", f"{uploads_web.url}/api/uploads/{upload_id}/complete", b"", cookie_only).status
        == 403
    )
    assert (
        raw("DELETE", f"{uploads_web.url}/api/uploads/{upload_id}", None, cookie_only).status == 403
    )
    other_site = {
        **user.headers("POST"),
        "Origin": "https://evil.example",
        "Content-Type": "application/json",
    }
    assert raw("POST", uploads_web.url + "/api/uploads", body, other_site).status == 403
    assert upload_id in listed(uploads_web, user)
    assert storage.exists(key_of(migrated, upload_id))


def test_the_owner_deletes_the_object_and_the_row(
    uploads_web: Web, storage: Storage, migrated: App
) -> None:
    user = User.sign_up(uploads_web.url)
    upload_id = upload(uploads_web, user, b"short-lived")
    key = key_of(migrated, upload_id)
    assert storage.exists(key)

    assert api(uploads_web, "DELETE", f"/api/uploads/{upload_id}", user=user).status == 204

    assert not storage.exists(key)
    assert upload_id not in listed(uploads_web, user)
    assert api(uploads_web, "GET", f"/api/uploads/{upload_id}/download", user=user).status == 404
    assert api(uploads_web, "DELETE", f"/api/uploads/{upload_id}", user=user).status == 404


def test_without_a_bucket_uploads_answer_503(web: Web) -> None:
    user = User.sign_up(web.url)
    answer = api(
        web, "POST", "/api/uploads", {"name": "a.txt", "type": "text/plain", "size": 1}, user
    )
    assert answer.status == 503 and b"MAHA_UPLOADS_BUCKET" in answer.body
    assert api(web, "GET", "/api/uploads", user=user).status == 503
    assert api(web, "GET", "/health").status == 200  # the rest of the app runs on


def test_with_a_cdn_the_download_is_a_cloudfront_signed_url(
    cdn_web: Web, cdn_key: tuple[Path, rsa.RSAPublicKey], migrated: App
) -> None:
    owner, other = User.sign_up(cdn_web.url), User.sign_up(cdn_web.url)
    upload_id = upload(cdn_web, owner, b"through the cdn", "cdn.txt")
    before = int(time.time())

    answer = api(cdn_web, "GET", f"/api/uploads/{upload_id}/download", user=owner)

    assert answer.status == 302, answer.body
    location = answer.headers["location"]
    parts = urlsplit(location)
    resource = f"{parts.scheme}://{parts.netloc}{parts.path}"
    assert resource == f"{CDN}/{key_of(migrated, upload_id)}"
    query = dict(parse_qsl(parts.query))
    assert set(query) == {"Expires", "Signature", "Key-Pair-Id"}
    assert query["Key-Pair-Id"] == CDN_KEY_ID
    expires = int(query["Expires"])
    assert before + URL_SECONDS - 5 <= expires <= int(time.time()) + URL_SECONDS + 5
    # CloudFront's canned policy, signed RSA-SHA1, in CloudFront's base64 alphabet.
    policy = (
        f'{{"Statement":[{{"Resource":"{resource}",'
        f'"Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}'
    )
    signature = base64.b64decode(query["Signature"].translate(str.maketrans("-_~", "+=/")))
    cdn_key[1].verify(signature, policy.encode(), padding.PKCS1v15(), hashes.SHA1())

    assert api(cdn_web, "GET", f"/api/uploads/{upload_id}/download", user=other).status == 403
    assert api(cdn_web, "GET", f"/api/uploads/{upload_id}/download").status == 403


# -- SigV4, recomputed ---------------------------------------------------------------------------


def sigv4_query_signature(method: str, url: str, headers: dict[str, str]) -> str:
    """The SigV4 signature of a presigned URL for a request with these headers (besides host):
    what S3 computes to check it (AWS's "Authenticating requests: using query parameters")."""
    parts = urlsplit(url)
    params = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "X-Amz-Signature"
    ]
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params)
    )
    query = dict(params)
    signed = query["X-Amz-SignedHeaders"].split(";")
    all_headers = {"host": parts.netloc, **{k.lower(): v for k, v in headers.items()}}
    canonical_headers = "".join(f"{name}:{all_headers[name].strip()}\n" for name in signed)
    canonical = "\n".join(
        [
            method,
            quote(parts.path, safe="/-_.~"),
            canonical_query,
            canonical_headers,
            ";".join(signed),
            "UNSIGNED-PAYLOAD",
        ]
    )
    date = query["X-Amz-Date"]
    scope = query["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        ["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    key = ("AWS4" + SECRET_KEY).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_the_page_has_the_upload_form_and_its_script(uploads_web: Web) -> None:
    page = raw("GET", uploads_web.url + "/")
    assert page.status == 200
    html = page.body.decode()
    assert 'id="upload-form"' in html and 'id="upload-list"' in html
    script = raw("GET", uploads_web.url + "/static/app.js").body.decode()
    assert "/api/uploads" in script and "given.headers" in script
