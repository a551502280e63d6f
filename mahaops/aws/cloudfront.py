"""CloudFront: one distribution in front of the platform.

Dynamic paths go to the ALB; ``/static/*`` comes from the static-assets bucket
and ``/uploads/*`` from the uploads bucket, both through origin access control
(the buckets stay private). Uploads need a URL signed with the environment's
key (:func:`signed_url`): the key pair is generated once, its private half
stored as the secret ``cloudfront_private_key``, its public half placed in a
key group the ``/uploads/*`` behaviour trusts.

CloudFront's OAC, public keys and key groups take no tags: they are found by
their names, ``maha-<env>-...``, which only this environment uses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from typing import Any

from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mahaops.aws.plan import PENDING, Context, pending
from mahaops.aws.s3 import bucket_name
from mahaops.aws.secrets import SsmSecretStore

PRIVATE_KEY_SECRET = "cloudfront_private_key"
KEY_PAIR_ID_SECRET = "cloudfront_key_pair_id"
# AWS managed policies (fixed ids documented by CloudFront).
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER = "216adef6-5c7f-47e4-b989-5492eafa07d3"  # forward headers, cookies, query strings
# The same but the viewer's Host: the ALB origin then gets its own name as Host (and SNI),
# which its certificate covers; the CloudFront name (AllViewer) would fail the TLS check.
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"


def ensure_cdn(ctx: Context) -> str:
    """OAC, signing key, key group and distribution; returns the distribution ARN."""
    ctx.step("CloudFront: origin access, signing key, distribution")
    oac = ensure_origin_access_control(ctx)
    key_id = ensure_signing_key(ctx)
    key_group = ensure_key_group(ctx, key_id)
    remove_stale_keys(ctx, key_id)
    return ensure_distribution(ctx, oac, key_group)


# -- origin access control ---------------------------------------------------------------------


def ensure_origin_access_control(ctx: Context) -> str:
    cf, name = ctx.clients.cloudfront, ctx.name("s3")
    items = cf.list_origin_access_controls()["OriginAccessControlList"].get("Items") or []
    found = next((o for o in items if o["Name"] == name), None)
    if found:
        ctx.plan.record("Origin access control", name, "no change", found["Id"])
        return str(found["Id"])
    ctx.plan.record("Origin access control", name, "create", "SigV4-signed requests to S3")
    if ctx.dry:
        return PENDING
    oac = cf.create_origin_access_control(
        OriginAccessControlConfig={
            "Name": name,
            "Description": f"{ctx.name()}: CloudFront reads the private buckets",
            "SigningProtocol": "sigv4",
            "SigningBehavior": "always",
            "OriginAccessControlOriginType": "s3",
        }
    )
    return str(oac["OriginAccessControl"]["Id"])


# -- the signing key ---------------------------------------------------------------------------


def new_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def public_pem(private_pem: str) -> str:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _key_name(ctx: Context, public: str) -> str:
    # The fingerprint in the name lets a rotated key live beside the old one until swapped.
    return f"{ctx.name('uploads')}-{hashlib.sha256(public.encode()).hexdigest()[:8]}"


def _signing_keys(ctx: Context) -> list[dict[str, Any]]:
    pages = ctx.clients.cloudfront.get_paginator("list_public_keys").paginate()
    items = [k for page in pages for k in page["PublicKeyList"].get("Items") or []]
    prefix = f"{ctx.name('uploads')}-"
    return [k for k in items if k["Name"].startswith(prefix)]


def ensure_signing_key(ctx: Context) -> str:
    """The public key CloudFront checks signed upload URLs against; its private half is a secret."""
    store = SsmSecretStore(ctx.env, client=ctx.clients.ssm, project=ctx.project)
    private = store.get(PRIVATE_KEY_SECRET)
    if private is None:
        ctx.plan.record(
            "Secret", store.path(PRIVATE_KEY_SECRET), "create", "RSA 2048, SecureString"
        )
        if ctx.dry:
            ctx.plan.record("CloudFront public key", ctx.name("uploads"), "create")
            return PENDING
        private = new_private_key()
        store.put(PRIVATE_KEY_SECRET, private)
    else:
        ctx.plan.record("Secret", store.path(PRIVATE_KEY_SECRET), "no change", "SecureString")
    public = public_pem(private)
    name = _key_name(ctx, public)
    found = next((k for k in _signing_keys(ctx) if k["Name"] == name), None)
    if found:
        ctx.plan.record("CloudFront public key", name, "no change", found["Id"])
        key_id = str(found["Id"])
    else:
        ctx.plan.record("CloudFront public key", name, "create", "for signed upload URLs")
        if ctx.dry:
            return PENDING
        key_id = str(
            ctx.clients.cloudfront.create_public_key(
                PublicKeyConfig={
                    "CallerReference": name,
                    "Name": name,
                    "EncodedKey": public,
                    "Comment": f"{ctx.name()}: signs /uploads/* URLs",
                }
            )["PublicKey"]["Id"]
        )
    if not ctx.dry and store.get(KEY_PAIR_ID_SECRET) != key_id:
        store.put(KEY_PAIR_ID_SECRET, key_id)  # the app signs URLs with this id
    return key_id


def key_groups(cf: Any) -> list[dict[str, Any]]:
    """Every key group of the account, page by page (botocore has no paginator for it)."""
    items: list[dict[str, Any]] = []
    marker: str | None = None
    while True:
        page = cf.list_key_groups(**({"Marker": marker} if marker else {}))["KeyGroupList"]
        items.extend(page.get("Items") or [])
        marker = page.get("NextMarker")
        if not marker:
            return items


def ensure_key_group(ctx: Context, key_id: str) -> str:
    cf, name = ctx.clients.cloudfront, ctx.name("uploads")
    items = key_groups(cf)
    found = next(
        (g["KeyGroup"] for g in items if g["KeyGroup"]["KeyGroupConfig"]["Name"] == name), None
    )
    config = {"Name": name, "Items": [key_id], "Comment": f"{ctx.name()}: signed upload URLs"}
    if found is None:
        ctx.plan.record("CloudFront key group", name, "create", "trusted by /uploads/*")
        if ctx.dry:
            return PENDING
        return str(cf.create_key_group(KeyGroupConfig=config)["KeyGroup"]["Id"])
    if found["KeyGroupConfig"]["Items"] == [key_id]:
        ctx.plan.record("CloudFront key group", name, "no change", found["Id"])
        return str(found["Id"])
    ctx.plan.record("CloudFront key group", name, "update", "rotate to the current key")
    if not ctx.dry:
        etag = cf.get_key_group(Id=found["Id"])["ETag"]
        cf.update_key_group(Id=found["Id"], IfMatch=etag, KeyGroupConfig=config)
    return str(found["Id"])


def remove_stale_keys(ctx: Context, key_id: str) -> None:
    """Public keys of this environment no key group uses any more (after a rotation)."""
    if pending(key_id):
        return
    for key in _signing_keys(ctx):
        if key["Id"] == key_id:
            continue
        ctx.plan.record("CloudFront public key", key["Name"], "delete", "replaced by a new key")
        if not ctx.dry:
            etag = ctx.clients.cloudfront.get_public_key(Id=key["Id"])["ETag"]
            ctx.clients.cloudfront.delete_public_key(Id=key["Id"], IfMatch=etag)


def signed_url(url: str, key_pair_id: str, private_pem: str, expires_in: int = 300) -> str:
    """A CloudFront URL valid for ``expires_in`` seconds, for ``/uploads/*`` (canned policy).

    The app, after checking the user may see the file::

        signed_url(f"https://{cdn}/uploads/{key}", secret("cloudfront_key_pair_id"),
                   secret("cloudfront_private_key"))
    """
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the CloudFront signing key must be RSA")

    def rsa_signer(message: bytes) -> bytes:
        return key.sign(message, padding.PKCS1v15(), hashes.SHA1())  # CloudFront requires SHA-1

    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=expires_in)
    return str(
        CloudFrontSigner(key_pair_id, rsa_signer).generate_presigned_url(
            url, date_less_than=expires
        )
    )


# -- the distribution --------------------------------------------------------------------------


def _s3_origin(ctx: Context, purpose: str, oac: str) -> dict[str, Any]:
    return {
        "Id": purpose,
        "DomainName": f"{bucket_name(ctx, purpose)}.s3.{ctx.clients.region}.amazonaws.com",
        "OriginPath": "",
        "S3OriginConfig": {"OriginAccessIdentity": ""},  # empty: OAC instead of the legacy OAI
        "OriginAccessControlId": oac,
    }


def _alb_origin(ctx: Context) -> dict[str, Any]:
    # With a domain, CloudFront talks HTTPS to the ALB by that name (its certificate matches).
    https = bool(ctx.spec.domain)
    return {
        "Id": "alb",
        "DomainName": ctx.spec.domain or ctx.ids["lb:dns"],
        "OriginPath": "",
        "CustomOriginConfig": {
            "HTTPPort": 80,
            "HTTPSPort": 443,
            "OriginProtocolPolicy": "https-only" if https else "http-only",
            "OriginSslProtocols": {"Quantity": 1, "Items": ["TLSv1.2"]},
            "OriginReadTimeout": 60,
            "OriginKeepaliveTimeout": 5,
        },
    }


def _methods(items: list[str]) -> dict[str, Any]:
    return {
        "Quantity": len(items),
        "Items": items,
        "CachedMethods": {"Quantity": 2, "Items": ["GET", "HEAD"]},
    }


def _behaviour(origin: str, cache_policy: str, key_group: str | None = None) -> dict[str, Any]:
    trusted: dict[str, Any] = {"Enabled": bool(key_group), "Quantity": 1 if key_group else 0}
    if key_group:
        trusted["Items"] = [key_group]
    return {
        "TargetOriginId": origin,
        "ViewerProtocolPolicy": "redirect-to-https",
        "AllowedMethods": _methods(["GET", "HEAD"]),
        "Compress": True,
        "CachePolicyId": cache_policy,
        "TrustedKeyGroups": trusted,
    }


def distribution_config(
    ctx: Context, caller_reference: str, oac: str, key_group: str
) -> dict[str, Any]:
    spec = ctx.spec
    origins = [_alb_origin(ctx), _s3_origin(ctx, "static", oac), _s3_origin(ctx, "uploads", oac)]
    default = {
        **_behaviour("alb", CACHING_DISABLED),
        "AllowedMethods": _methods(["GET", "HEAD", "OPTIONS", "PUT", "POST", "PATCH", "DELETE"]),
        "OriginRequestPolicyId": ALL_VIEWER_EXCEPT_HOST,
    }
    behaviours = [
        {"PathPattern": "/static/*", **_behaviour("static", CACHING_OPTIMIZED)},
        {"PathPattern": "/uploads/*", **_behaviour("uploads", CACHING_OPTIMIZED, key_group)},
    ]
    aliases = [spec.cdn_domain] if spec.cdn_domain else []
    cdn_certificate = ctx.ids.get("cdn_certificate", spec.cdn_certificate_arn)
    certificate: dict[str, Any] = (
        {
            "ACMCertificateArn": cdn_certificate,
            "SSLSupportMethod": "sni-only",
            "MinimumProtocolVersion": "TLSv1.2_2021",
        }
        if cdn_certificate
        else {"CloudFrontDefaultCertificate": True}
    )
    return {
        "CallerReference": caller_reference,
        "Comment": ctx.name(),
        "Enabled": True,
        "Aliases": {"Quantity": len(aliases), "Items": aliases},
        "Origins": {"Quantity": len(origins), "Items": origins},
        "DefaultCacheBehavior": default,
        "CacheBehaviors": {"Quantity": len(behaviours), "Items": behaviours},
        "ViewerCertificate": certificate,
        "PriceClass": "PriceClass_100",
        "HttpVersion": "http2and3",
        "IsIPV6Enabled": True,
        "DefaultRootObject": "",
    }


def fingerprint(config: dict[str, Any]) -> tuple[Any, ...]:
    """What provisioning controls of a distribution, ignoring the defaults AWS fills in."""

    def behaviour(b: dict[str, Any]) -> tuple[Any, ...]:
        trusted = b.get("TrustedKeyGroups") or {}
        return (
            b.get("PathPattern", ""),
            b["TargetOriginId"],
            b["ViewerProtocolPolicy"],
            bool(b.get("Compress")),
            b.get("CachePolicyId"),
            b.get("OriginRequestPolicyId") or None,
            tuple(trusted.get("Items") or []) if trusted.get("Enabled") else (),
        )

    def origin(o: dict[str, Any]) -> tuple[Any, ...]:
        custom = o.get("CustomOriginConfig") or {}
        return (
            o["Id"],
            o["DomainName"],
            o.get("OriginAccessControlId", ""),
            custom.get("OriginProtocolPolicy"),
        )

    certificate = config.get("ViewerCertificate") or {}
    return (
        bool(config.get("Enabled")),
        tuple(sorted((config.get("Aliases") or {}).get("Items") or [])),
        tuple(sorted(origin(o) for o in config["Origins"]["Items"])),
        behaviour(config["DefaultCacheBehavior"]),
        tuple(behaviour(b) for b in (config.get("CacheBehaviors") or {}).get("Items") or []),
        certificate.get("ACMCertificateArn") or None,
        config.get("PriceClass"),
    )


def find_distribution(ctx: Context) -> dict[str, Any] | None:
    """The environment's distribution: its comment is ``maha-<env>`` and its tags agree."""
    cf = ctx.clients.cloudfront
    for page in cf.get_paginator("list_distributions").paginate():
        for summary in (page.get("DistributionList") or {}).get("Items") or []:
            if summary.get("Comment") != ctx.name():
                continue
            tags = cf.list_tags_for_resource(Resource=summary["ARN"])["Tags"].get("Items") or []
            if ctx.owns(tags):
                return dict(summary)
    return None


def ensure_distribution(ctx: Context, oac: str, key_group: str) -> str:
    cf, name = ctx.clients.cloudfront, ctx.name()
    found = find_distribution(ctx)
    if found is None:
        ctx.plan.record("CloudFront distribution", name, "create", "ALB, /static/*, /uploads/*")
        if ctx.dry:
            return PENDING
        config = distribution_config(ctx, f"{name}-{uuid.uuid4()}", oac, key_group)
        created = cf.create_distribution_with_tags(
            DistributionConfigWithTags={
                "DistributionConfig": config,
                "Tags": {"Items": ctx.tags("cdn", name)},
            }
        )["Distribution"]
        ctx.ids["cdn:domain"] = created["DomainName"]
        return str(created["ARN"])
    ctx.ids["cdn:domain"] = found["DomainName"]
    current = cf.get_distribution_config(Id=found["Id"])
    wanted = distribution_config(
        ctx, current["DistributionConfig"]["CallerReference"], oac, key_group
    )
    if fingerprint(current["DistributionConfig"]) == fingerprint(wanted):
        ctx.plan.record("CloudFront distribution", name, "no change", found["DomainName"])
        return str(found["ARN"])
    ctx.plan.record("CloudFront distribution", name, "update", "origins or behaviours differ")
    if not ctx.dry:
        cf.update_distribution(Id=found["Id"], IfMatch=current["ETag"], DistributionConfig=wanted)
    return str(found["ARN"])
