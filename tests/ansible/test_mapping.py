"""The exporter's mapping rules, on recorded calls made by hand (no hosts needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pyinfra.api.operation import OperationMeta

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
from operations import release

HOSTS = {
    name: Host(name, ("local",), {"ansible_host": "127.0.0.1"}, {"private_address": address})
    for name, address in (("base-1", "10.9.0.2"), ("base-2", "10.9.0.3"))
}


def call(operation: str, name: str, host: str = "base-1", op_hash: str = "h1", **kw: Any) -> Call:
    """A recorded call of ``operation`` whose arguments are ``kw``, but for ``guards``,
    ``triggers``, ``defaults`` and ``options``, which are the call's own."""
    return Call(
        host=host,
        role="base",
        op_hash=op_hash,
        operation=operation,
        name=name,
        location="deploys/base.py:42",
        defaults=kw.pop("defaults", {}),
        options=kw.pop("options", {}),
        guards=tuple(kw.pop("guards", ())),
        triggers=tuple(kw.pop("triggers", ())),
        arguments=kw,
    )


# A systemd.service call's arguments as pyinfra binds them when only the service is named.
SERVICE: dict[str, Any] = {
    "running": True,
    "restarted": False,
    "reloaded": False,
    "enabled": None,
    "daemon_reload": False,
}


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
        **{**SERVICE, "restarted": True},
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
        ("local", "maha_secrets['db_password']"),
        ("aws", "lookup('amazon.aws.aws_ssm', '/maha/t1/db_password', decrypt=true)"),
    ],
)
def test_secrets_are_written_as_lookups_never_in_plain_text(kind: str, lookup: str) -> None:
    secret = "s3cr3t-Value-Nobody-Sees"
    files = build(_recording(kind, secret), lambda _name: None)
    assert not any(secret.encode() in content for content in files.values())
    all_vars = yaml.safe_load(files["group_vars/all.yml"])
    assert lookup in all_vars["maha_secret_db_password"]
    if kind == "local":  # the 0600 file outside the export, read with a lookup
        assert all_vars["maha_secrets_file"] == "/home/op/.local/share/maha/t1/secrets.json"
        assert "lookup('ansible.builtin.file', maha_secrets_file)" in all_vars["maha_secrets"]
    # A derived value every host of the role shares is its group's (base: all).
    assert all_vars["base_sudo_users"] == ["{{ maha_secret_db_password }}"]


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


# -- this project's release operations ------------------------------------------------------


def test_unpack_and_migrate_run_the_operations_own_commands_guarded_by_creates() -> None:
    unpack: dict[str, Any] = {
        "tarball": "/srv/maha/tarballs/maha-r1.tar.gz",
        "release_id": "r1",
        "root": "/srv/maha",
    }
    migrate: dict[str, Any] = {
        "release_id": "r1",
        "user": "maha-app",
        "root": "/srv/maha",
        "command": "node m.js",
    }
    [unpacked] = to_tasks(call("operations.release.unpacked", "Unpack", **unpack))
    [migrated] = to_tasks(call("operations.release.migrated", "Migrate", **migrate))

    assert "tar -xzf /srv/maha/tarballs/maha-r1.tar.gz" in unpacked.args["cmd"]
    assert unpacked.args["cmd"].endswith("/srv/maha/releases/r1.partial /srv/maha/releases/r1")
    assert unpacked.args["creates"] == f"/srv/maha/releases/r1/{release.MARKER}"
    assert "node m.js" in migrated.args["cmd"]
    assert migrated.args["creates"] == f"/srv/maha/releases/r1/{release.MIGRATED}"


def test_the_health_check_runs_the_operations_own_command_and_changes_nothing() -> None:
    check: dict[str, Any] = {
        "check": "curl -fsS http://127.0.0.1:3000/health",
        "services": ["maha-web"],
        "root": "/srv/maha",
        "retries": 5,
        "interval": 0.5,
    }
    restart = OperationMeta("restart", is_change=True)
    [task] = to_tasks(call("operations.release.healthy", "Check", when=[restart], **check))

    # bash with pipefail (ansible-lint's risky-shell-pipe), then the operation's command
    assert task.args["executable"] == "/bin/bash"
    assert task.args["cmd"].startswith(
        "set -o pipefail; i=0; until curl -fsS http://127.0.0.1:3000/health;"
    )
    assert "systemctl restart maha-web" in task.args["cmd"]  # the switch back
    assert task.keywords["changed_when"] is False


