"""App server role: Node.js, the release in /srv/maha, the maha-web service and nginx
in front of it.

Read top to bottom, it is the runbook: runtime, app user and directories, the shared
environment, the release (push, unpack, migrate, switch, restart, check, prune), then
nginx. Workers run the same release steps (deploys/worker.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from pyinfra import host, inventory, state
from pyinfra.api import deploy
from pyinfra.api.exceptions import NoGroupError
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files, server, systemd

from deploys import _storage
from deploys._common import KEYRINGS, apt_repository, release_restarted, reloaded, template, unit
from deploys._tls import CA_FILE, trust_ca
from mahaops import tls
from mahaops.context import addresses, settings
from mahaops.release import for_run
from mahaops.secrets import current, secret
from mahaops.settings.app import AppSettings, NginxSettings, NodejsSettings, ReleaseSettings
from operations import apt, release
from operations.files import validated_template

NODESOURCE_KEYRING = f"{KEYRINGS}/nodesource.asc"
# The CloudFront signing key and its public key's id, as `invoke provision` stores them
# (mahaops/aws/cloudfront.py: PRIVATE_KEY_SECRET, KEY_PAIR_ID_SECRET).
CLOUDFRONT_KEY_SECRET = "cloudfront_private_key"
CLOUDFRONT_KEY_ID_SECRET = "cloudfront_key_pair_id"


# -- what follows from the inventory ------------------------------------------------------------


def _peer_setting(group: str, key: str, default: Any) -> Any:
    """A setting of the hosts of ``group`` (e.g. the db servers' port), as they are deployed."""
    try:
        members = inventory.get_group(group)
    except NoGroupError:
        return default
    for member in sorted(members, key=lambda h: h.name):
        if key in member.data.dict():
            return member.data.get(key)
    return default


def _first(group: str) -> str:
    found = addresses(group)
    return found[0] if found else "127.0.0.1"


def release_vars(s: ReleaseSettings) -> dict[str, Any]:
    """Variables of the shared environment file: where PostgreSQL and Redis are, with secrets."""
    db_password = quote(secret(f"postgresql_password_{s.app_database_user}"), safe="")
    redis_password = quote(secret("redis_password"), safe="")
    db_port = int(_peer_setting("db_servers", "postgresql_port", 5432))
    redis_port = int(_peer_setting("cache_servers", "redis_port", 6379))
    queue_port = int(_peer_setting("cache_servers", "redis_queue_port", 6380))
    db_host = s.app_database_host or _first("db_servers")
    redis_host = s.app_redis_host or _first("cache_servers")
    # Over TLS, the server's certificate is verified against the environment's CA only.
    db_tls = (
        f"?sslmode=verify-full&sslrootcert={CA_FILE}"
        if _peer_setting("db_servers", "postgresql_ssl", True)
        else ""
    )
    redis_tls = bool(_peer_setting("cache_servers", "redis_tls", True))
    scheme = "rediss" if redis_tls else "redis"
    return {
        **s.model_dump(),
        "app_database_url": (
            f"postgres://{s.app_database_user}:{db_password}@{db_host}:{db_port}"
            f"/{s.app_database_name}{db_tls}"
        ),
        "app_redis_url": (
            # the cache role's ACL: clients are its default user, with redis_password
            f"{scheme}://:{redis_password}@{redis_host}:{redis_port}/{s.app_redis_db}"
        ),
        # the job queue's own instance on the cache host (noeviction), same users
        "app_queue_url": f"{scheme}://:{redis_password}@{redis_host}:{queue_port}/0",
        "app_redis_ca_file": CA_FILE if redis_tls else "",
    }


def uploads_vars(a: AppSettings, r: ReleaseSettings, e: _storage.StorageEndpoint) -> dict[str, Any]:
    """maha.env's uploads variables: the storage endpoint (deploys/_storage.py) and the app's
    limits. Locally uploads need a storage host (else the bucket is "" and uploads answer
    503); on AWS S3 itself is there, with the instance role's credentials."""
    enabled = bool(e.internal) or "aws" in host.groups
    key_id = a.app_cloudfront_key_id
    if a.app_uploads_cdn_url and not key_id:
        key_id = current().get(CLOUDFRONT_KEY_ID_SECRET) or ""
        if not key_id:
            raise ValueError(
                "app_uploads_cdn_url is set but no CloudFront key id: set app_cloudfront_key_id "
                f"or run `invoke provision` (secret {CLOUDFRONT_KEY_ID_SECRET})"
            )
    return {
        "app_uploads_bucket": e.bucket if enabled else "",
        "app_s3_region": e.region,
        "app_s3_endpoint": e.internal,
        "app_s3_public_endpoint": e.public,
        "app_s3_force_path_style": bool(e.internal or e.public),
        "app_s3_access_key_id": e.access_key_id,
        "app_s3_secret_access_key": e.secret_access_key,  # masked by _storage.credentials()
        "app_s3_ca_file": CA_FILE if e.internal.startswith("https://") else "",
        "app_upload_max_bytes": a.app_upload_max_bytes,
        "app_upload_url_seconds": a.app_upload_url_seconds,
        "app_uploads_cdn_url": a.app_uploads_cdn_url,
        "app_cloudfront_key_id": key_id if a.app_uploads_cdn_url else "",
        "app_cloudfront_private_key_file": (
            cloudfront_key_file(r) if a.app_uploads_cdn_url and enabled else ""
        ),
    }


def cloudfront_key_file(r: ReleaseSettings) -> str:
    return f"{r.app_root}/shared/cloudfront-signing.pem"


def uploads_origin(e: _storage.StorageEndpoint) -> str:
    """Where browsers send presigned PUTs (the CSP's connect-src must allow it): the storage
    host's public endpoint locally, the bucket's regional S3 name on AWS, "" without uploads."""
    if e.public or e.internal:
        return e.public or e.internal
    if "aws" in host.groups:
        return f"https://{e.bucket}.s3.{e.region}.amazonaws.com"
    return ""


def cloudfront_signing_key(r: ReleaseSettings) -> OperationMeta:
    """The CloudFront signing key (the secret `invoke provision` made) for the app's signed
    download URLs: 0600, the app user's, never printed."""
    pem = current().get(CLOUDFRONT_KEY_SECRET)
    if not pem:
        raise ValueError(
            f"app_uploads_cdn_url is set but the secrets store has no {CLOUDFRONT_KEY_SECRET}: "
            "run `invoke provision` for this environment first"
        )
    return template(
        "CloudFront signing key (signed download URLs)",
        "app/cloudfront-signing.pem.j2",
        cloudfront_key_file(r),
        mode="600",
        user=r.app_user,
        group=r.app_user,
        app_cloudfront_private_key=tls.mask_key(pem),  # whole and line by line
    )


def _runs_migrations() -> bool:
    """Migrations run once per release: on the first app server of this run (else worker)."""
    for group in ("app_servers", "workers"):
        try:
            members = inventory.get_group(group)
        except NoGroupError:
            continue
        in_run = [
            h
            for h in members
            if h in state.activated_hosts and (not state.limit_hosts or h in state.limit_hosts)
        ]
        if in_run:
            return min(in_run, key=lambda h: h.name).name == host.name
    return False


# -- shared with the worker role ----------------------------------------------------------------


def nodejs(n: NodejsSettings) -> None:
    """The pinned Node.js major: Debian's package when it is that major, else NodeSource's."""
    if n.nodejs_major == n.nodejs_distribution_major:
        files.file(
            name="Node.js from Debian: no NodeSource repository",
            path="/etc/apt/sources.list.d/nodesource.list",
            present=False,
        )
        apt.packages(name=f"Install Node.js {n.nodejs_major} (Debian)", packages=["nodejs"])
        return
    tvars = {
        **n.model_dump(),
        "nodejs_keyring": NODESOURCE_KEYRING,
        "nodejs_nodesource_host": urlsplit(n.nodejs_nodesource_url).hostname,
    }
    repo = apt_repository(
        f"NodeSource repository for Node.js {n.nodejs_major}",
        key_name="NodeSource signing key",
        key_url=n.nodejs_nodesource_key_url,
        keyring=NODESOURCE_KEYRING,
        fingerprint=n.nodejs_nodesource_key_fingerprint,
        fingerprint_setting="nodejs_nodesource_key_fingerprint",
        src="app/nodesource.list.j2",
        dest="/etc/apt/sources.list.d/nodesource.list",
        **tvars,
    )
    template(
        "Prefer NodeSource's nodejs over Debian's",
        "app/nodesource.pref.j2",
        "/etc/apt/preferences.d/nodesource",
        **tvars,
    )
    apt.update(name="Read the NodeSource repository", _if=repo.did_change)
    apt.packages(
        name=f"Install Node.js {n.nodejs_major} (NodeSource)", packages=["nodejs"], latest=True
    )


def app_user_and_directories(s: ReleaseSettings) -> None:
    server.user(
        name=f"App user {s.app_user} (no login)",
        user=s.app_user,
        system=True,
        shell="/usr/sbin/nologin",
        home=s.app_root,
        ensure_home=False,  # the root is root's: the app user may not change its code
        create_home=False,
    )
    for path, user, group, mode in (
        (s.app_root, "root", "root", "755"),
        (f"{s.app_root}/releases", "root", "root", "755"),
        (f"{s.app_root}/tarballs", "root", "root", "700"),
        (f"{s.app_root}/shared", "root", s.app_user, "750"),
    ):
        files.directory(name=f"Directory {path}", path=path, user=user, group=group, mode=mode)


def shared_environment(s: ReleaseSettings, more: dict[str, Any] | None = None) -> OperationMeta:
    """The environment file of maha-web, maha-worker and migrations, and the CA that its
    database, Redis and storage connections verify servers against; ``more``: variables of
    the app servers' own (uploads)."""
    trust_ca()
    return template(
        "Shared environment (database, Redis and storage endpoints, secrets)",
        "app/maha.env.j2",
        f"{s.app_root}/shared/maha.env",
        mode="600",
        user=s.app_user,
        group=s.app_user,
        **release_vars(s),
        **(more or {}),
    )


def release_steps(
    s: ReleaseSettings,
    service: str,
    check: str,
    retries: int,
    interval: float,
    restart_when: Sequence[OperationMeta],
) -> None:
    """Push, unpack, migrate, switch, restart, check and prune: one release on this host.

    ``restart_when``: the unit and environment operations whose change also needs a restart.
    """
    if s.app_rollback:
        if not s.app_rollback_to:
            raise ValueError("app_rollback needs app_rollback_to: the release id to go back to")
        back = release.rolled_back(
            name=f"Roll back to {s.app_rollback_to}",
            target=s.app_rollback_to,
            services=[service],
            user=s.app_user,
            root=s.app_root,
            force=s.app_rollback_force,
        )
        release.healthy(
            name=f"Check {service} after the rollback",
            check=check,
            services=[service],
            when=[back],
            root=s.app_root,
            retries=retries,
            interval=interval,
        )
        return
    built = for_run(s.app_release_tarball)  # built once per run, before any host changes
    tarball = f"{s.app_root}/tarballs/{built.tarball.name}"
    files.put(
        name=f"Push release {built.id}",
        src=str(built.tarball),
        dest=tarball,
        mode="600",
    )
    release.unpacked(
        name=f"Unpack release {built.id}", tarball=tarball, release_id=built.id, root=s.app_root
    )
    if _runs_migrations():
        release.migrated(
            name=f"Migrate the database for {built.id}",
            release_id=built.id,
            user=s.app_user,
            root=s.app_root,
            allow_breaking=s.app_allow_breaking,
            # On a fresh platform the db server may still be on its way: give it time.
            _retries=10,
            _retry_delay=3,
        )
    switched = release.current(
        name=f"Switch to release {built.id}",
        release_id=built.id,
        root=s.app_root,
        services=[service],
    )
    systemd.service(name=f"Enable {service}", service=service, enabled=True)
    # Also owed after a run that died between the switch and a passing check.
    restart = release_restarted(
        name=f"Restart {service}",
        service=service,
        when=[*restart_when, switched],
        root=s.app_root,
    )
    release.healthy(
        name=f"Check {service}; switch back if unhealthy",
        check=check,
        services=[service],
        when=[restart],
        root=s.app_root,
        retries=retries,
        interval=interval,
    )
    release.pruned(
        name=f"Keep the last {s.app_keep_releases} releases",
        keep=s.app_keep_releases,
        root=s.app_root,
    )
    release.history_trimmed(
        name=f"Keep the last {s.app_release_history_keep} switches in release-history",
        keep=s.app_release_history_keep,
        root=s.app_root,
    )


# -- the role -------------------------------------------------------------------------------------


def nginx_vars(
    a: AppSettings, n: NginxSettings, r: ReleaseSettings, uploads: str = ""
) -> dict[str, Any]:
    return {
        **a.model_dump(),
        **n.model_dump(),
        "app_root": r.app_root,
        "app_asset_base_url": r.app_asset_base_url,  # the page's assets: allowed by the CSP
        "app_uploads_origin": uploads,  # presigned PUTs go there: the CSP's connect-src
        "app_server_name": host.name,
        "nginx_real_ip_sources": sorted({*addresses("load_balancers"), *n.nginx_real_ip_from}),
    }


@deploy("App server")
def app() -> None:
    r, a, n = settings(ReleaseSettings), settings(AppSettings), settings(NginxSettings)

    # -- runtime -----------------------------------------------------------------------------
    nodejs(settings(NodejsSettings))
    apt.packages(name="Install nginx", packages=["nginx"], no_recommends=True)

    # -- the app's user, directories and environment ------------------------------------------
    app_user_and_directories(r)
    storage = _storage.endpoint()
    uploads = uploads_vars(a, r, storage)
    signing: list[OperationMeta] = []
    if uploads["app_cloudfront_private_key_file"]:
        signing.append(cloudfront_signing_key(r))
    env = shared_environment(r, uploads)
    # systemd holds maha-web's port: connections wait across a restart instead of failing.
    socket = unit(
        "Unit maha-web.socket (the web server's port, held across restarts)",
        "app/maha-web.socket.j2",
        "/etc/systemd/system/maha-web.socket",
        reload_name="Reload systemd for maha-web.socket",
        **a.model_dump(),
    )
    # A socket listens where its unit said when it started: a new address needs it stopped
    # (the web server with it); the restart below starts both.
    systemd.service(
        name="Stop maha-web.socket for its new address",
        service="maha-web.socket",
        running=False,
        _if=socket.did_change,
    )
    web = unit(
        "Unit maha-web",
        "app/maha-web.service.j2",
        "/etc/systemd/system/maha-web.service",
        reload_name="Reload systemd for maha-web",
        **r.model_dump(),
        **a.model_dump(),
        app_server_name=host.name,
    )

    # -- the release -------------------------------------------------------------------------
    release_steps(
        r,
        service="maha-web",
        check=f"curl -fsS -o /dev/null --max-time 3 http://127.0.0.1:{a.app_port}{a.app_health_path}",
        retries=a.app_health_retries,
        interval=a.app_health_interval,
        restart_when=[env, socket, web, *signing],
    )
    systemd.service(
        name="Listen on maha-web.socket at boot", service="maha-web.socket", enabled=True
    )

    # -- nginx in front --------------------------------------------------------------------
    conf = validated_template(
        name="nginx: proxy, WebSockets, static files (checked by nginx -t)",
        src="app/nginx.conf.j2",
        dest="/etc/nginx/nginx.conf",
        validate="/usr/sbin/nginx -t -q -c %s",
        mode="644",
        **nginx_vars(a, n, r, uploads_origin(storage) if uploads["app_uploads_bucket"] else ""),
    )
    systemd.service(name="Run nginx", service="nginx", running=True, enabled=True)
    reloaded("Reload nginx for the new configuration", "nginx", when=[conf])
