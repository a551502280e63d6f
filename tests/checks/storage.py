"""What an operator expects of the storage server (maha-s3). Shared with the Ansible tests."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from botocore.config import Config

from mahaops.local.hosts import LocalHost
from mahaops.secrets import LocalSecretStore
from mahaops.tls import ca

SERVICE = "maha-s3"


def s3_error_code(response: Any) -> str:
    """The ``<Code>`` of S3's XML error answer ("" for none)."""
    text = str(response.text)
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def with_query(url: str, **changes: str) -> str:
    """``url`` with query parameters set to ``changes`` (a tampered presigned URL, say)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _property(th: Any, name: str) -> str:
    return str(th.check_output(f"systemctl show -p {name} --value {SERVICE}")).strip()


def check_storage(th: Any, port: int = 9000) -> None:
    """The storage role's promises: the server runs sandboxed as its own user, listens on
    ``port``, and its objects live under the state directory."""
    assert th.service(SERVICE).is_running and th.service(SERVICE).is_enabled
    assert _property(th, "User") == "maha-s3"
    for name, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("Restart", "on-failure"),
    ):
        assert _property(th, name) == value, name
    assert _property(th, "CapabilityBoundingSet") == ""
    pid = _property(th, "MainPID")
    assert th.check_output(f"ps -o user= -p {pid}").strip() == "maha-s3"
    assert f":{port} " in th.check_output("ss -Htln")
    access = th.file("/etc/maha-storage/credentials.json")
    assert (access.user, access.group, access.mode) == ("root", "maha-s3", 0o640)
    assert th.run("maha-s3 ls").rc == 0


def credentials(env: str) -> tuple[str, str]:
    store = LocalSecretStore(env)
    key_id, secret = store.get("storage_access_key_id"), store.get("storage_secret_access_key")
    assert key_id and secret, "the storage deploy did not make the access key"
    return key_id, secret


def ca_file(env: str, directory: Path) -> Path:
    """The environment's CA certificate in a file, for clients on the operator's side."""
    path = directory / "ca.crt"
    path.write_text(ca(LocalSecretStore(env))[0])
    return path


def client(env: str, port: int, cafile: Path, key_id: str = "", secret: str = "") -> Any:
    """boto3's S3 client for the storage's published port, trusting the environment's CA."""
    import boto3

    own_id, own_secret = credentials(env)
    return boto3.client(
        "s3",
        endpoint_url=f"https://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id=key_id or own_id,
        aws_secret_access_key=secret or own_secret,
        verify=str(cafile),
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 2},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def probe_script(address: str, port: int, path: str = "/") -> str:
    """A shell command printing the HTTP status of an unsigned GET of ``path`` over TLS, or
    ``unreachable`` when the connection fails. The certificate is not checked here (a host
    without a log server has no CA file): the operator-side tests verify it."""
    code = (
        "import ssl, urllib.request, urllib.error\n"
        "ctx = ssl._create_unverified_context()\n"
        "try:\n"
        f"    url = 'https://{address}:{port}{path}'\n"
        "    r = urllib.request.urlopen(url, timeout=5, context=ctx)\n"
        "    print(r.status)\n"
        "except urllib.error.HTTPError as e:\n"
        "    print(e.code)\n"
        "except Exception as e:\n"
        "    print('unreachable', type(e).__name__)\n"
    )
    return f"python3 -c {shlex.quote(code)}"


def probe(testbed: Any, host: LocalHost, server: LocalHost, port: int = 9000) -> str:
    return str(testbed.exec(host, probe_script(server.private_address, port))).strip()
