"""Storage role: the S3 API the app presigns uploads and downloads for, on the local platform
and in tests, where no S3 is reachable (on AWS the app uses S3 itself).

It is moto's S3, run by a program of ours (``maha-s3``, ``maha-s3.service``, its own user,
sandboxed) over TLS with a certificate from the environment's CA, behind a SigV4 check that
moto does not make: only requests signed with the environment's access key
(``deploys/_storage.py``), unexpired and untampered, reach it. Each object written is kept
on disk before the answer and loaded at start (moto itself keeps nothing).

Hosts cannot reach PyPI: moto and its dependencies come as a wheelhouse built on the
operator's machine (``mahaops/wheelhouse.py``), put as one tarball and installed into a
virtualenv only when that tarball changed.
"""

from __future__ import annotations

from typing import Any

from pyinfra import inventory
from pyinfra.api import deploy
from pyinfra.api.exceptions import NoGroupError
from pyinfra.operations import files, server, systemd

from deploys._common import restart, template, unit
from deploys._storage import credentials
from deploys._tls import server_certificate, server_names
from mahaops import wheelhouse
from mahaops.context import settings
from mahaops.settings.storage import StorageClientSettings, StorageServerSettings
from operations import apt

SERVICE = "maha-s3"
USER = "maha-s3"
ROOT = "/opt/maha-s3"  # the wheelhouse and the virtualenv (root's: the service cannot change them)
WHEELHOUSE = f"{ROOT}/wheelhouse.tar"
VENV = f"{ROOT}/venv"
CONFIG_DIR = "/etc/maha-storage"
CONFIG = f"{CONFIG_DIR}/maha-s3.json"
CREDENTIALS = f"{CONFIG_DIR}/credentials.json"  # the access key: root's, read by the service
TLS_DIR = f"{CONFIG_DIR}/tls"
DATA_DIR = "/var/lib/maha-storage"  # the unit's StateDirectory; a data volume locally


def lb_origins() -> list[str]:
    """The load balancers' HTTPS origins as browsers on this machine see them (their port
    published on 127.0.0.1): the app's pages presign for them."""
    try:
        members = inventory.get_group("load_balancers")
    except NoGroupError:
        return []
    origins: list[str] = []
    for lb in sorted(members, key=lambda h: h.name):
        port = int(lb.data.get("lb_https_port") or 443)
        published = dict(lb.data.get("published_ports") or {})
        host_port = published.get(port) or published.get(str(port))
        if host_port:
            origins += [f"https://127.0.0.1:{host_port}", f"https://localhost:{host_port}"]
    return origins


@deploy("Storage")
def storage() -> None:
    s = settings(StorageServerSettings)
    client = settings(StorageClientSettings)
    key_id, secret = credentials()
    origins = list(dict.fromkeys([*lb_origins(), *s.storage_cors_origins]))
    tvars: dict[str, Any] = {
        **s.model_dump(),
        "storage_port": client.storage_port,
        "storage_user": USER,
        "storage_venv": VENV,
        "storage_config_file": CONFIG,
        "storage_credentials_file": CREDENTIALS,
        "storage_data_dir": DATA_DIR,
        "storage_config": {
            "listen": "0.0.0.0",
            "port": client.storage_port,
            "region": client.storage_region,
            "buckets": [client.storage_uploads_bucket],
            "cors_origins": origins,
            "clock_skew_seconds": s.storage_clock_skew_seconds,
            "presign_max_seconds": s.storage_presign_max_seconds,
            "max_object_bytes": s.storage_max_object_bytes,
            "loglevel": s.storage_loglevel,
            "data_dir": f"{DATA_DIR}/buckets",
            "tls_cert": f"{TLS_DIR}/server.crt",
            "tls_key": f"{TLS_DIR}/server.key",
        },
    }
    apt.packages(
        name="Install python3-venv (the server's virtualenv)",
        packages=["python3-venv"],
        update=True,
        cache_time=3600,
        no_recommends=True,
    )
    server.user(
        name=f"Storage user {USER} (no login)",
        user=USER,
        system=True,
        shell="/usr/sbin/nologin",
        home=DATA_DIR,
        ensure_home=False,  # systemd's StateDirectory makes it, the user's, 0750
        create_home=False,
    )

    # -- moto, from the operator's wheelhouse (hosts reach no PyPI) --------------------------
    files.directory(name="Directory of the S3 server's Python", path=ROOT, mode="755")
    wheels = files.put(
        name="Wheelhouse of the S3 server (moto and its dependencies)",
        src=str(wheelhouse.storage_server()),
        dest=WHEELHOUSE,
        mode="644",
    )
    # Only when the wheelhouse changed; a failed install removes it, so the next run puts
    # it again and retries.
    install = server.shell(
        name="Install the S3 server's virtualenv from the wheelhouse",
        commands=[
            f"cd {ROOT} && rm -rf wheels venv && tar -xf {WHEELHOUSE} && python3 -m venv venv"
            " && venv/bin/pip install --quiet --no-index --no-cache-dir"
            " --disable-pip-version-check --require-hashes --find-links wheels"
            " -r wheels/requirements.txt"
            f" && rm -rf wheels || {{ rm -rf {VENV} {ROOT}/wheels {WHEELHOUSE}; exit 1; }}"
        ],
        _if=wheels.did_change,
    )

    # -- configuration, access key, certificate ----------------------------------------------
    files.directory(name="Storage configuration directory", path=CONFIG_DIR, mode="750", group=USER)
    config = template(
        "S3 server settings (maha-s3.json)",
        "storage/maha-s3.json.j2",
        CONFIG,
        mode="640",
        user="root",
        group=USER,
        **tvars,
    )
    keys = template(
        "S3 server access key (the environment's, from the secrets store)",
        "storage/credentials.json.j2",
        CREDENTIALS,
        mode="640",
        user="root",
        group=USER,
        storage_access_key_id=key_id,
        storage_secret_access_key=secret,
    )
    names = [*server_names(), "127.0.0.1", "localhost", *s.storage_tls_names]
    cert, key = server_certificate("maha-s3", TLS_DIR, USER, USER, names=list(dict.fromkeys(names)))

    # -- the server ---------------------------------------------------------------------------
    program = template(
        "maha-s3: the S3 server (moto behind a signature check) and its CLI",
        "storage/maha-s3.py.j2",
        "/usr/local/bin/maha-s3",
        mode="755",
        **tvars,
    )
    service = unit(
        "Unit maha-s3 (sandboxed)",
        "storage/maha-s3.service.j2",
        f"/etc/systemd/system/{SERVICE}.service",
        reload_name="Reload systemd for maha-s3",
        **tvars,
    )
    systemd.service(name="Run the S3 server", service=SERVICE, running=True, enabled=True)
    restart(
        "Restart the S3 server for its new program, settings or certificate",
        SERVICE,
        when=[install, config, keys, cert, key, program, service],
    )
