"""Each pyinfra operation the deploys use, as native Ansible modules (by FQCN).

A mapper receives one recorded call and returns the task(s) doing the same thing. Every
argument a mapper does not translate must still be at its default: anything else fails
the export with the operation and its deploy line, rather than being dropped silently.
Commands are never a fallback: ``server.shell`` maps only where the deploy gates it on a
change (``_if=op.did_change``), which makes it a handler that runs when notified.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable
from io import IOBase
from pathlib import Path
from typing import Any

from mahaops.ansible_export.model import Call, ExportError, Task
from mahaops.templating import JINJA_ENV_KWARGS, TEMPLATES

Mapper = Callable[[Call], list[Task]]
MAPPERS: dict[str, Mapper] = {}


def maps(*operations: str) -> Callable[[Mapper], Mapper]:
    def register(func: Mapper) -> Mapper:
        for operation in operations:
            MAPPERS[operation] = func
        return func

    return register


def to_tasks(call: Call) -> list[Task]:
    """The Ansible task(s) for ``call``; ExportError when there is no faithful mapping."""
    mapper = MAPPERS.get(call.operation)
    if mapper is None:
        raise ExportError(
            f"{call.where()}: no Ansible mapping for {call.operation} "
            "(add one in mahaops/ansible_export/modules.py)"
        )
    return mapper(call)


def only(call: Call, *handled: Iterable[str]) -> None:
    """Fail when ``call`` sets an argument this mapper does not translate."""
    known = {key for keys in handled for key in keys}
    for key in sorted(call.arguments):
        if key not in known and call.is_set(key):
            raise ExportError(
                f"{call.where()}: {key}={call.arguments[key]!r} has no Ansible mapping"
            )


def mode(value: Any) -> str | None:
    """pyinfra's ``"644"``/``644`` as Ansible's quoted octal ``"0644"``."""
    if value is None:
        return None
    text = str(value)
    if not re.fullmatch(r"[0-7]{3,4}", text):
        raise ValueError(f"mode {value!r} is not octal digits")
    return text.zfill(4)


def _owner(call: Call, user_key: str = "user", group_key: str = "group") -> dict[str, Any]:
    result = {}
    if call.arguments.get(user_key) is not None:
        result["owner"] = call.arguments[user_key]
    if call.arguments.get(group_key) is not None:
        result["group"] = call.arguments[group_key]
    return result


def compact(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in args.items() if v is not None}


# -- files -------------------------------------------------------------------------------------


def _template_source(call: Call, src: Any) -> str:
    """The template's path under templates/ (shared verbatim with the Ansible role)."""
    if isinstance(src, IOBase):
        raise ExportError(f"{call.where()}: an in-memory template cannot be shared; use templates/")
    path = Path(str(src))
    if not path.is_absolute():
        path = TEMPLATES / path
    try:
        return str(path.resolve().relative_to(TEMPLATES.resolve()))
    except ValueError:
        raise ExportError(f"{call.where()}: template {src} is outside templates/") from None


# Defaults of Ansible's template module; pyinfra's jinja_env_kwargs must match or be mapped.
_ANSIBLE_JINJA = {"trim_blocks": True, "lstrip_blocks": False, "keep_trailing_newline": True}


@maps("files.template")
def template(call: Call) -> list[Task]:
    only(
        call,
        ["src", "dest", "user", "group", "mode", "create_remote_dir", "jinja_env_kwargs", "data"],
    )
    env = {**_ANSIBLE_JINJA, "trim_blocks": False, **(call.arguments["jinja_env_kwargs"] or {})}
    unknown = set(env) - set(_ANSIBLE_JINJA)
    if unknown:
        raise ExportError(f"{call.where()}: jinja_env_kwargs {sorted(unknown)} have no mapping")
    source = _template_source(call, call.arguments["src"])
    args: dict[str, Any] = {"src": source, "dest": call.arguments["dest"]}
    args.update(_owner(call))
    # pyinfra leaves an unset mode alone; ansible-lint (risky-file-permissions) wants one, so
    # the export pins what a new file gets under the usual umask.
    args["mode"] = mode(call.arguments["mode"]) or "0644"
    for key in ("trim_blocks", "lstrip_blocks"):
        if env[key] != _ANSIBLE_JINJA[key]:
            args[key] = env[key]
    if not env["keep_trailing_newline"]:
        raise ExportError(f"{call.where()}: Ansible's template always keeps the last newline")
    return [
        Task(
            call.name,
            "ansible.builtin.template",
            args,
            template=source,
            template_vars=dict(call.arguments.get("data") or {}),
        )
    ]


