"""Imports every settings module so each registers its models with its groups."""

from mahaops.settings import base  # noqa: F401
