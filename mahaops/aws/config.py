"""One environment's description, read from group_data and checked before any API call."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mahaops.settings import DEFAULT_GROUP_DATA, GroupData, SettingsError, from_data
from mahaops.settings.aws import AwsEnvironment, AwsSettings
from mahaops.settings.base import BaseSettings

SOURCE = "group_data/aws.py"


@dataclass(frozen=True)
class Environment:
    name: str
    spec: AwsEnvironment
    settings: AwsSettings
    project: str  # the Project tag: platform_name


def load_environment(env: str, group_data: Path = DEFAULT_GROUP_DATA) -> Environment:
    """The checked description of ``env``; a SettingsError names the file and key otherwise."""
    data = GroupData(group_data).merged(["aws"])
    settings = from_data(AwsSettings, data)
    base = from_data(BaseSettings, data)
    spec = settings.aws_environments.get(env)
    if spec is None:
        known = ", ".join(sorted(settings.aws_environments)) or "none"
        raise SettingsError(
            SOURCE, "aws_environments", f"no environment {env!r} (described: {known})"
        )
    return Environment(env, spec, settings, base.platform_name)