@maps("operations.files.validated_template")
def validated_template(call: Call) -> list[Task]:
    only(call, ["src", "dest", "validate", "user", "group", "mode", "data"])
    source = _template_source(call, call.arguments["src"])
    assert JINJA_ENV_KWARGS == {"trim_blocks": True}  # mahaops.templating renders as Ansible
    args = {
        "src": source,
        "dest": call.arguments["dest"],
        "owner": call.arguments["user"],
        "group": call.arguments["group"],
        "mode": mode(call.arguments["mode"]),
        "validate": call.arguments["validate"],
    }
    return [
        Task(
            call.name,
            "ansible.builtin.template",
            args,
            template=source,
            template_vars=dict(call.arguments.get("data") or {}),
        )
    ]


@maps("files.file")
def file(call: Call) -> list[Task]:
    only(call, ["path", "present", "user", "group", "mode", "create_remote_dir", "force_backup"])
    args: dict[str, Any] = {"path": call.arguments["path"]}
    if not call.arguments["present"]:
        args["state"] = "absent"
    else:
        # "touch" with preserved times: creates an empty file when missing, else no change.
        args.update(state="touch", access_time="preserve", modification_time="preserve")
        args.update(_owner(call))
        args["mode"] = mode(call.arguments["mode"]) or "0644"
    return [Task(call.name, "ansible.builtin.file", args)]


@maps("files.directory")
def directory(call: Call) -> list[Task]:
    only(call, ["path", "present", "user", "group", "mode", "recursive", "force_backup"])
    args: dict[str, Any] = {"path": call.arguments["path"]}
    if not call.arguments["present"]:
        args["state"] = "absent"
    else:
        args["state"] = "directory"
        args.update(_owner(call))
        # As for templates: an unset mode is pinned to what `mkdir` gives under umask 022.
        args["mode"] = mode(call.arguments["mode"]) or "0755"
        if call.arguments["recursive"]:
            args["recurse"] = True
    return [Task(call.name, "ansible.builtin.file", args)]


@maps("files.link")
def link(call: Call) -> list[Task]:
    only(
        call,
        ["path", "target", "present", "user", "group", "symbolic", "create_remote_dir"],
        ["force_backup"],
    )
    args: dict[str, Any] = {"path": call.arguments["path"]}
    if not call.arguments["present"]:
        args["state"] = "absent"
    else:
        args["src"] = call.arguments["target"]
        args["state"] = "link" if call.arguments["symbolic"] else "hard"
        args.update(_owner(call))
    return [Task(call.name, "ansible.builtin.file", args)]


@maps("files.put")
def put(call: Call) -> list[Task]:
    only(call, ["src", "dest", "user", "group", "mode", "add_deploy_dir", "create_remote_dir"])
    src = call.arguments["src"]
    args: dict[str, Any] = {"dest": call.arguments["dest"]}
    files: dict[str, bytes] = {}
    if isinstance(src, IOBase):
        src.seek(0)
        data = src.read()
        args["content"] = data.decode() if isinstance(data, bytes) else data
    else:
        path = Path(str(src))
        files[path.name] = path.read_bytes()
        args["src"] = path.name
    args.update(_owner(call))
    args["mode"] = mode(call.arguments["mode"]) or "0644"
    return [Task(call.name, "ansible.builtin.copy", args, files=files)]


def _line_regex(line: str, escape: bool) -> str:
    # pyinfra's files.line matches the whole line around ``line`` unless anchored.
    if escape:
        line = re.escape(line)
    if not line.startswith("^"):
        line = f"^.*{line}"
    if not line.endswith("$"):
        line = f"{line}.*$"
    return line


