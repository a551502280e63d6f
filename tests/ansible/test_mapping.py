"""The exporter's mapping rules, on recorded calls made by hand (no hosts needed)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mahaops.ansible_export.model import Call, ExportError, Host
from mahaops.ansible_export.modules import to_tasks
from mahaops.ansible_export.project import (
    Recording,
    SecretSource,
    build,
    build_role,
    dump,
    layout_settings,
)
from mahaops.roles import BASE
from mahaops.settings import GroupData

HOSTS = {
    name: Host(name, ("local",), {"ansible_host": "127.0.0.1"}, {"private_address": address})
    for name, address in (("base-1", "10.9.0.2"), ("base-2", "10.9.0.3"))
}


def call(operation: str, name: str, host: str = "base-1", op_hash: str = "h1", **kw: Any) -> Call:
    guards = tuple(kw.pop("guards", ()))
    defaults = kw.pop("defaults", {})
    return Call(
        host=host,
        role="base",
        op_hash=op_hash,
        operation=operation,
        name=name,
        location="deploys/base.py:42",
        arguments=kw,
        defaults=defaults,
        guards=guards,
    )


def role_of(calls: list[Call]) -> Any:
    settings = layout_settings(GroupData(), [BASE])
    return build_role("base", calls, HOSTS, settings, {}, {})


def test_an_operation_without_mapping_fails_naming_it_and_its_deploy_line() -> None:
    with pytest.raises(ExportError) as error:
        to_tasks(call("server.mount", "Mount the data disk", path="/data"))
    assert "server.mount 'Mount the data disk' at deploys/base.py:42" in str(error.value)


def test_an_argument_without_mapping_fails_rather_than_being_dropped() -> None:
    with pytest.raises(ExportError, match="password='x' has no Ansible mapping"):
        to_tasks(call("server.group", "A group", group="g", present=True, password="x"))


def test_an_ungated_command_fails_the_export_instead_of_falling_back_to_shell() -> None:
    out = role_of([call("server.shell", "Run it", commands=["sysctl --system"])])
    assert len(out.errors) == 1 and "runs on every converge" in out.errors[0]


def test_a_restart_gated_on_a_change_becomes_a_handler_notified_by_that_task() -> None:
    conf = call(
        "files.directory",
        "Make a directory",
        op_hash="conf",
        path="/etc/x",
        present=True,
        user=None,
        group=None,
        mode="750",
        recursive=False,
    )
    restart = call(
        "systemd.service",
        "Restart x",
        op_hash="restart",
        guards=["conf"],
        service="x",
        running=True,
        restarted=True,
        reloaded=False,
        enabled=None,
        daemon_reload=False,
    )
    out = role_of([conf, restart])
    assert out.errors == []
    assert out.tasks == [
        {
            "name": "Make a directory",
            "ansible.builtin.file": {"path": "/etc/x", "state": "directory", "mode": "0750"},
            "notify": ["Restart x"],
        }
    ]
    assert out.handlers == [
        {
            "name": "Restart x",
            "ansible.builtin.systemd_service": {"name": "x", "state": "restarted"},
        }
    ]


def test_a_gated_command_becomes_a_handler_that_reports_its_change() -> None:
    conf = call("files.file", "A file", op_hash="conf", path="/etc/x", present=False)
    apply = call(
        "server.shell", "Apply", op_hash="apply", guards=["conf"], commands=["sysctl --system"]
    )
    out = role_of([conf, apply])
    assert out.handlers == [
        {
            "name": "Apply",
            "ansible.builtin.command": {"argv": ["sysctl", "--system"]},
            "changed_when": True,
        }
    ]


def test_a_call_made_on_some_hosts_only_is_limited_to_them() -> None:
    group = dict(group="g", present=True, system=False, gid=None)
    out = role_of(
        [
            call("server.group", "A group", host="base-1", op_hash="a", **group),
            call("server.group", "A group", host="base-2", op_hash="a", **group),
            call(
                "server.user", "Remove bob", host="base-2", op_hash="b", user="bob", present=False
            ),
        ]
    )
    assert "when" not in out.tasks[0]
    assert out.tasks[1]["when"] == "inventory_hostname in ['base-2']"


def test_the_host_name_becomes_inventory_hostname() -> None:
    out = role_of(
        [
            call("server.hostname", "Set the hostname", host=h, hostname=h)
            for h in ("base-1", "base-2")
        ]
    )
    assert out.tasks == [
        {
            "name": "Set the hostname",
            "ansible.builtin.hostname": {"name": "{{ inventory_hostname }}"},
        }
    ]


def _recording(kind: str, secret: str) -> Recording:
    sudoers = call(
        "operations.files.validated_template",
        "Allow sudo",
        src="base/sudoers.j2",
        dest="/etc/sudoers.d/90-maha",
        validate="visudo -cf %s",
        user="root",
        group="root",
        mode="440",
        data={"base_sudo_users": [secret]},
    )
    return Recording(
        env="t1",
        kind=kind,
        roles=["base"],
        hosts=[HOSTS["base-1"]],
        calls=[sudoers],
        secrets={"db_password": secret},
        group_data=GroupData(),
        secret_source=SecretSource(kind, "t1", "/home/op/.local/share/maha/t1/secrets.json"),
    )


@pytest.mark.parametrize(
    ("kind", "lookup"),
    [
        ("local", "lookup('ansible.builtin.file', '/home/op/.local/share/maha/t1/secrets.json')"),
        ("aws", "lookup('amazon.aws.aws_ssm', '/maha/t1/db_password', decrypt=true)"),
    ],
)
def test_secrets_are_written_as_lookups_never_in_plain_text(kind: str, lookup: str) -> None:
    secret = "s3cr3t-Value-Nobody-Sees"
    files = build(_recording(kind, secret), lambda _name: None)
    assert not any(secret.encode() in content for content in files.values())
    all_vars = yaml.safe_load(files["group_vars/all.yml"])
    assert lookup in all_vars["maha_secret_db_password"]
    host_vars = yaml.safe_load(files["host_vars/base-1.yml"])
    assert host_vars["base_sudo_users"] == ["{{ maha_secret_db_password }}"]


def test_values_holding_jinja_markers_are_kept_literal() -> None:
    out = role_of(
        [
            call(
                "files.line",
                "A line",
                path="/etc/x",
                line="{{ not a var }}",
                present=True,
                replace=None,
                escape_regex_characters=False,
            )
        ]
    )
    assert "!unsafe '^.*{{ not a var }}.*$'" in dump(out.tasks)