def test_pruning_keeps_current_previous_and_the_newest_and_reports_what_it_deleted(
    tmp_path: Path,
) -> None:
    root = tmp_path / "srv"
    for n in range(1, 8):
        (root / "releases" / f"r{n}").mkdir(parents=True)
        (root / "releases" / f"r{n}" / release.MARKER).touch()
        (root / "tarballs").mkdir(exist_ok=True)
        (root / "tarballs" / f"maha-r{n}.tar.gz").touch()
    (root / "releases" / "r9.partial").mkdir()  # incomplete: never a release
    (root / "current").symlink_to("releases/r3")
    (root / "previous").symlink_to("releases/r2")
    [task] = to_tasks(call("operations.release.pruned", "Prune", keep=2, root=str(root)))

    def prune() -> str:
        return subprocess.run(
            [task.args["executable"], "-c", task.args["cmd"]],
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    assert prune().split() == ["pruned", "r1", "pruned", "r4", "pruned", "r5"]
    assert sorted(p.name for p in (root / "releases").iterdir()) == [
        "r2",
        "r3",
        "r6",
        "r7",
        "r9.partial",
    ]
    assert sorted(p.name for p in (root / "tarballs").iterdir()) == [
        "maha-r2.tar.gz",
        "maha-r3.tar.gz",
        "maha-r6.tar.gz",
        "maha-r7.tar.gz",
    ]
    assert prune() == ""  # nothing left to prune: changed_when reads "pruned " in stdout
    assert task.keywords["changed_when"] == "'pruned ' in base_pruned_releases.stdout"


def test_a_release_restart_is_a_handler_notified_by_each_of_its_triggers() -> None:
    unit = call("files.file", "Unit", op_hash="unit", path="/etc/u", present=False)
    link = call("files.file", "Link", op_hash="link", path="/srv/l", present=False)
    restart = call(
        "operations.release.restarted",
        "Restart maha-web",
        op_hash="restart",
        service="maha-web",
        when=[],
        triggers=["unit", "link"],
    )
    out = role_of([unit, link, restart])
    assert [t.get("notify") for t in out.tasks] == [["Restart maha-web"], ["Restart maha-web"]]
    assert out.handlers[0]["ansible.builtin.systemd_service"] == {
        "name": "maha-web",
        "state": "restarted",
    }


def test_a_handler_runs_where_the_deploy_runs_it_even_past_another_handler() -> None:
    def file(op_hash: str, path: str) -> Call:
        return call("files.file", f"File {path}", op_hash=op_hash, path=path, present=False)

    reload = call(
        "systemd.service",
        "Reload web",
        op_hash="reload",
        guards=["unit"],
        service="web",
        **{**SERVICE, "reloaded": True},
    )
    restart = call(
        "operations.release.restarted",
        "Restart web",
        op_hash="restart",
        service="web",
        when=[],
        triggers=["unit", "switch"],
    )
    out = role_of([file("unit", "/u"), reload, file("switch", "/s"), restart, file("next", "/n")])

    assert [t["name"] for t in out.tasks] == [
        "File /u",
        "Apply the changes notified so far",  # the reload, where the deploy has it...
        "File /s",
        "Restart web: due when its inputs changed",  # ...the restart only after the switch
        "Apply the changes notified so far",
        "File /n",
    ]
    assert out.tasks[0]["notify"] == ["Reload web"]  # not the restart: it would run too early
    notifier = out.tasks[3]
    assert notifier["notify"] == ["Restart web"]
    assert notifier["changed_when"] == (
        "(base_changed_0 | default({})) is changed or (base_changed_1 | default({})) is changed"
    )
    assert [out.tasks[0]["register"], out.tasks[2]["register"]] == [
        "base_changed_0",
        "base_changed_1",
    ]


def test_pyinfra_retries_become_ansible_retries_until_success() -> None:
    flaky = call(
        "files.file",
        "Flaky",
        op_hash="abcdef0123",
        path="/x",
        present=False,
        options={"_retries": 10, "_retry_delay": 3},
    )
    [task] = role_of([flaky]).tasks
    assert {k: task[k] for k in ("register", "until", "retries", "delay")} == {
        "register": "base_result_abcdef01",
        "until": "base_result_abcdef01 is succeeded",
        "retries": 10,
        "delay": 3,
    }


def test_a_postgresql_role_installs_the_driver_first_and_never_logs_its_password() -> None:
    role = call(
        "operations.postgresql.role",
        "PostgreSQL user app",
        role="app",
        password="pw-secret",
        login=True,
        connection_limit=-1,
        port=5432,
    )
    out = role_of([role])
    assert out.tasks[0]["ansible.builtin.apt"] == {"name": ["python3-psycopg2"], "state": "present"}
    user = out.tasks[1]
    assert user["community.postgresql.postgresql_user"] == {
        "name": "app",
        "password": "pw-secret",
        "role_attr_flags": "LOGIN",
        "conn_limit": -1,
        "login_port": 5432,
    }
    assert (user["become"], user["become_user"], user["no_log"]) == (True, "postgres", True)


def test_bounded_apt_keeps_its_bound_as_the_task_timeout() -> None:
    """operations.apt: the same bound on Ansible's side; from the host's setting when the
    deploy names none, with the setting's default where a role does not see base's."""
    apt_args: dict[str, Any] = {
        "packages": ["nginx"],
        "present": True,
        "latest": False,
        "update": True,
        "cache_time": 3600,
        "no_recommends": True,
    }
    [given] = to_tasks(call("operations.apt.packages", "Install", timeout=120, **apt_args))
    assert given.module == "ansible.builtin.apt"
    assert given.args["name"] == ["nginx"] and given.args["cache_valid_time"] == 3600
    assert given.keywords == {"timeout": 120}
    [setting] = to_tasks(call("operations.apt.update", "Update", timeout=None, cache_time=None))
    assert setting.keywords == {"timeout": "{{ base_apt_timeout | default(600) }}"}
    [plain] = to_tasks(call("apt.update", "Update", cache_time=None))
    assert plain.keywords == {}