@maps("files.line")
def line(call: Call) -> list[Task]:
    only(call, ["path", "line", "present", "replace", "escape_regex_characters"])
    text = call.arguments["line"]
    args: dict[str, Any] = {
        "path": call.arguments["path"],
        "regexp": _line_regex(text, call.arguments["escape_regex_characters"]),
    }
    if call.arguments["present"]:
        args["line"] = call.arguments["replace"] or text
    else:
        args["state"] = "absent"
    return [Task(call.name, "ansible.builtin.lineinfile", args)]


# -- packages ----------------------------------------------------------------------------------


@maps("apt.packages")
def apt_packages(call: Call) -> list[Task]:
    only(
        call,
        ["packages", "present", "latest", "update", "cache_time", "no_recommends", "upgrade"],
        ["force", "allow_downgrades", "purge"],
    )
    a = call.arguments
    packages = a["packages"]
    args: dict[str, Any] = {
        "name": [packages] if isinstance(packages, str) else list(packages or []),
        "state": "absent" if not a["present"] else ("latest" if a["latest"] else "present"),
    }
    if a["update"]:
        args["update_cache"] = True
        if a["cache_time"]:
            args["cache_valid_time"] = a["cache_time"]
    if a["no_recommends"]:
        args["install_recommends"] = False
    if a["upgrade"]:
        args["upgrade"] = "yes"
    if a["force"]:
        args["force"] = True
    if a["allow_downgrades"]:
        args["allow_downgrade"] = True
    if a["purge"]:
        args["purge"] = True
    return [Task(call.name, "ansible.builtin.apt", args)]


@maps("apt.update")
def apt_update(call: Call) -> list[Task]:
    only(call, ["cache_time"])
    args: dict[str, Any] = {"update_cache": True}
    if call.arguments["cache_time"]:
        args["cache_valid_time"] = call.arguments["cache_time"]
    return [Task(call.name, "ansible.builtin.apt", args)]


# -- server ------------------------------------------------------------------------------------


@maps("server.hostname")
def hostname(call: Call) -> list[Task]:
    only(call, ["hostname"])
    return [Task(call.name, "ansible.builtin.hostname", {"name": call.arguments["hostname"]})]


@maps("server.group")
def group(call: Call) -> list[Task]:
    only(call, ["group", "present", "system", "gid"])
    a = call.arguments
    args = compact(
        {
            "name": a["group"],
            "state": "present" if a["present"] else "absent",
            "system": True if a["system"] else None,
            "gid": a["gid"],
        }
    )
    return [Task(call.name, "ansible.builtin.group", args)]


@maps("server.user")
def user(call: Call) -> list[Task]:
    only(
        call,
        ["user", "present", "home", "shell", "group", "groups", "append", "public_keys"],
        ["delete_keys", "ensure_home", "create_home", "system", "uid", "comment"],
    )
    a = call.arguments
    if not a["present"]:
        return [Task(call.name, "ansible.builtin.user", {"name": a["user"], "state": "absent"})]
    args = compact(
        {
            "name": a["user"],
            "state": "present",
            "home": a["home"],
            "shell": a["shell"],
            "group": a["group"],
            "groups": list(a["groups"]) if a["groups"] is not None else None,
            "append": True if a["groups"] is not None and a["append"] else None,
            "create_home": bool(a["create_home"]),  # Ansible's default differs (true)
            "system": True if a["system"] else None,
            "uid": a["uid"],
            "comment": a["comment"],
        }
    )
    tasks = [Task(call.name, "ansible.builtin.user", args)]
    keys = a["public_keys"]
    if keys:
        keys = [keys] if isinstance(keys, str) else list(keys)
        tasks.append(
            Task(
                f"{call.name}: SSH keys",
                "ansible.posix.authorized_key",
                {
                    "user": a["user"],
                    "key": "\n".join(keys),
                    "exclusive": bool(a["delete_keys"]),
                },
            )
        )
    return tasks


@maps("server.sysctl")
def sysctl(call: Call) -> list[Task]:
    only(call, ["key", "value", "persist", "persist_file"])
    a = call.arguments
    if not a["persist"]:
        raise ExportError(f"{call.where()}: ansible.posix.sysctl always persists; set persist=True")
    value = a["value"]
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    args = {
        "name": a["key"],
        "value": str(value),
        "sysctl_file": a["persist_file"],
        "sysctl_set": True,
        "state": "present",
    }
    return [Task(call.name, "ansible.posix.sysctl", args)]


