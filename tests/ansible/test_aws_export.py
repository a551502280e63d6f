"""An AWS environment's export (issue 12): secrets from SSM under the environment's own
path, region and profile; a release's static assets published by a play before any host
switches; a host still on its first contact refused with what to do. Exports from
recordings (no host); tests/sim runs one against the stand-in's hosts."""

from __future__ import annotations

import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mahaops.ansible_export.model import ExportError
from mahaops.ansible_export.modules import to_tasks
from mahaops.ansible_export.playbook import ansible_env, tool
from mahaops.ansible_export.project import Recording, SecretSource, StaticAssets, build
from tests.ansible.test_mapping import _recording as mapping_recording
from tests.ansible.test_mapping import call


def _recording(assets: StaticAssets | None = None) -> Recording:
    """test_mapping's recording of one templated sudoers file holding a secret, as an AWS
    environment's."""
    source = SecretSource(
        "aws", "staging", ssm_path="/acme/staging", region="eu-west-1", profile="ops"
    )
    recorded = mapping_recording("aws", "s3cr3t-Value-Nobody-Sees")
    return replace(recorded, env="staging", secret_source=source, static_assets=assets)


def test_secrets_are_read_from_the_environments_ssm_path_with_its_region_and_profile() -> None:
    files = build(_recording(), lambda _name: None)
    all_vars = yaml.safe_load(files["group_vars/all.yml"])
    assert all_vars["maha_secret_db_password"] == (
        "{{ lookup('amazon.aws.aws_ssm', '/acme/staging/db_password', decrypt=true, "
        "region='eu-west-1', profile='ops') }}"
    )
    assert not any(b"s3cr3t-Value-Nobody-Sees" in content for content in files.values())


def test_a_releases_assets_are_published_first_by_site_and_release(tmp_path: Path) -> None:
    assets = StaticAssets(
        "acme-staging-static-123456789012",
        "eu-west-1",
        "ops",
        {"app.0123456789ab.css": b"body{}", "app.ba9876543210.js": b"1;"},
    )
    files = build(_recording(assets), lambda _name: None)
    first = yaml.safe_load(files["site.yml"])[0]
    assert first["hosts"] == "localhost"
    (task,) = first["tasks"]
    put = task["amazon.aws.s3_object"]
    assert (put["bucket"], put["mode"], put["overwrite"]) == (assets.bucket, "put", "never")
    assert put["metadata"]["Cache-Control"] == "public, max-age=31536000, immutable"
    assert [(i["name"], i["type"]) for i in task["loop"]] == [
        ("app.0123456789ab.css", "text/css; charset=utf-8"),
        ("app.ba9876543210.js", "text/javascript; charset=utf-8"),
    ]
    assert files["files/static/app.0123456789ab.css"] == b"body{}"
    requirements = yaml.safe_load(files["requirements.yml"])["collections"]
    assert "amazon.aws" in {r["name"] for r in requirements}
    for path, content in files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_bytes(content)
    checked = subprocess.run(
        [tool("ansible-playbook"), "--syntax-check", "site.yml"],
        cwd=tmp_path, env=ansible_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_host_on_its_first_contact_is_refused_with_what_to_do() -> None:
    from mahaops.aws.inventory import record_handover

    handover = call(
        "python.call",
        "Hand the instance over to maha (EC2 tag)",
        function=record_handover,
        env="staging",
        instance_id="i-0abc",
        user="maha",
    )
    with pytest.raises(ExportError, match="base-1 is not handed over to the deploy user yet"):
        to_tasks(handover)


def test_ssh_stays_open_where_the_environment_leaves_admin_cidrs_to_the_default() -> None:
    # The AWS environments do not set base_admin_cidrs (the security group guards SSH): the
    # deploy opens SSH to any address, and so must the exported firewall (it once dropped
    # the rule, and the export refused the mismatch).
    from mahaops.ansible_export.model import Host
    from mahaops.ansible_export.peers import firewall_inputs

    host = Host("maha-sim-app-1", ("aws", "app_servers"), {}, {"private_address": "10.0.0.9"})
    inputs = firewall_inputs(host, {})
    assert inputs["base_firewall_admin_networks"] == ["0.0.0.0/0", "::/0"]
    ssh = [o for o in inputs["base_firewall_openings"] if o["port"] == 22]
    assert ssh and ssh[0]["sources"] == ["admins"]


def test_an_aws_hosts_connection_keeps_pyinfras_host_keys_and_policy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyinfra (paramiko) reads and adds host keys in $HOME's known_hosts, accepting a new
    # host's key; OpenSSH would read the passwd entry's home and ask (and fail) instead. The
    # sim's tests run with another $HOME: Ansible found no key and refused every host.
    from mahaops.ansible_export.record import to_host
    from mahaops.hosts import HostSpec

    monkeypatch.setenv("HOME", str(tmp_path))
    spec = HostSpec(
        "maha-sim-app-1",
        ("aws", "app_servers"),
        {"ssh_hostname": "54.214.0.9", "ssh_user": "maha", "private_address": "10.0.0.9"},
    )
    args = to_host(spec).connection["ansible_ssh_common_args"].split(" -o ")
    assert f"UserKnownHostsFile={tmp_path}/.ssh/known_hosts" in " ".join(args)
    assert "StrictHostKeyChecking=accept-new" in " ".join(args)
