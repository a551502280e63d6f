"""Settings of the storage role: an S3 API (moto's S3, behind a signature check) for the
local platform and tests, where no S3 is reachable; on AWS the app uses S3 itself.

The client settings are read by the app servers too (they presign for this endpoint and
its bucket), so they may be set in ``all.py`` or an overlay as well as in
``storage_servers.py``; on AWS the inventory sets ``storage_uploads_bucket`` from what
``provision`` made.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from mahaops.settings.aws import Region
from mahaops.settings.models import Settings, group_settings

# S3's own rule for bucket names (lower case, digits, dots and dashes, 3 to 63).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ENDPOINT = re.compile(r"^https://[A-Za-z0-9.-]+(:\d{1,5})?$")


def _bucket(value: str) -> str:
    if not _BUCKET.match(value) or ".." in value:
        raise ValueError(f"{value!r} is not an S3 bucket name (3-63 of a-z 0-9 . -)")
    return value


def _endpoint(value: str) -> str:
    if value and not _ENDPOINT.match(value):
        raise ValueError(f'{value!r} is not an HTTPS endpoint (https://host[:port]) or ""')
    return value


BucketName = Annotated[str, AfterValidator(_bucket)]
Endpoint = Annotated[str, AfterValidator(_endpoint)]


@group_settings("all", "local", "aws", "app_servers", "workers", "storage_servers")
class StorageClientSettings(Settings):
    """What the storage's clients (the app servers) need too."""

    storage_port: int = Field(9000, ge=1, le=65535)  # the S3 API, HTTPS, on storage hosts
    storage_region: Region = "us-east-1"  # the region requests are signed for
    storage_uploads_bucket: BucketName = "maha-uploads"  # users' uploads: private, presigned
    # Where browsers send presigned requests. "" = the storage host's published port on
    # 127.0.0.1 locally (https://127.0.0.1:<port>), S3's regional endpoint on AWS.
    storage_public_endpoint: Endpoint = ""


_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$")


def _origins(value: list[str]) -> list[str]:
    for origin in value:
        if not _ORIGIN.match(origin):
            raise ValueError(f"{origin!r} is not a browser origin (scheme://host[:port])")
    return value


Origins = Annotated[list[str], AfterValidator(_origins)]


@group_settings("storage_servers")
class StorageServerSettings(Settings):
    """The storage host's own: its server, signature check and data."""

    # Origins whose browsers may send presigned requests (CORS), besides the load balancers'
    # own published HTTPS origins (https://127.0.0.1:<port>, https://localhost:<port>) which
    # the deploy adds itself. A bucket's own CORS rules, where set, are answered first.
    storage_cors_origins: Origins = []
    # More names clients may call the server by (its certificate's), besides its private
    # address, its inventory name, 127.0.0.1 and localhost.
    storage_tls_names: list[str] = Field(default_factory=list)
    # A header-signed request dated further than this from the server's clock is refused
    # (RequestTimeTooSkewed), as S3 does; presigned URLs expire by their own X-Amz-Expires.
    storage_clock_skew_seconds: int = Field(900, ge=60, le=3600)
    # The longest X-Amz-Expires a presigned URL may ask for (S3's limit: 7 days).
    storage_presign_max_seconds: int = Field(604800, ge=60, le=604800)
    # Larger request bodies are refused (413) before moto reads them.
    storage_max_object_bytes: int = Field(1024 * 1024 * 1024, ge=1024, le=5 * 1024**3)
    storage_loglevel: Literal["warning", "info", "debug"] = "warning"  # info: a line a request
