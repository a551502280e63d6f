"""A release's static assets reach the bucket CloudFront serves ``/static/*`` from, under
content-hashed names with year-long cache headers, before a page names them; app servers
are told to load them from the CDN."""

from __future__ import annotations

from pathlib import Path

import pytest

from mahaops.aws.inventory import hosts
from mahaops.release import assets
from mahaops.release.tarball import _write_tarball


@pytest.fixture
def release_tarball(tmp_path: Path) -> Path:
    """A release tarball whose public/ went through the build's fingerprinting."""
    root = tmp_path / "app"
    (root / "public" / "img").mkdir(parents=True)
    (root / "public" / "app.css").write_text("body { color: #123; }\n")
    (root / "public" / "app.js").write_text("console.log('maha');\n")
    (root / "public" / "img" / "logo.svg").write_text("<svg/>")
    assets.fingerprint(root / "public")
    tarball = tmp_path / "maha-20261130T000000Z-abcdef0.tar.gz"
    _write_tarball(root, tarball, 0)
    return tarball


def _static_bucket(aws) -> str:
    (name,) = [
        b["Name"] for b in aws.client("s3").list_buckets()["Buckets"] if "-static-" in b["Name"]
    ]
    return str(name)


def test_a_release_uploads_its_hashed_assets_with_long_cache_headers_once(
    aws, provision_qa, write_group_data, release_tarball
):
    provision_qa()
    group_data = write_group_data()
    printed: list[str] = []

    first = assets.publish_release(
        "qa", release_tarball, group_data=group_data, progress=printed.append
    )

    s3 = aws.client("s3")
    bucket = _static_bucket(aws)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == set(first.uploaded) and len(keys) == 3
    css = next(k for k in keys if k.endswith(".css"))
    assert css.startswith("static/app.") and assets.HASHED.search(css)
    head = s3.head_object(Bucket=bucket, Key=css)
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    assert head["ContentType"].startswith("text/css")
    body = s3.get_object(Bucket=bucket, Key=css)["Body"].read()
    assert body == b"body { color: #123; }\n"
    svg = next(k for k in keys if k.endswith(".svg"))
    assert (
        svg.startswith("static/img/logo.")
        and "image/svg" in s3.head_object(Bucket=bucket, Key=svg)["ContentType"]
    )
    assert len(printed) == 3

    again = assets.publish_release("qa", release_tarball, group_data=group_data)
    assert again.uploaded == [] and sorted(again.present) == sorted(keys)


def test_the_keys_are_where_cloudfront_looks_for_static_paths(
    aws, provision_qa, write_group_data, release_tarball
):
    provision_qa()
    published = assets.publish_release("qa", release_tarball, group_data=write_group_data())
    cf = aws.client("cloudfront", region_name="us-east-1")
    (summary,) = cf.list_distributions()["DistributionList"]["Items"]
    config = cf.get_distribution_config(Id=summary["Id"])["DistributionConfig"]
    (static,) = [b for b in config["CacheBehaviors"]["Items"] if b["PathPattern"] == "/static/*"]
    (origin,) = [o for o in config["Origins"]["Items"] if o["Id"] == static["TargetOriginId"]]
    assert origin["DomainName"].startswith(published.bucket + ".")
    assert origin.get("OriginPath", "") == ""  # the viewer's path is the key: /static/<name>
    assert all(k.startswith("static/") for k in published.uploaded)


def test_a_dry_run_names_the_uploads_and_makes_none(
    aws, provision_qa, write_group_data, release_tarball
):
    provision_qa()
    printed: list[str] = []

    dry = assets.publish_release(
        "qa", release_tarball, dry=True, group_data=write_group_data(), progress=printed.append
    )

    assert len(dry.uploaded) == 3 and all("would be uploaded" in p for p in printed)
    assert "Contents" not in aws.client("s3").list_objects_v2(Bucket=_static_bucket(aws))


def test_app_servers_and_workers_load_assets_from_the_cdn(aws, provision_qa, write_group_data):
    provision_qa()
    found = hosts("qa", session=aws, group_data=write_group_data())
    cf = aws.client("cloudfront", region_name="us-east-1")
    (summary,) = cf.list_distributions()["DistributionList"]["Items"]
    by_group = {h.groups[1]: h.data.get("app_asset_base_url") for h in found}
    assert by_group["app_servers"] == by_group["workers"] == f"https://{summary['DomainName']}"
    assert by_group["db_servers"] is None

    aliased = hosts("qa", session=aws, group_data=write_group_data(cdn_domain="cdn.example.org"))
    assert {h.data["app_asset_base_url"] for h in aliased if "app_servers" in h.groups} == {
        "https://cdn.example.org"
    }
    own = hosts("qa", session=aws, group_data=write_group_data(settings={"app_asset_base_url": ""}))
    assert {h.data["app_asset_base_url"] for h in own if "app_servers" in h.groups} == {""}
