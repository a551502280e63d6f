"""Static assets with content-hashed names, and their publication where the CDN reads them.

A build copies every file of ``public/`` to a name carrying its content's digest
(``app.css`` → ``app.3f2a1b9c0d4e.css``) and writes ``public/manifest.json`` (original →
hashed name). The app writes hashed names into its pages, so an asset can be cached for
a year: a new release names new content differently.

On AWS, CloudFront serves ``/static/*`` from the environment's static bucket. A release
uploads its hashed files there (``static/<hashed name>``) before any app server switches,
so a page of the new release never names an asset the CDN lacks. Uploads are never
deleted: pages of the previous release (still served mid-rollout, or after a rollback)
keep naming theirs; the bucket's versioning and the CDN's cache do not change that.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mahaops.settings import DEFAULT_GROUP_DATA

MANIFEST = "manifest.json"
PUBLIC = "public"
HASHED = re.compile(r"\.[0-9a-f]{12}(\.[^./]+)?$")  # name.<12 hex>.ext
IMMUTABLE = "public, max-age=31536000, immutable"
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}


def hashed_name(relative: str, content: bytes) -> str:
    """``dir/app.css`` → ``dir/app.<first 12 hex of sha256>.css``."""
    path = Path(relative)
    digest = hashlib.sha256(content).hexdigest()[:12]
    return (path.parent / f"{path.stem}.{digest}{path.suffix}").as_posix()


def fingerprint(public: Path) -> dict[str, str]:
    """Hashed copies of ``public``'s files and its manifest; returns the manifest."""
    manifest: dict[str, str] = {}
    originals = sorted(
        p for p in public.rglob("*") if p.is_file() and not p.is_symlink() and p.name != MANIFEST
    )
    for path in originals:
        relative = path.relative_to(public).as_posix()
        if HASHED.search(path.name):
            continue  # already hashed by the app's own tooling: served as it is
        content = path.read_bytes()
        target = hashed_name(relative, content)
        (public / target).write_bytes(content)
        manifest[relative] = target
    (public / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def content_type(name: str) -> str:
    suffix = Path(name).suffix
    return TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def hashed_files(tarball: Path) -> dict[str, bytes]:
    """The hashed assets a release tarball holds, by their name under ``public/``."""
    with tarfile.open(tarball, "r:gz") as tar:
        member = tar.extractfile(f"{PUBLIC}/{MANIFEST}")
        if member is None:
            return {}
        manifest: dict[str, str] = json.loads(member.read())
        files = {}
        for name in sorted(set(manifest.values())):
            data = tar.extractfile(f"{PUBLIC}/{name}")
            if data is None:
                raise ValueError(f"{tarball}: {PUBLIC}/{name} named by the manifest is missing")
            files[name] = data.read()
        return files


@dataclass
class Published:
    bucket: str
    uploaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)


def publish(
    s3: Any,
    bucket: str,
    files: dict[str, bytes],
    *,
    dry: bool = False,
    progress: Callable[[str], None] = print,
) -> Published:
    """Upload ``files`` to ``bucket`` under ``static/``, each once: an object of the same
    hashed name already holds the same content, so it is left as it is. ``dry``: only
    say what would be uploaded."""
    done = Published(bucket)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="static/")
    there = {o["Key"] for page in pages for o in page.get("Contents") or []}
    for name, content in files.items():
        key = f"static/{name}"
        if key in there:
            done.present.append(key)
            continue
        done.uploaded.append(key)
        if dry:
            progress(f"static asset would be uploaded: s3://{bucket}/{key}")
            continue
        s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=content,
            ContentType=content_type(name),
            CacheControl=IMMUTABLE,
            ChecksumAlgorithm="SHA256",
        )
        progress(f"static asset uploaded: s3://{bucket}/{key}")
    return done


def publish_release(
    env: str,
    tarball: Path,
    *,
    dry: bool = False,
    progress: Callable[[str], None] = print,
    group_data: Path = DEFAULT_GROUP_DATA,
) -> Published:
    """Publish a release's hashed assets to ``env``'s static bucket (AWS kinds)."""
    from mahaops.aws.session import CLIENT_CONFIG

    session, bucket = static_bucket(env, group_data)
    s3 = session.client("s3", config=CLIENT_CONFIG)
    return publish(s3, bucket, hashed_files(tarball), dry=dry, progress=progress)


def static_bucket(env: str, group_data: Path = DEFAULT_GROUP_DATA) -> tuple[Any, str]:
    """A boto3 session on ``env``'s account and the name provisioning gave its static bucket
    (the account id is part of it)."""
    from mahaops.aws.config import load_environment
    from mahaops.aws.s3 import named_bucket
    from mahaops.aws.session import CLIENT_CONFIG, make_session

    loaded = load_environment(env, group_data)
    session = make_session(loaded.spec.region, loaded.spec.profile)
    account = session.client("sts", config=CLIENT_CONFIG).get_caller_identity()["Account"]
    return session, named_bucket(loaded.project, env, "static", account)