_SHELL_SYNTAX = re.compile(r"[|&;<>$`*?(){}\[\]~]")


@maps("server.shell")
def shell(call: Call) -> list[Task]:
    # Reached only for gated calls (handlers): see mahaops.ansible_export.project.
    only(call, ["commands"])
    commands = call.arguments["commands"]
    commands = [commands] if isinstance(commands, str) else list(commands)
    tasks = []
    for command in commands:
        if _SHELL_SYNTAX.search(command):
            task = Task(call.name, "ansible.builtin.shell", {"cmd": command})
        else:
            task = Task(call.name, "ansible.builtin.command", {"argv": shlex.split(command)})
        task.keywords["changed_when"] = True  # it runs only when notified: that is the change
        tasks.append(task)
    return tasks


# -- services ----------------------------------------------------------------------------------


@maps("systemd.service")
def systemd_service(call: Call) -> list[Task]:
    only(call, ["service", "running", "restarted", "reloaded", "enabled", "daemon_reload"])
    a = call.arguments
    state = None
    if a["restarted"]:
        state = "restarted"
    elif a["reloaded"]:
        state = "reloaded"  # also starts a stopped unit, as pyinfra's running=True would
    elif a["running"] is True:
        state = "started"
    elif a["running"] is False:
        state = "stopped"
    args = compact(
        {
            "name": a["service"],
            "state": state,
            "enabled": a["enabled"],
            "daemon_reload": True if a["daemon_reload"] else None,
        }
    )
    return [Task(call.name, "ansible.builtin.systemd_service", args)]


@maps("systemd.daemon_reload")
def systemd_daemon_reload(call: Call) -> list[Task]:
    only(call, [])
    return [Task(call.name, "ansible.builtin.systemd_service", {"daemon_reload": True})]


# -- PostgreSQL --------------------------------------------------------------------------------

_PSQL = ("psql_user", "psql_password", "psql_host", "psql_port", "psql_database")


def _psql(call: Call) -> dict[str, Any]:
    a = call.arguments
    return compact(
        {
            "login_user": a["psql_user"],
            "login_password": a["psql_password"],
            "login_host": a["psql_host"],
            "login_port": a["psql_port"],
            "login_db": a["psql_database"],
        }
    )


@maps("postgres.role", "postgresql.role")
def pg_role(call: Call) -> list[Task]:
    only(
        call,
        ["role", "present", "password", "login", "superuser", "inherit", "createdb"],
        ["createrole", "replication", "connection_limit", *_PSQL],
    )
    a = call.arguments
    flags = [
        ("" if a[key] else "NO") + flag
        for key, flag in (
            ("login", "LOGIN"),
            ("superuser", "SUPERUSER"),
            ("inherit", "INHERIT"),
            ("createdb", "CREATEDB"),
            ("createrole", "CREATEROLE"),
            ("replication", "REPLICATION"),
        )
    ]
    args = compact(
        {
            "name": a["role"],
            "state": "present" if a["present"] else "absent",
            "password": a["password"],
            "role_attr_flags": ",".join(flags) if a["present"] else None,
            "conn_limit": a["connection_limit"],
            **_psql(call),
        }
    )
    return [Task(call.name, "community.postgresql.postgresql_user", args)]


@maps("postgres.database", "postgresql.database")
def pg_database(call: Call) -> list[Task]:
    only(
        call,
        ["database", "present", "owner", "template", "encoding", "lc_collate", "lc_ctype"],
        ["tablespace", "connection_limit", *_PSQL],
    )
    a = call.arguments
    args = compact(
        {
            "name": a["database"],
            "state": "present" if a["present"] else "absent",
            "owner": a["owner"],
            "template": a["template"],
            "encoding": a["encoding"],
            "lc_collate": a["lc_collate"],
            "lc_ctype": a["lc_ctype"],
            "tablespace": a["tablespace"],
            "conn_limit": str(a["connection_limit"]) if a["connection_limit"] else None,
            **_psql(call),
        }
    )
    return [Task(call.name, "community.postgresql.postgresql_db", args)]
