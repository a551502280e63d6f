"""S3: the private uploads bucket and the static-assets bucket behind CloudFront.

Both buckets block all public access, enforce bucket-owner ownership (no
ACLs), encrypt by default, keep versions (old ones expire after
``uploads_noncurrent_days``) and refuse plain-HTTP requests. Only the
environment's CloudFront distribution may read them (origin access control);
the app writes uploads with its instance role and hands users time-limited
URLs (:func:`presigned_upload_url`, :func:`mahaops.aws.cloudfront.signed_url`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from mahaops.aws.plan import Context, ProvisionError

BUCKETS: tuple[str, ...] = ("uploads", "static", "backups")
ROLE_OF_BUCKET = {"uploads": "app", "static": "static", "backups": "db"}  # its Role tag
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
ABORT_MULTIPART_DAYS = 7
CORS_MAX_AGE_SECONDS = 3000


def cors_rules(domain: str | None) -> list[dict[str, Any]]:
    """Browsers PUT uploads straight to the uploads bucket with the app's presigned URLs, from
    the app's pages: only that origin (any, before the environment has a domain: the
    signature is what admits a request, CORS only which pages' scripts may send it)."""
    return [
        {
            "ID": "presigned-uploads",
            "AllowedOrigins": [f"https://{domain}"] if domain else ["*"],
            "AllowedMethods": ["PUT"],
            "AllowedHeaders": ["content-type"],
            "ExposeHeaders": ["ETag"],
            "MaxAgeSeconds": CORS_MAX_AGE_SECONDS,
        }
    ]


def bucket_name(ctx: Context, purpose: str) -> str:
    """Globally unique and predictable: ``maha-<env>-<purpose>-<account id>``."""
    return named_bucket(ctx.project, ctx.env, purpose, ctx.clients.account_id)


