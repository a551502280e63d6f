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
import sys
from collections.abc import Callable, Iterable
from io import IOBase
from pathlib import Path
from typing import Any

from mahaops.ansible_export.model import Call, ExportError, Jinja, Task
from mahaops.masking import SecretDigest
from mahaops.templating import JINJA_ENV_KWARGS, TEMPLATES
from operations import apt

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


def _template_var(value: Any) -> Any:
    """A template variable as the export writes it: a secret's digest is computed from the
    secret's lookup (``ansible.builtin.hash``), never written."""
    if isinstance(value, SecretDigest):
        from mahaops.ansible_export.project import SECRET_PREFIX

        return Jinja(f"{{{{ {SECRET_PREFIX}{value.secret} | hash({value.algorithm!r}) }}}}")
    return value


def _template_task(call: Call, source: str, args: dict[str, Any]) -> Task:
    """An ``ansible.builtin.template`` task carrying the template and what the deploy passed."""
    template_vars = {k: _template_var(v) for k, v in (call.arguments.get("data") or {}).items()}
    return Task(
        call.name, "ansible.builtin.template", args, template=source, template_vars=template_vars
    )


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
    return [_template_task(call, source, args)]


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
    return [_template_task(call, source, args)]


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


def _apt_timeout(call: Call) -> dict[str, Any]:
    """The project's bounded apt: the same bound as Ansible's task ``timeout``."""
    if not call.operation.startswith("operations."):
        return {}
    timeout = call.arguments.get("timeout")
    if timeout is None:  # the host's setting; base's role defaults are not seen by other roles
        timeout = Jinja(f"{{{{ base_apt_timeout | default({apt.DEFAULT_TIMEOUT}) }}}}")
    return {"timeout": timeout}


