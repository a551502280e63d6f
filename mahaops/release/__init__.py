"""Releases: the app and its production dependencies as one tarball, and how one goes out.

- ``tarball``: the reproducible build of app/ (``Release``, ``verify``).
- ``cache``: builds remembered by content, and which release a run deploys
  (``current_build``, ``chosen``, ``for_run``).
- ``assets``: content-hashed names for public/, published to the CDN's bucket on AWS.
- ``rollout``: the rolling deploy to app servers then workers, and the rollback.

What a host does with a release is the project operations in ``operations/release.py``.
"""

from mahaops.release.cache import build, chosen, current_build, for_run, source_digest
from mahaops.release.rollout import RELEASE_ROLES, RollbackError, deploy, fleet, rollback
from mahaops.release.tarball import (
    APP_DIR,
    DEFAULT_OUT_DIR,
    Release,
    ReleaseError,
    checksum_path,
    verify,
)

__all__ = [
    "APP_DIR",
    "DEFAULT_OUT_DIR",
    "RELEASE_ROLES",
    "Release",
    "ReleaseError",
    "RollbackError",
    "build",
    "checksum_path",
    "chosen",
    "current_build",
    "deploy",
    "fleet",
    "for_run",
    "rollback",
    "source_digest",
    "verify",
]
