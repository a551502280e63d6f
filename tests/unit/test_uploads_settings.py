"""Private uploads (issue 15 item 2) on the deploy side: the app settings, maha.env's uploads
variables as systemd and the migrations' shell read them, and nginx's CSP letting the page
PUT to the storage origin. The app side is tests/app/test_uploads.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from mahaops.settings.app import AppSettings, NginxSettings
from mahaops.templating import render

BASE = {
    "app_user": "maha-app",
    "app_database_url": "postgres://u:p@db:5432/maha",
    "app_redis_url": "redis://:p@cache:6379/0",
    "app_queue_url": "redis://:p@cache:6380/0",
    "app_pg_pool_max": 10,
    "app_env": {},
}
LOCAL = {
    "app_uploads_bucket": "maha-uploads",
    "app_s3_region": "us-east-1",
    "app_s3_endpoint": "https://10.77.0.9:9000",
    "app_s3_public_endpoint": "https://127.0.0.1:49321",
    "app_s3_force_path_style": True,
    "app_s3_access_key_id": "TESTABCDEFGHIJ234567",
    "app_s3_secret_access_key": "aB3+/xYz" * 5,  # the generated alphabet: + and / too
    "app_s3_ca_file": "/etc/maha/tls/ca.crt",
    "app_upload_max_bytes": 10485760,
    "app_upload_url_seconds": 300,
    "app_uploads_cdn_url": "",
    "app_cloudfront_key_id": "",
    "app_cloudfront_private_key_file": "",
}


def sourced(tmp_path: Path, **variables: object) -> dict[str, str]:
    """maha.env rendered with ``variables``, then sourced by sh as the migrations do."""
    (tmp_path / "maha.env").write_text(render("app/maha.env.j2", **{**BASE, **variables}))
    read = subprocess.run(
        ["/bin/sh", "-c", "set -a; . ./maha.env; set +a; exec python3 -c "
         "'import json, os; print(json.dumps(dict(os.environ)))'"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert read.stderr == ""
    return {k: v for k, v in json.loads(read.stdout).items() if k.startswith("MAHA_")}


def test_local_storage_gives_every_uploads_variable_read_back_literally(tmp_path: Path) -> None:
    env = sourced(tmp_path, **LOCAL)

    assert env == {
        "MAHA_UPLOADS_BUCKET": "maha-uploads",
        "MAHA_S3_REGION": "us-east-1",
        "MAHA_S3_ENDPOINT": "https://10.77.0.9:9000",
        "MAHA_S3_PUBLIC_ENDPOINT": "https://127.0.0.1:49321",
        "MAHA_S3_FORCE_PATH_STYLE": "1",
        "MAHA_S3_ACCESS_KEY_ID": "TESTABCDEFGHIJ234567",
        "MAHA_S3_SECRET_ACCESS_KEY": "aB3+/xYz" * 5,
        "MAHA_S3_CA_FILE": "/etc/maha/tls/ca.crt",
        "MAHA_UPLOAD_MAX_BYTES": "10485760",
        "MAHA_UPLOAD_URL_SECONDS": "300",
        "MAHA_UPLOADS_CDN_URL": "",
        "MAHA_CLOUDFRONT_KEY_ID": "",
        "MAHA_CLOUDFRONT_PRIVATE_KEY_FILE": "",
    }


def test_aws_leaves_endpoint_and_keys_to_the_sdk_and_names_the_cdn(tmp_path: Path) -> None:
    aws = {
        **LOCAL,
        "app_s3_region": "eu-west-1",
        "app_s3_endpoint": "",
        "app_s3_public_endpoint": "",
        "app_s3_force_path_style": False,
        "app_s3_access_key_id": "",
        "app_s3_secret_access_key": "",
        "app_s3_ca_file": "",
        "app_uploads_cdn_url": "https://cdn.maha.example.org",
        "app_cloudfront_key_id": "K2JCJMDEHXQW5F",
        "app_cloudfront_private_key_file": "/srv/maha/shared/cloudfront-signing.pem",
    }
    env = sourced(tmp_path, **aws)

    assert env["MAHA_S3_ENDPOINT"] == env["MAHA_S3_ACCESS_KEY_ID"] == ""
    assert env["MAHA_S3_FORCE_PATH_STYLE"] == "0" and env["MAHA_S3_REGION"] == "eu-west-1"
    assert env["MAHA_UPLOADS_CDN_URL"] == "https://cdn.maha.example.org"
    assert env["MAHA_CLOUDFRONT_PRIVATE_KEY_FILE"] == "/srv/maha/shared/cloudfront-signing.pem"


def test_without_a_bucket_no_uploads_variable_is_written(tmp_path: Path) -> None:
    assert sourced(tmp_path) == {}  # a worker, or a platform without storage
    assert sourced(tmp_path, **{**LOCAL, "app_uploads_bucket": ""}) == {}


def test_the_csp_lets_the_page_put_to_the_storage_origin_only_when_there_is_one() -> None:
    def csp(origin: str) -> str:
        conf = render(
            "app/nginx.conf.j2",
            **AppSettings().model_dump(),
            **NginxSettings().model_dump(),
            app_root="/srv/maha",
            app_asset_base_url="",
            app_uploads_origin=origin,
            app_server_name="app-1",
            nginx_real_ip_sources=[],
        )
        found = re.search(r"connect-src ([^;]*);", conf)
        assert found
        return found.group(1)

    assert csp("https://127.0.0.1:49321") == "'self' ws: wss: https://127.0.0.1:49321"
    assert csp("") == "'self' ws: wss:"


def test_upload_settings_are_typed() -> None:
    settings = AppSettings()
    assert settings.app_upload_max_bytes == 10 * 1024 * 1024
    assert settings.app_upload_url_seconds == 300
    assert settings.app_uploads_cdn_url == settings.app_cloudfront_key_id == ""
    for bad in (
        {"app_upload_max_bytes": 0},
        {"app_upload_url_seconds": 8 * 24 * 3600},
        {"app_uploads_cdn_url": "https://cdn.example.org/uploads"},  # an origin, no path
        {"app_uploads_cdn_url": "http://cdn.example.org"},  # signed URLs over https only
        {"app_cloudfront_key_id": "k2 lower"},
    ):
        with pytest.raises(ValidationError):
            AppSettings(**bad)
