"""S3 buckets stay private; CloudFront is the only reader, and uploads need signed URLs."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from mahaops.aws.cloudfront import new_private_key, public_pem, signed_url
from mahaops.aws.s3 import cors_rules, presigned_upload_url

UPLOADS = "maha-qa-uploads-123456789012"
STATIC = "maha-qa-static-123456789012"


def _distribution(aws):
    cf = aws.client("cloudfront", region_name="us-east-1")
    summary = cf.list_distributions()["DistributionList"]["Items"][0]
    return summary, cf.get_distribution_config(Id=summary["Id"])["DistributionConfig"]


def test_buckets_block_public_access_and_encrypt_and_keep_versions(aws, provision_qa):
    provision_qa(uploads_noncurrent_days=14)
    s3 = aws.client("s3")
    for bucket in (UPLOADS, STATIC):
        block = s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
        assert all(block.values()) and len(block) == 4
        rules = s3.get_bucket_ownership_controls(Bucket=bucket)["OwnershipControls"]["Rules"]
        assert rules == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        encryption = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
        assert (
            encryption["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
        )
        assert s3.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    lifecycle = s3.get_bucket_lifecycle_configuration(Bucket=UPLOADS)["Rules"][0]
    assert lifecycle["NoncurrentVersionExpiration"]["NoncurrentDays"] == 14


def test_bucket_policies_refuse_plain_http_and_admit_only_this_distribution(aws, provision_qa):
    provision_qa()
    summary, _ = _distribution(aws)
    for bucket in (UPLOADS, STATIC):
        policy = json.loads(aws.client("s3").get_bucket_policy(Bucket=bucket)["Policy"])
        by_sid = {s["Sid"]: s for s in policy["Statement"]}
        deny = by_sid["DenyPlainHttp"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {
            "Bool": {"aws:SecureTransport": "false"}
        }
        allow = by_sid["CloudFrontReadsThroughOAC"]
        assert allow["Principal"] == {"Service": "cloudfront.amazonaws.com"}
        assert allow["Condition"]["StringEquals"]["AWS:SourceArn"] == summary["ARN"]
        assert set(by_sid) == {"DenyPlainHttp", "CloudFrontReadsThroughOAC"}


def test_distribution_serves_static_and_signed_uploads_and_the_app(aws, provision_qa):
    provision_qa()
    summary, config = _distribution(aws)
    cf = aws.client("cloudfront", region_name="us-east-1")
    tags = {
        t["Key"]: t["Value"]
        for t in cf.list_tags_for_resource(Resource=summary["ARN"])["Tags"]["Items"]
    }
    assert tags["Environment"] == "qa" and tags["Project"] == "maha"
    origins = {o["Id"]: o for o in config["Origins"]["Items"]}
    assert origins["alb"]["DomainName"].startswith("maha-qa-")
    assert origins["static"]["DomainName"].startswith(STATIC)
    assert (
        origins["static"]["OriginAccessControlId"]
        == origins["uploads"]["OriginAccessControlId"]
        != ""
    )
    assert config["DefaultCacheBehavior"]["TargetOriginId"] == "alb"
    behaviours = {b["PathPattern"]: b for b in config["CacheBehaviors"]["Items"]}
    assert set(behaviours) == {"/static/*", "/uploads/*"}
    for behaviour in [*behaviours.values(), config["DefaultCacheBehavior"]]:
        assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https" and behaviour["Compress"]
    group_id = behaviours["/uploads/*"]["TrustedKeyGroups"]["Items"][0]
    group = cf.get_key_group(Id=group_id)["KeyGroup"]["KeyGroupConfig"]
    assert group["Name"] == "maha-qa-uploads"
    assert not behaviours["/static/*"]["TrustedKeyGroups"]["Enabled"]


def test_signing_key_is_a_secret_matching_the_trusted_public_key(aws, provision_qa):
    provision_qa()
    ssm = aws.client("ssm")
    parameter = ssm.get_parameter(Name="/maha/qa/cloudfront_private_key", WithDecryption=True)[
        "Parameter"
    ]
    assert parameter["Type"] == "SecureString"
    cf = aws.client("cloudfront", region_name="us-east-1")
    key = cf.list_public_keys()["PublicKeyList"]["Items"][0]
    assert key["EncodedKey"].strip() == public_pem(parameter["Value"]).strip()


def test_signed_upload_url_expires_and_names_the_key():
    url = signed_url(
        "https://cdn.example.org/uploads/a.png", "K2JCJMDEHXQW5F", new_private_key(), expires_in=60
    )
    query = parse_qs(urlparse(url).query)
    assert query["Key-Pair-Id"] == ["K2JCJMDEHXQW5F"] and query["Signature"] and query["Expires"]


def test_presigned_upload_url_is_time_limited(aws):
    s3 = aws.client("s3", config=Config(signature_version="s3v4"))
    url = presigned_upload_url(
        s3, UPLOADS, "uploads/u1/a.png", content_type="image/png", expires=120
    )
    assert "X-Amz-Expires=120" in url and "uploads/u1/a.png" in url


def test_the_alb_origin_gets_its_own_host_header_not_the_viewers(aws, provision_qa, calls):
    # The viewer's Host is the CloudFront (or cdn_domain) name: forwarded to an HTTPS ALB
    # origin it fails the origin's certificate check. The managed policy that forwards all
    # but Host lets CloudFront send the origin's own name.
    provision_qa()
    _, config = _distribution(aws)
    default = config["DefaultCacheBehavior"]
    assert default["OriginRequestPolicyId"] == "b689b0a8-53d0-40ab-baf2-68738e2966ac"
    assert default["OriginRequestPolicyId"] != "216adef6-5c7f-47e4-b989-5492eafa07d3"  # AllViewer
    calls.reset()
    provision_qa()
    assert not [c for c in calls.mutating() if c.startswith("cloudfront")]


def test_browsers_may_put_uploads_only_from_the_app_s_origin_and_drift_is_put_back(
    aws, provision_qa
):
    provision_qa()  # no domain yet: the presigned URL's signature is the only gate
    s3 = aws.client("s3")
    (rule,) = s3.get_bucket_cors(Bucket=UPLOADS)["CORSRules"]
    assert rule["AllowedOrigins"] == ["*"] and rule["AllowedMethods"] == ["PUT"]
    assert rule["AllowedHeaders"] == ["content-type"]
    with pytest.raises(ClientError):  # the static bucket is read by CloudFront only
        s3.get_bucket_cors(Bucket=STATIC)
    # with a domain, that origin only (provisioning with one waits for ACM: see test_certificates)
    (with_domain,) = cors_rules("app.example.org")
    assert with_domain["AllowedOrigins"] == ["https://app.example.org"]

    s3.put_bucket_cors(
        Bucket=UPLOADS,
        CORSConfiguration={"CORSRules": [{"AllowedOrigins": ["*"], "AllowedMethods": ["GET"]}]},
    )
    result = provision_qa()
    change = next(c for c in result.plan if c.kind == "S3 bucket" and c.name == UPLOADS)
    assert (change.action, change.detail) == ("update", "cors")
    (rule,) = s3.get_bucket_cors(Bucket=UPLOADS)["CORSRules"]
    assert rule["AllowedMethods"] == ["PUT"]