@maps("apt.packages", "operations.apt.packages")
def apt_packages(call: Call) -> list[Task]:
    only(
        call,
        ["packages", "present", "latest", "update", "cache_time", "no_recommends", "upgrade"],
        ["force", "allow_downgrades", "purge", "timeout"],
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
    if a.get("upgrade"):
        args["upgrade"] = "yes"
    if a.get("force"):
        args["force"] = True
    if a.get("allow_downgrades"):
        args["allow_downgrade"] = True
    if a.get("purge"):
        args["purge"] = True
    return [Task(call.name, "ansible.builtin.apt", args, keywords=_apt_timeout(call))]


@maps("apt.update", "operations.apt.update")
def apt_update(call: Call) -> list[Task]:
    only(call, ["cache_time", "timeout"])
    args: dict[str, Any] = {"update_cache": True}
    if call.arguments["cache_time"]:
        args["cache_valid_time"] = call.arguments["cache_time"]
    return [Task(call.name, "ansible.builtin.apt", args, keywords=_apt_timeout(call))]


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


@maps("operations.services.restart_owed")
def restart_owed(call: Call) -> list[Task]:
    # A handler flushed from the host's marker (see project._RoleBuilder.owed_marker): the
    # restart, then the marker's removal, only reached when the restart succeeded.
    from operations.services import marker

    only(call, ["service", "when", "daemon_reload", "reload"])
    a = call.arguments
    reload = bool(a.get("reload"))
    args = compact(
        {
            "name": a["service"],
            "state": "reloaded" if reload else "restarted",
            "daemon_reload": a["daemon_reload"] or None,
        }
    )
    return [
        Task(call.name, "ansible.builtin.systemd_service", args),
        Task(
            f"{call.name}: no longer owed",
            "ansible.builtin.file",
            {"path": marker(a["service"], reload), "state": "absent"},
        ),
    ]


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


# -- downloads ---------------------------------------------------------------------------------


@maps("files.download")
def download(call: Call) -> list[Task]:
    only(call, ["src", "dest", "user", "group", "mode", "sha256sum", "sha1sum", "md5sum", "force"])
    a = call.arguments
    args: dict[str, Any] = {"url": a["src"], "dest": a["dest"]}
    if a.get("force"):  # the recorded host holds a file to replace (a signing key not pinned)
        args["force"] = True
    args.update(_owner(call))
    args["mode"] = mode(a["mode"]) or "0644"
    for kind in ("sha256", "sha1", "md5"):
        if a.get(f"{kind}sum"):
            args["checksum"] = f"{kind}:{a[f'{kind}sum']}"
    return [Task(call.name, "ansible.builtin.get_url", args)]


# -- this project's release operations (operations/release.py) ---------------------------------
# Unpacking, migrating and checking are commands by nature. Each task runs the command the
# operation itself yields for a host where the release is not there yet (read from the
# operation, never copied), made idempotent the Ansible way: ``creates`` on the marker the
# operation writes last, or ``changed_when`` for a check that changes nothing.


class _FreshHost:
    """A host where nothing was released yet: what the release operations' facts say."""

    def get_fact(self, fact: Any, **_kwargs: Any) -> Any:
        from operations.release import Releases, ReleaseState

        return ReleaseState() if fact is Releases else None

    def noop(self, message: str) -> None:
        raise ExportError(f"the release operation had nothing to do on a fresh host: {message}")


class _Changed:
    """An operation that changed its host: a handler runs only in such a run."""

    def is_complete(self) -> bool:
        return True

    def did_change(self) -> bool:
        return True


def own_commands(operation: Any, **kwargs: Any) -> list[str]:
    """The shell commands ``operation`` (one of this project's) yields on a fresh host."""
    module = sys.modules[operation._inner.__module__]
    saved = getattr(module, "host")  # noqa: B009 - pyinfra's context host, swapped for a stub
    setattr(module, "host", _FreshHost())  # noqa: B010
    try:
        return [command.get_raw_value() for command in operation._inner(**kwargs)]
    finally:
        setattr(module, "host", saved)  # noqa: B010


def _one_command(call: Call, commands: list[str]) -> str:
    if len(commands) != 1:
        raise ExportError(f"{call.where()}: expected one command, the operation gave {commands}")
    return commands[0]


@maps("operations.files.command_once")
def command_once(call: Call) -> list[Task]:
    only(call, ["command", "creates"])
    command = call.arguments["command"]
    args: dict[str, Any] = (
        {"cmd": command} if _SHELL_SYNTAX.search(command) else {"argv": shlex.split(command)}
    )
    module = "ansible.builtin.shell" if "cmd" in args else "ansible.builtin.command"
    return [Task(call.name, module, {**args, "creates": call.arguments["creates"]})]


@maps("operations.sshd.effective")
def sshd_effective(call: Call) -> list[Task]:
    # A check, as native modules: read `sshd -T` (never a change), then assert each setting.
    # The expected settings are a variable (group_vars): hosts differ (log servers allow
    # forwarding for the tunnel), and a host added later checks its group's.
    from operations.sshd import SSHD

    only(call, ["expected", "pending"])
    seen = f"{call.role}_sshd_effective"  # ansible-lint: registered names carry the role
    expected = f"{call.role}_sshd_expected"
    wanted = f"({expected}.items() | map('join', ' '))"
    read = Task(
        f"{call.name}: read them",
        "ansible.builtin.command",
        {"argv": [SSHD, "-T"]},
        keywords={"register": seen, "changed_when": False},
    )
    check = Task(
        call.name,
        "ansible.builtin.assert",
        {
            "that": [f"{wanted} | reject('in', {seen}.stdout_lines) | list | length == 0"],
            "fail_msg": Jinja(
                "sshd does not apply the project's settings (see sshd -T): "
                f"{{{{ {wanted} | reject('in', {seen}.stdout_lines) | join(', ') }}}}"
            ),
            "quiet": True,
        },
        template_vars={expected: dict(call.arguments["expected"])},
    )
    return [read, check]


@maps("operations.sshd.admits")
def sshd_admits(call: Call) -> list[Task]:
    # A check before sshd's reload handler: the operation's own shell, never a change.
    from operations.sshd import admits_command

    only(call, ["user", "keys"])
    command = admits_command(call.arguments["user"], call.arguments["keys"])
    return [_bash(call.name, command, False)]


@maps("operations.ebs.mounted")
def ebs_mounted(call: Call) -> list[Task]:
    # The operation's facts and commands: mount unless the volume is already there; in the
    # AWS stand-in (a container: no block device) link unless linked.
    from operations.ebs import EbsMounted, SimEbsLinked, mount_command, sim_link_command

    only(call, ["volume_id", "path"])
    a = call.arguments
    seen = f"{call.role}_ebs_mounted"
    volume, path = a["volume_id"], a["path"]
    check = EbsMounted().command(volume, path)
    sim = SimEbsLinked().command(volume, path)
    command = (
        f'sim=$({sim}); if [ "$sim" = none ]; then '
        f'[ "$({check})" = yes ] || {{ {mount_command(volume, path)}; echo mounted; }}; '
        f'elif [ "$sim" != linked ]; then {sim_link_command(volume, path)}; echo mounted; fi'
    )
    task = _bash(call.name, command, f"'mounted' in {seen}.stdout_lines")
    task.keywords["register"] = seen
    return [task]


@maps("python.call")
def python_call(call: Call) -> list[Task]:
    # Python run on the operator's machine has no faithful Ansible task in general. The one
    # a deploy makes (the AWS first contact's hand-over) is said plainly: the export is
    # of hosts that log in as the deploy user.
    function = call.arguments.get("function")
    if getattr(function, "__name__", "") == "record_handover":
        raise ExportError(
            f"{call.host} is not handed over to the deploy user yet (its first contact is "
            "pyinfra's: it logs in as the image's user): run `invoke deploy` on it once, "
            "then export"
        )
    raise ExportError(f"{call.where()}: no Ansible mapping for python.call")


@maps("operations.release.unpacked")
def release_unpacked(call: Call) -> list[Task]:
    from operations.release import MARKER, unpacked

    only(call, ["tarball", "release_id", "root"])
    a = call.arguments
    command = _one_command(call, own_commands(unpacked, **a))
    marker = f"{a['root']}/releases/{a['release_id']}/{MARKER}"
    return [Task(call.name, "ansible.builtin.shell", {"cmd": command, "creates": marker})]


@maps("operations.release.migrated")
def release_migrated(call: Call) -> list[Task]:
    from operations.release import MIGRATED, migrated

    only(call, ["release_id", "user", "root", "command", "allow_breaking"])
    a = call.arguments
    command = _one_command(call, own_commands(migrated, **a))
    marker = f"{a['root']}/releases/{a['release_id']}/{MIGRATED}"
    return [Task(call.name, "ansible.builtin.shell", {"cmd": command, "creates": marker})]


@maps("operations.release.current")
def release_current(call: Call) -> list[Task]:
    from operations.release import HISTORY, owed_command

    only(call, ["release_id", "root", "services"])
    a = call.arguments
    root, target = a["root"], f"releases/{a['release_id']}"
    seen = f"{call.role}_current_release"  # ansible-lint: registered names carry the role
    before = f"{{{{ ({seen}.stat.lnk_target | default('-')) | basename }}}}"
    record = (
        f"{owed_command(root, a.get('services', ()), a['release_id'])} && "
        f'printf \'%s %s %s\\n\' "$(date +%s)" {shlex.quote(a["release_id"])} "{before}" '
        f">> {shlex.quote(f'{root}/{HISTORY}')}"
    )
    return [
        Task(
            f"{call.name}: read the current release",
            "ansible.builtin.stat",
            {"path": f"{root}/current"},
            keywords={"register": seen},
        ),
        # As the operation: restarts owed and the history line, before the switch.
        Task(
            f"{call.name}: record the restart owed and the release before",
            "ansible.builtin.shell",
            {"cmd": Jinja(record)},
            keywords={
                "when": f"({seen}.stat.lnk_target | default('')) != {target!r}",
                "changed_when": True,  # runs only when the switch is due, and then writes
            },
        ),
        Task(
            f"{call.name}: keep the current release as the rollback target",
            "ansible.builtin.file",
            {
                "path": f"{root}/previous",
                "src": Jinja(f"{{{{ {seen}.stat.lnk_target }}}}"),
                "state": "link",
            },
            keywords={
                "when": [
                    f"{seen}.stat.islnk | default(false)",
                    f"{seen}.stat.lnk_target != {target!r}",
                ]
            },
        ),
        # The file module swaps a symlink by renaming a new one over it: atomic, as pyinfra's.
        Task(
            call.name,
            "ansible.builtin.file",
            {"path": f"{root}/current", "src": target, "state": "link"},
        ),
    ]


@maps("operations.release.restarted")
def release_restarted(call: Call) -> list[Task]:
    # A handler notified by every operation in ``when`` (see project.build_role).
    only(call, ["service", "when", "root"])
    return [
        Task(
            call.name,
            "ansible.builtin.systemd_service",
            {"name": call.arguments["service"], "state": "restarted"},
        )
    ]


@maps("operations.release.healthy")
def release_healthy(call: Call) -> list[Task]:
    # A handler notified by the restart: a check changes nothing unless it fails (and then
    # the operation's own command switches back and fails the run, as under pyinfra).
    from operations.release import healthy

    only(call, ["check", "services", "when", "root", "retries", "interval"])
    arguments = {**call.arguments, "when": [_Changed()]}
    return [_bash(call.name, _one_command(call, own_commands(healthy, **arguments)), False)]


def release_prune_command(keep: int, root: str) -> str:
    """Shell deciding what operations.release.pruned decides from the Releases fact: keep
    ``current``, ``previous`` and the newest ``keep`` complete releases; delete the rest."""
    from operations.release import MARKER

    q = shlex.quote
    return (
        f"cd {q(root)} 2>/dev/null || exit 0; "
        "cur=$(readlink current); prev=$(readlink previous); "
        f'all=$(for d in releases/*/; do [ -f "$d{MARKER}" ] && basename "$d"; done | sort); '
        f"keep=$(printf '%s\\n' \"$all\" | tail -n {int(keep)}); "
        'for r in $all; do case " ${cur#releases/} ${prev#releases/} $(echo $keep) " in '
        '*" $r "*) ;; *) rm -rf "releases/$r" "tarballs/maha-$r.tar.gz" && echo "pruned $r";; '
        "esac; done"
    )


@maps("operations.release.pruned")
def release_pruned(call: Call) -> list[Task]:
    only(call, ["keep", "root"])
    a = call.arguments
    # A failed listing must not prune (pipefail).
    task = _bash(
        call.name,
        release_prune_command(a["keep"], a["root"]),
        f"'pruned ' in {call.role}_pruned_releases.stdout",
    )
    task.keywords["register"] = f"{call.role}_pruned_releases"
    return [task]


@maps("operations.release.history_trimmed")
def release_history_trimmed(call: Call) -> list[Task]:
    from operations.release import history_trim_command

    only(call, ["keep", "root"])
    a = call.arguments
    seen = f"{call.role}_trimmed_history"
    task = _bash(
        call.name, history_trim_command(a["keep"], a["root"]), f"'trimmed' in {seen}.stdout"
    )
    task.keywords["register"] = seen
    return [task]


def _bash(name: str, command: str, changed_when: bool | str) -> Task:
    """A shell task run by bash with pipefail (ansible-lint's risky-shell-pipe: a pipeline
    fails when any part of it fails, as the deploys' commands expect)."""
    return Task(
        name,
        "ansible.builtin.shell",
        {"cmd": f"set -o pipefail; {command}", "executable": "/bin/bash"},
        keywords={"changed_when": changed_when},
    )


@maps("operations.postgresql.role")
def pg_scram_role(call: Call) -> list[Task]:
    # The module compares the password with the stored SCRAM verifier itself, as the
    # operation does; it runs as postgres over the local socket, as the operation's psql.
    only(call, ["role", "password", "login", "connection_limit", "port"])
    a = call.arguments
    args = {
        "name": a["role"],
        "password": a["password"],
        "role_attr_flags": "LOGIN" if a["login"] else "NOLOGIN",
        "conn_limit": a["connection_limit"],
        "login_port": a["port"],
    }
    task = Task(call.name, "community.postgresql.postgresql_user", args)
    task.keywords.update(become_user="postgres", no_log=True)
    return [task]


@maps("operations.postgresql.adopt_data")
def pg_adopt_data(call: Call) -> list[Task]:
    # The command checks the same condition as the operation's fact, and does nothing
    # where the cluster has its configuration (``creates``: the usual case, reported ok).
    from operations.postgresql import adopt_command

    only(call, ["version", "cluster"])
    a = call.arguments
    conf = f"/etc/postgresql/{a['version']}/{a.get('cluster', 'main')}/postgresql.conf"
    command = adopt_command(a["version"], a.get("cluster", "main"))
    return [Task(call.name, "ansible.builtin.shell", {"cmd": command, "creates": conf})]


@maps("operations.postgresql.reload")
def pg_reload(call: Call) -> list[Task]:
    # A handler flushed from the host's marker, as an owed restart's (see
    # project._RoleBuilder.owed_marker): the operation's own command reloads, waits until the
    # server has re-read its files, restarts if a setting needs it, then clears the marker.
    from operations.postgresql import reload_command

    only(call, ["service", "port", "when"])
    command = reload_command(call.arguments["service"], call.arguments.get("port", 5432))
    task = Task(call.name, "ansible.builtin.shell", {"cmd": command})
    task.keywords["changed_when"] = True
    return [task]
