"""Imports every settings module so each registers its models with its groups."""

from mahaops.settings import base  # noqa: F401
from mahaops.settings import aws  # noqa: F401
from mahaops.settings import db  # noqa: F401
from mahaops.settings import cache  # noqa: F401
from mahaops.settings import log  # noqa: F401
from mahaops.settings import app  # noqa: F401
from mahaops.settings import worker  # noqa: F401
from mahaops.settings import lb  # noqa: F401
