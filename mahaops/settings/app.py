"""Settings of the app tier: releases and Node.js (app servers and workers), the web
service and nginx (app servers only)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from mahaops.settings.base import Cidr, UserName
from mahaops.settings.models import Fingerprint, Settings, group_settings

_NGINX_SIZE = re.compile(r"^\d+[kKmMgG]?$")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_ORIGIN = re.compile(r"^https?://[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$")


def _origin(value: str) -> str:
    if value and not _ORIGIN.match(value):
        raise ValueError(f'{value!r} is not an origin (https://host[:port], no path) or ""')
    return value


Origin = Annotated[str, AfterValidator(_origin)]


def _nginx_size(value: str) -> str:
    if not _NGINX_SIZE.match(value):
        raise ValueError(f"{value!r} is not an nginx size (e.g. 10m, 512k)")
    return value


# maha.env is read by systemd (EnvironmentFile) and sourced by sh for the migrations
# (operations/release.py): a value must mean the same to both, so nothing the shell would
# run, expand or split on (`x; rm -rf /` would run as a command) is accepted.
_SHELL_SPECIAL = frozenset(" \t;&|$`()<>\"'\\~")


def _env_names(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        if not _ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not an environment variable name (A-Z, 0-9, _)")
        special = next((char for char in text if char in _SHELL_SPECIAL), None)
        if special:
            raise ValueError(
                f"{name}: {special!r} means something to the shell that sources maha.env; "
                "values are one word without spaces, quotes, backslashes or ; & | $ ` ( ) < > ~"
            )
    return value


_NGINX_RATE = re.compile(r"^[1-9]\d*r/[sm]$")
_NGINX_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")


def _nginx_rate(value: str) -> str:
    if not _NGINX_RATE.match(value):
        raise ValueError(f"{value!r} is not an nginx rate (e.g. 10r/m, 5r/s)")
    return value


def _nginx_paths(value: list[str]) -> list[str]:
    for path in value:
        if not _NGINX_PATH.match(path):
            raise ValueError(
                f"{path!r} is not a plain path: it starts with / and holds only letters, "
                "digits and . _ ~ / -"
            )
    return value


_KEY_ID = re.compile(r"^[A-Z0-9]{1,64}$")


def _key_id(value: str) -> str:
    if value and not _KEY_ID.match(value):
        raise ValueError(f'{value!r} is not a CloudFront public key id (A-Z, 0-9) or ""')
    return value


KeyId = Annotated[str, AfterValidator(_key_id)]
NginxSize = Annotated[str, AfterValidator(_nginx_size)]
NginxRate = Annotated[str, AfterValidator(_nginx_rate)]
NginxPaths = Annotated[list[str], AfterValidator(_nginx_paths)]
AppEnv = Annotated[dict[str, str], AfterValidator(_env_names)]


@group_settings("app_servers", "workers")
class ReleaseSettings(Settings):
    """How releases reach the app servers and workers, and how they are kept."""

    # -- the release --------------------------------------------------------------------------
    app_release_tarball: str = ""  # a built maha-<id>.tar.gz; "" = build app/ once per run
    app_rollback: bool = False  # one-shot (`invoke rollback`): go back, build none
    app_rollback_to: str = ""  # the release id a rollback goes back to (set by `invoke rollback`)
    app_rollback_force: bool = False  # roll back below the database's schema version
    app_allow_breaking: bool = False  # apply migrations marked `-- maha: breaking`
    app_root: str = "/srv/maha"  # releases/<id>, shared/, current -> releases/<id>
    app_keep_releases: int = Field(5, ge=2, le=50)  # unpacked releases kept per host
    # release-history lines kept per host (one per switch); lines of the current and
    # previous releases are always kept, and rollback reads only the newest
    app_release_history_keep: int = Field(100, ge=1, le=100000)
    app_user: UserName = "maha-app"  # runs the app; no login, owns only the env file

    # -- what the processes connect to ------------------------------------------------------
    app_database_host: str = ""  # "" = the first db server's private address (or an RDS name)
    app_redis_host: str = ""  # "" = the first cache server's private address
    app_database_name: str = "maha"  # PostgreSQL database on the db server
    app_database_user: str = "maha_app"  # its owner; password: secret postgresql_password_<user>
    app_redis_db: int = Field(0, ge=0, le=15)  # Redis database number
    app_pg_pool_max: int = Field(10, ge=1, le=200)  # PostgreSQL connections per process
    app_env: AppEnv = {}  # more environment for web and worker, e.g. {"PG_POOL_MAX": "20"}
    # Where pages load /static/ from: "" = the app servers themselves; on AWS the inventory
    # gives the CDN's origin (https://<cdn_domain or the distribution's name>)
    app_asset_base_url: Origin = ""


@group_settings("app_servers", "workers")
class NodejsSettings(Settings):
    """The Node.js runtime: Debian's package when its major matches, else NodeSource's."""

    # A supported LTS (22: maintained to April 2027; 18 is past its end of life). Debian 12
    # ships 18, which the local overlay keeps (NodeSource is out of the local hosts' reach).
    nodejs_major: int = Field(22, ge=18, le=30)
    nodejs_distribution_major: int = 18  # the major of the distribution's own nodejs package
    nodejs_nodesource_url: str = "https://deb.nodesource.com"  # repository base (node_<major>.x)
    nodejs_nodesource_key_url: str = "https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key"
    # The key NodeSource signs its repositories with (since 2023); a downloaded key that is
    # not this one is refused before the repository is trusted.
    nodejs_nodesource_key_fingerprint: Fingerprint = "6F71F525282841EEDAF851B42F59B5F99B1BE0B4"


@group_settings("app_servers")
class AppSettings(Settings):
    """The web service (systemd unit maha-web) on the app servers."""

    app_port: int = Field(3000, ge=1024, le=65535)  # Node listens on 127.0.0.1 only
    app_socket_backlog: int = Field(4096, ge=16, le=65535)  # connections queued during a restart
    app_health_path: str = "/health"  # checked on the host after each restart, and by the LB
    app_health_retries: int = Field(30, ge=1, le=300)  # tries, one per app_health_interval
    app_health_interval: float = Field(1.0, gt=0, le=30)  # seconds between tries
    # -- private uploads (issue 15; bucket and endpoint: the storage settings) -----------------
    # the largest file a user may upload, bytes (413 above; S3 takes up to 5 GiB in one PUT)
    app_upload_max_bytes: int = Field(10 * 1024 * 1024, ge=1, le=5 * 1024**3)
    # how long a presigned PUT, presigned GET or CloudFront signed URL stays valid, seconds
    app_upload_url_seconds: int = Field(300, ge=1, le=7 * 24 * 3600)
    # downloads as CloudFront signed URLs under this origin (https://cdn.example.org, whose
    # /uploads/* is the uploads bucket); "" = S3 presigned GETs
    app_uploads_cdn_url: Origin = ""
    # the CloudFront public key the signing key (secret cloudfront_private_key) belongs to;
    # "" = the id provision stored (secret cloudfront_key_pair_id)
    app_cloudfront_key_id: KeyId = ""

    @model_validator(mode="after")
    def _cdn_over_https(self) -> AppSettings:
        if self.app_uploads_cdn_url.startswith("http://"):
            raise ValueError("app_uploads_cdn_url: CloudFront signed URLs go over https:// only")
        return self


@group_settings("app_servers")
class NginxSettings(Settings):
    """nginx in front of Node on each app server."""

    nginx_listen_port: int = Field(80, ge=1, le=65535)  # open to the load balancers only
    nginx_server_name: str = "_"  # any name: the load balancer decides what reaches us
    nginx_worker_connections: int = Field(1024, ge=64, le=65535)  # WebSockets hold one each
    nginx_client_max_body_size: NginxSize = "10m"  # larger uploads get 413
    nginx_static_max_age: int = Field(31536000, ge=0)  # /static/ Cache-Control max-age, seconds
    nginx_gzip: bool = True  # compress text responses
    nginx_proxy_read_timeout: int = Field(3600, ge=1)  # seconds; idle WebSockets live this long
    nginx_real_ip_from: list[Cidr] = []  # trusted proxies besides the load_balancers group
    # -- slow clients and a slow app (seconds; nginx's own defaults are 60) --------------------
    nginx_client_header_timeout: int = Field(10, ge=1, le=300)  # to send the request's headers
    nginx_client_body_timeout: int = Field(15, ge=1, le=300)  # between two reads of a body
    nginx_send_timeout: int = Field(30, ge=1, le=300)  # between two writes of an answer
    nginx_keepalive_timeout: int = Field(65, ge=0, le=3600)  # idle client connection; > the LB's
    nginx_proxy_connect_timeout: int = Field(5, ge=1, le=75)  # to reach Node (held by systemd)
    nginx_proxy_timeout: int = Field(60, ge=1, le=3600)  # between two reads/writes to Node (HTTP)
    # -- HSTS: sent on answers to HTTPS only (X-Forwarded-Proto from the load balancer) -------
    nginx_hsts_max_age: int = Field(31536000, ge=0)  # seconds browsers keep to HTTPS; 0 = no HSTS
    nginx_hsts_include_subdomains: bool = False  # also every subdomain (only if all speak TLS)
    # -- rate limiting of sign-in (per client address, then 429) ---------------------------
    nginx_rate_limit_paths: NginxPaths = ["/api/signin"]  # exact paths; [] = no limit
    nginx_rate_limit_rate: NginxRate = "10r/m"  # requests per client address, per s or per m
    nginx_rate_limit_burst: int = Field(5, ge=0, le=1000)  # more at once before 429
