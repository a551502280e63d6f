"""The storage role's endpoint and credentials, as its clients (the app servers) and the
storage hosts themselves see them: one place, so both sides agree.

Locally the S3 API is the storage host's (``deploys/storage.py``), reached by app servers
at its private address and by browsers at its port published on 127.0.0.1; the access key
is generated once per environment and kept in the secrets store. On AWS there is no storage
host: the app uses S3's own endpoint and the instance role's credentials (all "" here).
"""

from __future__ import annotations

import secrets as _random
import string
from dataclasses import dataclass

from pyinfra import host, inventory
from pyinfra.api.exceptions import NoGroupError

from mahaops import masking
from mahaops.context import settings
from mahaops.secrets import secret
from mahaops.settings.storage import StorageClientSettings

GROUP = "storage_servers"
ACCESS_KEY_ID = "storage_access_key_id"  # secret names in the environment's store
SECRET_ACCESS_KEY = "storage_secret_access_key"


def _access_key_id() -> str:
    # AWS's shape (AKIA + 16 of A-Z 2-7): S3 clients and moto parse it as such.
    alphabet = string.ascii_uppercase + "234567"
    return "AKIA" + "".join(_random.choice(alphabet) for _ in range(16))


def _secret_access_key() -> str:
    alphabet = string.ascii_letters + string.digits + "+/"
    return "".join(_random.choice(alphabet) for _ in range(40))


@dataclass(frozen=True)
class StorageEndpoint:
    internal: str  # what app servers connect to ("" = S3's own)
    public: str  # what presigned URLs name ("" = S3's own)
    region: str
    bucket: str
    access_key_id: str  # "" = the instance role's credentials (AWS)
    secret_access_key: str  # masked in every output


def credentials() -> tuple[str, str]:
    """The environment's storage access key (id, secret): made on first use, then kept."""
    key_id = secret(ACCESS_KEY_ID, _access_key_id)
    key = masking.register(secret(SECRET_ACCESS_KEY, _secret_access_key))
    return key_id, key


def endpoint() -> StorageEndpoint:
    """The S3 endpoint the current host's app uses: the first storage host of the inventory,
    else the sim's S3 in the AWS stand-in, else S3 itself."""
    s = settings(StorageClientSettings)
    sim = host.data.get("sim_s3")
    if sim:  # the AWS stand-in's S3 (mahaops/aws/inventory.py): plain HTTP, dummy keys
        return StorageEndpoint(
            sim["internal"], sim["public"], s.storage_region, s.storage_uploads_bucket,
            sim["access_key_id"], sim["secret_access_key"],
        )  # fmt: skip
    try:
        hosts = sorted(inventory.get_group(GROUP), key=lambda h: h.name)
    except NoGroupError:
        hosts = []
    if not hosts:
        return StorageEndpoint(
            "", s.storage_public_endpoint, s.storage_region, s.storage_uploads_bucket, "", ""
        )
    first = hosts[0]
    port = int(first.data.get("storage_port") or s.storage_port)
    internal = f"https://{first.data.get('private_address')}:{port}"
    public = s.storage_public_endpoint
    if not public:
        published = dict(first.data.get("published_ports") or {})
        host_port = published.get(port) or published.get(str(port))
        public = f"https://127.0.0.1:{host_port}" if host_port else internal
    key_id, key = credentials()
    return StorageEndpoint(
        internal, public, s.storage_region, s.storage_uploads_bucket, key_id, key
    )