def named_bucket(project: str, env: str, purpose: str, account: str) -> str:
    return f"{project}-{env}-{purpose}-{account}"


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _read(call: Callable[..., Any], missing: tuple[str, ...], **kwargs: Any) -> Any:
    """A bucket setting, or None where S3 says it was never set."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if _code(exc) in missing:
            return None
        raise


def lifecycle_rule(days: int, expire_days: int | None = None) -> dict[str, Any]:
    """Old versions go after ``days``; with ``expire_days`` (backups) current objects too:
    the db hosts may not delete, so the bucket itself keeps the retention."""
    rule: dict[str, Any] = {
        "ID": "expire-old-versions",
        "Status": "Enabled",
        "Filter": {"Prefix": ""},
        "NoncurrentVersionExpiration": {"NoncurrentDays": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }
    if expire_days is not None:
        rule["Expiration"] = {"Days": expire_days}
    return rule


def _expire_days(ctx: Context, purpose: str) -> int | None:
    return ctx.spec.backup_retention_days if purpose == "backups" else None


def bucket_policy(bucket: str, distribution_arn: str | None) -> dict[str, Any]:
    """TLS only for everyone; reads only by the given CloudFront distribution."""
    arn = f"arn:aws:s3:::{bucket}"
    statements: list[dict[str, Any]] = [
        {
            "Sid": "DenyPlainHttp",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [arn, f"{arn}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    if distribution_arn:
        statements.append(
            {
                "Sid": "CloudFrontReadsThroughOAC",
                "Effect": "Allow",
                "Principal": {"Service": "cloudfront.amazonaws.com"},
                "Action": "s3:GetObject",
                "Resource": f"{arn}/*",
                "Condition": {"StringEquals": {"AWS:SourceArn": distribution_arn}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def ensure_buckets(ctx: Context) -> None:
    ctx.step("S3 buckets")
    for purpose in BUCKETS:
        ensure_bucket(ctx, purpose)


def ensure_bucket(ctx: Context, purpose: str) -> None:
    s3, name = ctx.clients.s3, bucket_name(ctx, purpose)
    ctx.ids[f"bucket:{purpose}"] = name
    role = ROLE_OF_BUCKET[purpose]
    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if _code(exc) in ("403", "AccessDenied"):
            raise ProvisionError(f"bucket {name} exists but belongs to another account") from None
        if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
        ctx.plan.record("S3 bucket", name, "create", "private, encrypted, versioned")
        if not ctx.dry:
            _create(ctx, name)
            for apply in _setters(ctx, name, role, purpose).values():
                apply()
        return
    drift = _drift(ctx, name, role, purpose)
    ctx.plan.record("S3 bucket", name, "update" if drift else "no change", ", ".join(drift))
    if ctx.dry:
        return
    setters = _setters(ctx, name, role, purpose)
    for aspect in drift:
        setters[aspect]()


def _create(ctx: Context, name: str) -> None:
    kwargs: dict[str, Any] = {"Bucket": name, "ObjectOwnership": "BucketOwnerEnforced"}
    if ctx.clients.region != "us-east-1":  # us-east-1 rejects its own name as a constraint
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ctx.clients.region}
    ctx.clients.s3.create_bucket(**kwargs)
    ctx.clients.s3.get_waiter("bucket_exists").wait(Bucket=name)


def _setters(ctx: Context, name: str, role: str, purpose: str) -> dict[str, Callable[[], Any]]:
    """Each aspect of a bucket and the call that sets it to the description."""
    s3 = ctx.clients.s3
    rule = lifecycle_rule(ctx.spec.uploads_noncurrent_days, _expire_days(ctx, purpose))
    cors: dict[str, Callable[[], Any]] = {}
    if purpose == "uploads":
        cors["cors"] = lambda: s3.put_bucket_cors(
            Bucket=name, CORSConfiguration={"CORSRules": cors_rules(ctx.spec.domain)}
        )
    return {
        **cors,
        "public access block": lambda: s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK
        ),
        "ownership": lambda: s3.put_bucket_ownership_controls(
            Bucket=name, OwnershipControls={"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
        ),
        "encryption": lambda: s3.put_bucket_encryption(
            Bucket=name,
            ServerSideEncryptionConfiguration={
                "Rules": [
                    {
                        "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                        "BucketKeyEnabled": True,
                    }
                ]
            },
        ),
        "versioning": lambda: s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration={"Status": "Enabled"}
        ),
        "lifecycle": lambda: s3.put_bucket_lifecycle_configuration(
            Bucket=name, LifecycleConfiguration={"Rules": [rule]}
        ),
        "tags": lambda: s3.put_bucket_tagging(
            Bucket=name, Tagging={"TagSet": ctx.tags(role, name)}
        ),
    }


def _drift(ctx: Context, name: str, role: str, purpose: str) -> list[str]:
    """The aspects of an existing bucket that differ from the description."""
    s3 = ctx.clients.s3
    tags = _read(s3.get_bucket_tagging, ("NoSuchTagSet",), Bucket=name)
    current_tags = {t["Key"]: t["Value"] for t in (tags or {}).get("TagSet", [])}
    if current_tags and not ctx.owns(current_tags):
        raise ProvisionError(f"bucket {name} exists but is not tagged for {ctx.env}")
    drift = []
    pab = _read(s3.get_public_access_block, ("NoSuchPublicAccessBlockConfiguration",), Bucket=name)
    if (pab or {}).get("PublicAccessBlockConfiguration") != PUBLIC_ACCESS_BLOCK:
        drift.append("public access block")
    own = _read(s3.get_bucket_ownership_controls, ("OwnershipControlsNotFoundError",), Bucket=name)
    rules = (own or {}).get("OwnershipControls", {}).get("Rules", [])
    if [r.get("ObjectOwnership") for r in rules] != ["BucketOwnerEnforced"]:
        drift.append("ownership")
    enc = _read(
        s3.get_bucket_encryption, ("ServerSideEncryptionConfigurationNotFoundError",), Bucket=name
    )
    enc_rules = (enc or {}).get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
    algorithms = [
        r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in enc_rules
    ]
    if algorithms not in (["AES256"], ["aws:kms"]):  # either is encryption at rest; keep KMS
        drift.append("encryption")
    if s3.get_bucket_versioning(Bucket=name).get("Status") != "Enabled":
        drift.append("versioning")
    life = _read(
        s3.get_bucket_lifecycle_configuration, ("NoSuchLifecycleConfiguration",), Bucket=name
    )
    days, expire = ctx.spec.uploads_noncurrent_days, _expire_days(ctx, purpose)
    if not _lifecycle_matches((life or {}).get("Rules", []), days, expire):
        drift.append("lifecycle")
    if current_tags != ctx.tag_dict(role, name):
        drift.append("tags")
    if purpose == "uploads":
        cors = _read(s3.get_bucket_cors, ("NoSuchCORSConfiguration",), Bucket=name)
        if (cors or {}).get("CORSRules") != cors_rules(ctx.spec.domain):
            drift.append("cors")
    return drift


def _lifecycle_matches(
    rules: list[dict[str, Any]], days: int, expire_days: int | None = None
) -> bool:
    if len(rules) != 1:
        return False
    rule = rules[0]
    return (
        rule.get("Status") == "Enabled"
        and rule.get("Expiration", {}).get("Days") == expire_days
        and rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays") == days
        and rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation")
        == ABORT_MULTIPART_DAYS
    )


def ensure_bucket_policy(ctx: Context, purpose: str, distribution_arn: str | None) -> None:
    """TLS-only, readable by the distribution; runs after CloudFront so its ARN is known."""
    s3, name = ctx.clients.s3, bucket_name(ctx, purpose)
    wanted = bucket_policy(name, distribution_arn)
    current = None
    if not (ctx.dry and ctx.will_create("S3 bucket", name)):
        raw = _read(s3.get_bucket_policy, ("NoSuchBucketPolicy",), Bucket=name)
        current = json.loads(raw["Policy"]) if raw else None
    if current == wanted:
        ctx.plan.record("Bucket policy", name, "no change", "TLS only, CloudFront OAC")
        return
    ctx.plan.record(
        "Bucket policy", name, "create" if current is None else "update", "TLS only, CloudFront OAC"
    )
    if not ctx.dry:
        s3.put_bucket_policy(Bucket=name, Policy=json.dumps(wanted))


def presigned_upload_url(
    s3: Any, bucket: str, key: str, *, content_type: str, expires: int = 300
) -> str:
    """A URL a signed-in user may PUT one file to, for ``expires`` seconds (default 5 minutes).

    Made by the app with its instance role (no API call), with a SigV4 client::

        s3 = boto3.client("s3", config=Config(signature_version="s3v4"))
        url = presigned_upload_url(s3, bucket, f"uploads/{uid}", content_type="image/png")
    """
    return str(
        s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires,
        )
    )


def presigned_download_url(s3: Any, bucket: str, key: str, *, expires: int = 300) -> str:
    """A URL to GET one object straight from S3 for ``expires`` seconds (no CloudFront)."""
    return str(
        s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
        )
    )
