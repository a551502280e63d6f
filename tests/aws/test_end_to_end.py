"""As an operator: `invoke provision` twice against a local moto server, then `invoke teardown`.

The server listens on 127.0.0.1 only; the CLI runs as a subprocess with fake
credentials, ``AWS_ENDPOINT_URL`` pointing at it, and ``MAHA_AWS_CALL_LOG``
counting every AWS operation it makes. The environment is the repository's
own ``staging`` from group_data/aws.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from mahaops import PROJECT_ROOT
from mahaops.aws.session import is_mutating

from .conftest import FAKE_AWS_ENV, tagged

INVOKE = Path(sys.executable).parent / "invoke"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def moto_server() -> Iterator[str]:
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def operator_env(tmp_path: Path, moto_server: str) -> dict[str, str]:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),  # group_data/aws.py's staging reads ~/.ssh/id_ed25519.pub
        "MAHA_HOME": str(tmp_path / "maha-home"),
        "MAHA_AWS_CALL_LOG": str(tmp_path / "calls.log"),
        "AWS_ENDPOINT_URL": moto_server,
        "NO_PROXY": "127.0.0.1",
        **FAKE_AWS_ENV,
    }


def _invoke(
    env: dict[str, str], *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(INVOKE), *args], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check and done.returncode != 0:
        raise AssertionError(
            f"invoke {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def _calls(env: dict[str, str]) -> list[str]:
    path = Path(env["MAHA_AWS_CALL_LOG"])
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def test_provision_twice_then_teardown_as_an_operator(
    operator_env: dict[str, str], moto_server: str, monkeypatch: pytest.MonkeyPatch
):
    dry = _invoke(operator_env, "provision", "--env", "staging", "--dry")
    assert "create" in dry.stdout and "maha-staging-vpc" in dry.stdout
    assert [c for c in _calls(operator_env) if is_mutating(c.split()[1])] == []

    _invoke(operator_env, "provision", "--env", "staging")
    first = _calls(operator_env)
    assert any(c == "ec2 RunInstances" for c in first)

    second = _invoke(operator_env, "provision", "--env", "staging")
    calls = _calls(operator_env)
    assert calls, "the second run looked everything up"
    assert [c for c in calls if is_mutating(c.split()[1])] == []
    assert "create" not in second.stdout and "update" not in second.stdout

    aws = boto3.Session(region_name="eu-west-1")
    ec2 = aws.client("ec2", endpoint_url=moto_server)
    running = ec2.describe_instances(
        Filters=[
            {"Name": "tag:Environment", "Values": ["staging"]},
            {"Name": "instance-state-name", "Values": ["running"]},
        ]
    )["Reservations"]
    roles = sorted(
        t["Value"] for r in running for i in r["Instances"] for t in i["Tags"] if t["Key"] == "Role"
    )
    assert roles == ["app", "cache", "db", "log", "worker"]
    elb = aws.client("elbv2", endpoint_url=moto_server)
    assert elb.describe_load_balancers(Names=["maha-staging"])["LoadBalancers"]

    refused = _invoke(operator_env, "teardown", "--env", "production", "--yes", check=False)
    assert refused.returncode != 0 and "teardown refused" in refused.stderr + refused.stdout

    _invoke(operator_env, "teardown", "--env", "staging", "--yes")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)  # every client tagged() makes
    assert tagged(boto3.Session(region_name="eu-west-1"), "staging") == []
