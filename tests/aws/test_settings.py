"""The environment description rejects bad input before any AWS call, naming the setting."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mahaops.aws.config import load_environment
from mahaops.settings import PROJECT_ROOT, SettingsError

from .conftest import Calls, WriteGroupData, environment


def _rejected(provision_qa: Callable[..., Any], calls: Calls, **qa: Any) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        provision_qa(**qa)
    assert calls.all() == [], "a bad description must fail before any AWS call"
    return caught.value


def test_unknown_instance_type_is_named_before_any_call(provision_qa, calls):
    error = _rejected(
        provision_qa, calls, roles={"app": {"count": 1, "instance_type": "t3.mediun"}}
    )
    assert error.key == "aws_environments"
    assert "unknown EC2 instance type 't3.mediun'" in error.message
    assert "did you mean 't3.medium'" in error.message
    assert "qa.roles.app.instance_type" in error.message


def test_malformed_admin_cidr_is_named_before_any_call(provision_qa, calls):
    error = _rejected(provision_qa, calls, admin_cidrs=["203.0.113.0/33"])
    assert "not a CIDR network" in error.message
    assert "qa.admin_cidrs.0" in error.message


def test_missing_region_is_named_before_any_call(
    provision_qa, calls, write_group_data: WriteGroupData, ssh_public_key: Path
):
    described = environment(ssh_public_key)
    del described["region"]
    directory = write_group_data({"qa": described})
    error = _rejected(provision_qa, calls, group_data=directory)
    assert str(error).startswith("group_data/aws.py: aws_environments:") or "aws.py" in error.source
    assert "Field required" in error.message and "qa.region" in error.message


def test_app_count_below_one_is_refused_before_any_call(provision_qa, calls):
    error = _rejected(provision_qa, calls, roles={"app": {"count": 0}})
    assert "roles.app.count must be at least 1" in error.message


def test_optional_roles_may_be_left_out(write_group_data: WriteGroupData):
    spec = load_environment("qa", write_group_data(roles={"worker": {"count": 0}})).spec
    assert spec.role("worker").count == 0
    assert spec.role("db").instance_type == "t3.medium"  # unlisted keys keep the role defaults


def test_unknown_environment_names_the_described_ones(write_group_data: WriteGroupData):
    with pytest.raises(SettingsError, match=r"no environment 'prod' \(described: qa\)"):
        load_environment("prod", write_group_data())


def test_missing_ssh_public_key_file_is_named_before_any_call(provision_qa, calls, tmp_path):
    error = _rejected(provision_qa, calls, ssh_public_key=str(tmp_path / "nope.pub"))
    assert "qa.ssh_public_key: no file" in error.message


def test_certificate_without_its_domain_is_refused(provision_qa, calls):
    arn = "arn:aws:acm:eu-west-1:111122223333:certificate/00000000-0000-0000-0000-000000000000"
    error = _rejected(provision_qa, calls, certificate_arn=arn)
    assert "certificate_arn" in error.message and "domain" in error.message


def test_example_group_data_describes_a_protected_production():
    staging = load_environment("staging", PROJECT_ROOT / "group_data")
    production = load_environment("production", PROJECT_ROOT / "group_data")
    assert not staging.spec.protected and production.spec.protected
    assert production.spec.certificate_arn and production.spec.access == "ssm"


def test_private_hosts_without_a_nat_gateway_are_refused_before_any_call(provision_qa, calls):
    error = _rejected(
        provision_qa, calls, access="bastion", bastion="admin@b.example.org", nat_gateway=False
    )
    assert "nat_gateway" in error.message and "no route out" in error.message


def test_an_environment_s_settings_are_checked_like_group_data_before_any_call(provision_qa, calls):
    error = _rejected(provision_qa, calls, settings={"nodejs_majr": 18})
    assert "qa.settings" in error.message and "settings.nodejs_majr" in error.message
    assert "did you mean 'nodejs_major'" in error.message
    error = _rejected(provision_qa, calls, settings={"nodejs_major": "eighteen"})
    assert "settings.nodejs_major" in error.message


@pytest.mark.parametrize("task", ["provision", "teardown"])
def test_the_task_s_help_is_help_and_a_missing_env_is_named(task: str) -> None:
    """``invoke provision --help`` once ran provision for an environment named "--help"
    (invoke hands a required argument whatever follows the task: pyinvoke/invoke#982)."""
    import subprocess
    import sys

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "invoke", task, *args],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    helped = invoke("--help")
    assert helped.returncode == 0 and f"{task} [--options]" in helped.stdout, helped
    assert "-e STRING, --env=STRING" in helped.stdout, helped.stdout
    bare = invoke()
    assert bare.returncode == 2, bare
    assert "--env NAME is required" in bare.stderr + bare.stdout, bare
