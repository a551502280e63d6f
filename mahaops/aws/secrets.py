"""Secrets of an AWS environment: SSM Parameter Store SecureStrings under
``/<platform>/<env>/`` (``platform_name``, ``maha`` by default).

Satisfies :class:`mahaops.secrets.SecretStore`; every value read or written is
registered with :mod:`mahaops.masking`, so no output shows it. Parameters are
tagged like everything else, so ``invoke teardown`` finds them.
"""

from __future__ import annotations

import re
from typing import Any

from botocore.exceptions import ClientError

from mahaops import masking

_NAME = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


class SsmSecretStore:
    """Secrets of one environment as SSM SecureString parameters ``/<platform>/<env>/<name>``."""

    def __init__(self, env: str, client: Any = None, project: str | None = None) -> None:
        self.env = env
        self._client = client
        self._project = project

    @property
    def project(self) -> str:
        """The platform name (Project tag, first path part), from group_data when not given."""
        if self._project is None:
            from mahaops.aws.config import load_environment

            self._project = load_environment(self.env).project
        return self._project

    @property
    def client(self) -> Any:
        if self._client is None:  # the environment's own region and profile, made on first use
            from mahaops.aws.config import load_environment
            from mahaops.aws.session import CLIENT_CONFIG, make_session

            spec = load_environment(self.env).spec
            self._client = make_session(spec.region, spec.profile).client(
                "ssm", config=CLIENT_CONFIG
            )
        return self._client

    def path(self, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"bad secret name {name!r}: lower-case letters, digits and _")
        return f"/{self.project}/{self.env}/{name}"

    def get(self, name: str) -> str | None:
        try:
            response = self.client.get_parameter(Name=self.path(name), WithDecryption=True)
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ParameterNotFound":
                return None
            raise
        value = str(response["Parameter"]["Value"])
        return masking.register(value)

    def put(self, name: str, value: str) -> None:
        masking.register(value)
        path = self.path(name)
        tags = {"Project": self.project, "Environment": self.env, "Role": "secrets", "Name": path}
        try:  # SSM takes tags only on creation, and never together with Overwrite
            self.client.put_parameter(
                Name=path,
                Value=value,
                Type="SecureString",
                Tier="Advanced" if len(value) > 4096 else "Standard",
                Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ParameterAlreadyExists":
                raise
            self.client.put_parameter(Name=path, Value=value, Type="SecureString", Overwrite=True)

    def names(self) -> list[str]:
        """Full parameter names of this environment's secrets."""
        pages = self.client.get_paginator("get_parameters_by_path").paginate(
            Path=f"/{self.project}/{self.env}/", Recursive=True
        )
        return [p["Name"] for page in pages for p in page["Parameters"]]
