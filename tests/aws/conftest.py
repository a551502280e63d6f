"""Fixtures for AWS provisioning tests: moto only, fake credentials, no route to real AWS.

Every test runs with fake credentials, no profile or config file, and a socket
guard that refuses connections to anything but 127.0.0.1 (the moto server of
the end-to-end tests); unit tests use moto in-process and open no socket.
moto is given Debian 12 images through ``MOTO_AMIS_PATH`` (set before moto is
imported) and the shims for gaps in moto 5.2 (see ``mahaops.sim.daemon.moto_shims``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# The sim stand-in's own: the same Debian 12 images and the same shims for moto's gaps.
from mahaops.sim.daemon import AMIS, moto_shims

os.environ["MOTO_AMIS_PATH"] = str(AMIS)  # read when moto.ec2 is imported
os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"

import boto3
from moto import mock_aws

REGION = "eu-west-1"
DEBIAN_NEWEST = "ami-0d3b12a2f3c4e5d60"
FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": "/nonexistent/aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
    "AWS_EC2_METADATA_DISABLED": "true",
}
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


moto_shims()


@pytest.fixture(autouse=True)
def _only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach real AWS, or anything but the local moto server."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOOPBACK:
            raise ConnectionRefusedError(f"tests/aws: network access to {address!r} refused")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(autouse=True)
def fake_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(key, raising=False)
    for key in list(os.environ):
        if key.startswith("AWS_ENDPOINT_URL_"):
            monkeypatch.delenv(key)
    for key, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MAHA_HOME", str(tmp_path / "maha-home"))
    monkeypatch.delenv("MAHA_AWS_CALL_LOG", raising=False)
    return dict(FAKE_AWS_ENV)


@pytest.fixture
def aws() -> Iterator[boto3.Session]:
    """An in-process moto account; the session is what provisioning would make."""
    with mock_aws():
        yield boto3.Session(region_name=REGION)


@pytest.fixture(scope="session")
def ssh_public_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("ssh")
    key = directory / "id_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "maha-test", "-f", str(key)],
        check=True,
    )
    return key.with_suffix(".pub")


def environment(public_key: Path, /, **overrides: Any) -> dict[str, Any]:
    """A small, valid environment description; ``overrides`` replace top-level keys."""
    description: dict[str, Any] = {
        "region": REGION,
        "availability_zones": [f"{REGION}a", f"{REGION}b"],
        "admin_cidrs": ["203.0.113.0/24"],
        "ssh_public_key": str(public_key),
        "ssh_private_key": str(public_key.with_suffix("")),
        "roles": {
            "app": {"count": 2},
            "db": {"count": 1},
            "cache": {"count": 1},
            "log": {"count": 1},
            "worker": {"count": 1},
        },
    }
    description.update(overrides)
    return description


WriteGroupData = Callable[..., Path]


@pytest.fixture
def write_group_data(tmp_path: Path, ssh_public_key: Path) -> WriteGroupData:
    """Write a group_data/aws.py describing ``environments`` (default: "qa" only)."""

    def write(environments: dict[str, dict[str, Any]] | None = None, **qa: Any) -> Path:
        directory = tmp_path / "group_data"
        directory.mkdir(exist_ok=True)
        described = environments or {"qa": environment(ssh_public_key, **qa)}
        text = f"aws_environments = {json.dumps(described, indent=4)}\n"
        text = (
            text.replace(": true", ": True")
            .replace(": false", ": False")
            .replace(": null", ": None")
        )
        (directory / "aws.py").write_text(textwrap.dedent(text))
        return directory

    return write


# -- running provisioning in-process ---------------------------------------------------------


class Calls:
    """AWS operations made while provisioning, read from ``MAHA_AWS_CALL_LOG``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[str]:
        if not self.path.exists():
            return []
        return self.path.read_text().split("\n")[:-1]

    def mutating(self) -> list[str]:
        from mahaops.aws.session import is_mutating

        return [c for c in self.all() if is_mutating(c.split()[1])]

    def reset(self) -> None:
        self.path.unlink(missing_ok=True)


@pytest.fixture
def calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Calls:
    path = tmp_path / "aws-calls.log"
    monkeypatch.setenv("MAHA_AWS_CALL_LOG", str(path))
    return Calls(path)


@pytest.fixture
def provision_qa(aws: boto3.Session, write_group_data: WriteGroupData) -> Callable[..., Any]:
    """Provision "qa" (settings overrides as keywords); a dry run gets its own session."""
    import io

    from rich.console import Console

    from mahaops.aws.provision import provision

    def run(*, dry: bool = False, group_data: Path | None = None, **qa: Any) -> Any:
        directory = group_data or write_group_data(**qa)
        session = boto3.Session(region_name=REGION) if dry else aws
        quiet = Console(file=io.StringIO())
        return provision("qa", dry=dry, session=session, group_data=directory, console=quiet)

    return run


def tagged(session: boto3.Session, env: str) -> list[str]:
    """ARNs of live resources tagged for ``env`` (terminated instances and deleted NATs aside)."""
    client = session.client("resourcegroupstaggingapi")
    mappings = client.get_resources(TagFilters=[{"Key": "Environment", "Values": [env]}])
    arns = [m["ResourceARN"] for m in mappings["ResourceTagMappingList"]]
    ec2 = session.client("ec2")
    live = []
    for arn in arns:
        kind, _, ident = arn.split(":")[-1].partition("/")
        if kind == "instance":
            state = ec2.describe_instances(InstanceIds=[ident])["Reservations"][0]["Instances"][0]
            if state["State"]["Name"] in ("terminated", "shutting-down"):
                continue
        if kind == "natgateway":
            nat = ec2.describe_nat_gateways(NatGatewayIds=[ident])["NatGateways"][0]
            if nat["State"] in ("deleted", "deleting"):
                continue
        live.append(arn)
    return live
