"""Imports every settings module so each registers its models with its groups."""

from mahaops.settings import (
    app,  # noqa: F401
    aws,  # noqa: F401
    base,  # noqa: F401
    cache,  # noqa: F401
    db,  # noqa: F401
    lb,  # noqa: F401
    log,  # noqa: F401
    worker,  # noqa: F401
)
