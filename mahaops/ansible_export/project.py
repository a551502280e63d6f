"""Turns recorded deploy calls into the files of an Ansible project (pure: no hosts, no I/O).

Layout written (paths relative to the export directory):

- ``ansible.cfg``, ``inventory.yml`` (the pyinfra groups, connection variables, become),
  ``site.yml`` (one play per role, in deploy order), ``requirements.yml``;
- ``group_vars/<group>.yml``: group_data, checked and normalised by the settings models,
  plus the defaults of settings that do not carry their role's prefix; secrets are
  lookups (``group_vars/all.yml``), never values;
- ``host_vars/<host>.yml``: template variables a deploy derives per host (firewall rules
  from the inventory, sudo users...), as the deploy computed them at export time;
- ``roles/<role>/{tasks,handlers,defaults,templates,files}``.

A call made on only some hosts of a role, or with arguments that differ between hosts,
becomes one task per variant, each limited with ``when: inventory_hostname in [...]``.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from jinja2 import Environment, meta

from mahaops.ansible_export import lifecycle, peers
from mahaops.ansible_export.model import Call, ExportError, Host, Jinja, Task, Unsafe
from mahaops.ansible_export.modules import to_tasks
from mahaops.roles import BASE, GROUPS, ROLE_BY_NAME, Role
from mahaops.settings import GroupData, Settings, from_data, group_models
from mahaops.templating import TEMPLATES
from operations.release import owed_before_command as release_owed_before
from operations.services import marker as owed_marker_path

SECRET_PREFIX = "maha_secret_"
# community.postgresql's modules speak to the server through psycopg; pyinfra uses psql.
PSYCOPG = {
    "name": "PostgreSQL driver for Ansible's postgresql modules",
    "ansible.builtin.apt": {"name": ["python3-psycopg2"], "state": "present"},
}
RETRY_DELAY = 5  # pyinfra's default _retry_delay (Config.RETRY_DELAY)
FLUSH = {"name": "Apply the changes notified so far", "ansible.builtin.meta": "flush_handlers"}
KIND_PRIORITY = 1  # ansible_group_priority: role groups override the kind overlay, as pyinfra
ROLE_PRIORITY = 2
# Operations flushed as handlers from a marker on the host -> that marker, from their
# arguments (operations.services.restart_owed and the operations owed like it).
OWED_MARKERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "operations.services.restart_owed": lambda a: owed_marker_path(
        a["service"], bool(a.get("reload"))
    ),
    "operations.postgresql.reload": lambda a: owed_marker_path(a["service"], reload=True),
}
RELEASE_RESTART = "operations.release.restarted"  # also notified by the release's marker


def owed_topic(topic: str) -> str:
    """The handler recording on the host that ``topic``'s restart is owed."""
    return f"{topic}: record the restart as owed"


# Modules that check a changed file with ``validate`` before putting it in place (and only
# then: not when it is already right, nor in check mode).
VALIDATING = frozenset(
    {
        "ansible.builtin.template",
        "ansible.builtin.copy",
        "ansible.builtin.lineinfile",
        "ansible.builtin.blockinfile",
    }
)


def owed_record(path: str) -> str:
    """Shell recording an owed restart's marker (``operations.services``)."""
    return f"mkdir -p {shlex.quote(path.rpartition('/')[0])} && touch {shlex.quote(path)}"


def owed_validate(records: Iterable[str], validate: str | None = None) -> str:
    """A ``validate`` command that records restarts as owed (``records``, shell) once the
    new file passed ``validate`` (if any), before it is put in place: as the pyinfra deploys
    do, a run killed between writing a configuration and its restart leaves it owed."""
    record = " && ".join(f"{{ {r}; }}" for r in dict.fromkeys(records))
    script = record if validate is None else validate.replace("%s", '"$1"') + " && " + record
    if "%" in script:
        raise ExportError(f"validate {validate!r}: Ansible formats it with %, so only %s may")
    return f"sh -c {shlex.quote(script)} maha-validate %s"


# -- YAML: deterministic, yamllint-clean, Jinja only where we put it ---------------------------


class _Dumper(yaml.SafeDumper):
    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        # Indented sequences under their key: yamllint's (and ansible-lint's) usual style.
        super().increase_indent(flow, False)


_Dumper.add_representer(Jinja, lambda d, v: d.represent_str(str(v)))
_Dumper.add_representer(Unsafe, lambda d, v: d.represent_scalar("!unsafe", str(v), style="'"))


def dump(data: Any) -> str:
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=80,  # a long unbreakable tail (a URL's query) still ends within lint's 160
        allow_unicode=True,
    )


def yaml_file(data: Any, header: str = "") -> bytes:
    comment = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    body = dump(data) if data not in ({}, [], None) else ""
    return f"---\n{comment}{body}".encode()


def plain(value: Any) -> Any:
    """``value`` as YAML-ready data (tuples, sets, models become lists and mappings)."""
    if isinstance(value, Jinja | Unsafe):
        return value
    if hasattr(value, "model_dump"):
        return plain(value.model_dump(mode="json"))
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(plain(v) for v in value)
    if isinstance(value, str):
        return Unsafe(value) if any(m in value for m in ("{{", "{%", "{#")) else str(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    raise TypeError(f"{type(value).__name__} value {value!r} cannot be written as YAML")


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def capitalised(name: str) -> str:
    return name[:1].upper() + name[1:]


# -- settings: role defaults and group_vars ----------------------------------------------------


def role_models(role: Role) -> list[type[Settings]]:
    """The settings models of a role: base's are registered for "all", a role's for its group."""
    registered = group_models()
    shared = registered.get("all", ())
    if role == BASE:
        return list(shared)
    return [m for m in registered.get(role.group, ()) if m not in shared]


def exported_keys() -> set[str]:
    """Settings the deploys read; provisioning-only data (aws_environments) stays out."""
    keys: set[str] = set()
    registered = group_models()
    for group in ("all", *GROUPS):
        for model in registered.get(group, ()):
            keys.update(model.model_fields)
    return keys


def model_defaults(role: Role) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for model in role_models(role):
        result.update(plain(from_data(model, {}).model_dump(mode="json")))
    return result


@dataclass
class SettingsLayout:
    """Where each setting lands in the export, and what a host sees in each play."""

    role_defaults: dict[str, dict[str, Any]]  # role -> its prefixed defaults
    group_vars: dict[str, dict[str, Any]]  # group -> values
    overrides: dict[str, Any] = field(default_factory=dict)  # --set: every host's host_vars

    def visible(self, role: str, host: Host) -> dict[str, Any]:
        """The variables ``host`` sees in ``role``'s play (before host_vars)."""
        seen = dict(self.role_defaults.get(role, {}))
        for group in ("all", *host.groups):
            seen.update(self.group_vars.get(group, {}))
        seen.update(host.data)
        seen.update(self.overrides)
        return seen


def layout_settings(
    group_data: GroupData, roles: Iterable[Role], overrides: Mapping[str, Any] | None = None
) -> SettingsLayout:
    keys = exported_keys()
    registered = group_models()
    models: list[type[Settings]] = []
    for group in ("all", *GROUPS):
        models += [m for m in registered.get(group, ()) if m not in models]
    role_defaults: dict[str, dict[str, Any]] = {}
    group_vars: dict[str, dict[str, Any]] = {}
    for role in roles:
        defaults = model_defaults(role)
        prefix = f"{role.name}_"
        role_defaults[role.name] = {k: v for k, v in defaults.items() if k.startswith(prefix)}
        # ansible-lint wants a role's defaults prefixed by its name; the others (apt_proxy,
        # redis_*...) go to group "all", the lowest group precedence, so that any group file
        # (a kind overlay like local.py included) overrides them, as in pyinfra.
        unprefixed = {k: v for k, v in defaults.items() if not k.startswith(prefix)}
        group_vars.setdefault("all", {}).update(unprefixed)
    for group, values in sorted(group_data.files.items()):
        wanted = {k: v for k, v in values.items() if k in keys}
        if not wanted:
            continue
        checked: dict[str, Any] = {}
        for model in models:  # a kind overlay (local.py) may set any role's settings
            subset = {k: v for k, v in wanted.items() if k in model.model_fields}
            if subset:
                dumped = from_data(model, subset).model_dump(mode="json")
                checked.update({k: dumped[k] for k in subset})
        group_vars.setdefault(group, {}).update(plain(checked))
    return SettingsLayout(role_defaults, group_vars, plain(dict(overrides or {})))


# -- secrets -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretSource:
    """Where the exported project reads secrets at run time."""

    kind: str  # local | aws
    env: str
    local_file: str = ""  # local: the 0600 secrets file outside the export
    ssm_path: str = ""  # aws: the parameters' path, /<project>/<env>
    region: str = ""  # aws: where they are
    profile: str = ""  # aws: the operator's AWS profile ("": the default credentials)

    def lookup(self, name: str) -> Jinja:
        if self.kind == "aws":
            where = "".join(
                f", {key}={value!r}"
                for key, value in (("region", self.region), ("profile", self.profile))
                if value
            )
            path = f"{self.ssm_path or '/maha/' + self.env}/{name}"
            return Jinja(f"{{{{ lookup('amazon.aws.aws_ssm', {path!r}, decrypt=true{where}) }}}}")
        return Jinja(f"{{{{ maha_secrets[{name!r}] }}}}")

    def common(self) -> dict[str, Any]:
        """Variables every secret lookup relies on (local: the file, read once when used)."""
        if self.kind == "aws":
            return {}
        return {
            "maha_secrets_file": self.local_file,
            "maha_secrets": Jinja(
                "{{ lookup('ansible.builtin.file', maha_secrets_file) | from_json }}"
            ),
        }


def substitute_secrets(value: Any, secrets: Mapping[str, str]) -> Any:
    """``value`` with every secret replaced by a reference to its lookup variable."""
    if isinstance(value, dict):
        return {k: substitute_secrets(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_secrets(v, secrets) for v in value]
    if isinstance(value, str) and not isinstance(value, Jinja):
        found = [n for n, s in secrets.items() if s and s in value]
        if not found:
            return value
        if isinstance(value, Unsafe):
            raise ExportError("a value holds both a secret and Jinja markers")
        text = str(value)
        for name in sorted(found, key=lambda n: len(secrets[n]), reverse=True):
            text = text.replace(secrets[name], f"{{{{ {SECRET_PREFIX}{name} }}}}")
        return Jinja(text)
    return value


# -- roles -------------------------------------------------------------------------------------


def referenced_variables(template: str) -> set[str] | None:
    """Variables a template reads; None when it includes others (then all are passed)."""
    source = (TEMPLATES / template).read_text()
    parsed = Environment().parse(source)
    if any(True for _ in meta.find_referenced_templates(parsed)):
        return None
    return set(meta.find_undeclared_variables(parsed))


@dataclass
class RoleOutput:
    tasks: list[dict[str, Any]] = field(default_factory=list)
    handlers: list[dict[str, Any]] = field(default_factory=list)
    templates: dict[str, str] = field(default_factory=dict)  # role path -> templates/ path
    files: dict[str, bytes] = field(default_factory=dict)
    modules: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)  # every call without a faithful mapping
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)  # host -> its variables
    handlers_due: bool = False  # a handler sits here in the deploy: flush before what follows

    def add_task(self, item: dict[str, Any]) -> None:
        # pyinfra runs a gated restart where the deploy calls it, Ansible at the end of the
        # play: flushing here keeps the deploy's order (a unit reloaded before it is used).
        if self.handlers_due:
            self.tasks.append(dict(FLUSH))
            self.handlers_due = False
        self.tasks.append(item)

    def add_handler(self, item: dict[str, Any]) -> None:
        self.handlers.append(item)
        self.handlers_due = True


def _options(call: Call) -> dict[str, Any]:
    """pyinfra's global arguments as task keywords."""
    keywords: dict[str, Any] = {}
    for key, value in sorted(call.options.items()):
        if key == "_sudo_user":
            keywords["become_user"] = value
        elif key == "_sudo" and value is False:
            keywords["become"] = False
        elif key == "_env":
            keywords["environment"] = plain(value)
        elif key == "_run_once":
            keywords["run_once"] = bool(value)
        elif key == "_serial" and value:
            keywords["throttle"] = 1
        elif key == "_timeout":
            keywords["timeout"] = value
        elif key == "_retries":
            # pyinfra retries a failed operation; Ansible retries until the result succeeds.
            result = f"{call.role}_result_{call.op_hash[:8]}"
            keywords.update(register=result, until=f"{result} is succeeded", retries=value)
            keywords["delay"] = call.options.get("_retry_delay", RETRY_DELAY)
        elif key == "_retry_delay":
            continue  # with _retries
        elif key == "_chdir" and value == "/":
            continue  # pyinfra's shell must not start in a directory become_user cannot enter
        elif key == "_sudo" and value is True:
            continue
        else:
            raise ExportError(f"{call.where()}: {key}={value!r} has no Ansible mapping")
    return keywords


def _when(hosts: list[str]) -> str:
    return f"inventory_hostname in {[*hosts]!r}"


# Operations a deploy runs on the first host (by name) of its role in a run: there, on the
# first host of the play, however the inventory changed (migrations: deploys/app.py).
ONCE_PER_RUN = frozenset({"operations.release.migrated"})
# scale.yml's plays also carry the control node (lifecycle.py), which runs no role task.
FIRST_OF_PLAY = (
    f"inventory_hostname == ansible_play_hosts_all | reject('equalto', {lifecycle.CONTROL!r})"
    " | sort(case_sensitive=true) | first"
)


def build_role(
    role: str,
    calls: list[Call],
    hosts: Mapping[str, Host],
    settings: SettingsLayout,
    secrets: Mapping[str, str],
    host_vars: dict[str, dict[str, Any]],
) -> RoleOutput:
    """The tasks and handlers of one role from its calls (in deploy order)."""
    out = RoleOutput()
    by_hash: dict[str, list[Call]] = {}
    for call in calls:
        by_hash.setdefault(call.op_hash, []).append(call)
    role_hosts = sorted({c.host for c in calls})

    # Which calls notify which handler topics.
    topics: dict[str, str] = {}  # op hash of a gated call -> its topic
    gates: dict[str, tuple[str, ...]] = {}  # op hash of a gated call -> what gates it
    for op_hash, group in by_hash.items():
        first = group[0]
        if not first.guards and not first.triggers:
            continue
        if len(first.guards) > 1 or (first.guards and first.triggers):
            raise ExportError(
                f"{first.where()}: _if on several changes has no handler equivalent "
                "(a notification is any-of, pyinfra's list is all-of)"
            )
        for gate in (*first.guards, *first.triggers):
            if gate not in by_hash:
                raise ExportError(
                    f"{first.where()}: gated on an operation outside the {role} deploy"
                )
        topics[op_hash] = capitalised(first.name)
        gates[op_hash] = (*first.guards, *first.triggers)

    # pyinfra runs a gated operation where the deploy calls it; Ansible runs handlers at a
    # flush. Handlers are flushed where the deploy has them, and a flush runs every handler
    # notified so far: so a handler with another handler between its gates and its own place
    # (a restart notified by a unit file but due after the release switch) is not notified
    # by its gates. Its gates register their result instead, and a task at its place
    # notifies it when one of them changed.
    order = {op_hash: index for index, op_hash in enumerate(by_hash)}
    handler_places = sorted(order[h] for h in topics)
    notifies: dict[str, list[str]] = {}  # gating op hash -> topics it notifies directly
    deferred: dict[str, list[str]] = {}  # gated op hash -> its gates, read at its place
    for handler, its_gates in gates.items():
        first_gate = min(order[g] for g in its_gates)
        if by_hash[handler][0].operation in OWED_MARKERS:
            for gate in its_gates:  # they record it owed; the marker notifies the restart
                notifies.setdefault(gate, []).append(owed_topic(topics[handler]))
        elif any(first_gate < place < order[handler] for place in handler_places):
            deferred[handler] = list(its_gates)
        else:
            for gate in its_gates:
                notifies.setdefault(gate, []).append(topics[handler])
    registered: dict[str, list[str]] = {
        gate: [] for its_gates in deferred.values() for gate in its_gates
    }
    owes: dict[str, list[str]] = {}  # gating op hash -> what records its restarts owed first
    for handler, its_gates in gates.items():
        a = by_hash[handler][0].arguments
        if by_hash[handler][0].operation in OWED_MARKERS:
            record = owed_record(OWED_MARKERS[by_hash[handler][0].operation](a))
        elif by_hash[handler][0].operation == RELEASE_RESTART and a.get("root"):
            record = release_owed_before(a["root"], a["service"])
        else:
            continue
        for gate in its_gates:
            owes.setdefault(gate, []).append(record)

    builder = _RoleBuilder(
        role, hosts, settings, secrets, host_vars, role_hosts, topics, notifies, registered, out
    )
    builder.owes = owes
    for op_hash, group in by_hash.items():
        try:
            if group[0].operation == RELEASE_RESTART and op_hash in topics:
                builder.release_owed(op_hash, group[0])
            if group[0].operation in OWED_MARKERS and op_hash in topics:
                builder.owed_marker(op_hash, group[0])
            elif op_hash in deferred:
                builder.notifier(op_hash, deferred[op_hash])
            builder.add(op_hash, group)
        except ExportError as exc:
            out.errors.append(str(exc))
    return out


@dataclass
class _RoleBuilder:
    role: str
    hosts: Mapping[str, Host]
    settings: SettingsLayout
    secrets: Mapping[str, str]
    host_vars: dict[str, dict[str, Any]]
    role_hosts: list[str]
    topics: Mapping[str, str]
    notifies: Mapping[str, list[str]]
    registered: dict[str, list[str]]  # gating op hash -> variables its tasks register
    out: RoleOutput
    psycopg: bool = False  # the PostgreSQL driver community.postgresql needs is installed
    owes: Mapping[str, list[str]] = field(default_factory=dict)  # gate -> owed markers

    def owed_marker(self, handler: str, call: Call) -> None:
        """At an owed restart's place (operations.services.restart_owed): the handler its
        inputs notify records the restart as owed on the host (flushed here at the latest),
        and the restart's handler is notified whenever that marker is there, also when a
        run that died before its restart left it. The restart's handler clears it."""
        path = OWED_MARKERS[call.operation](call.arguments)
        seen = f"{self.role}_owed_{handler[:8]}"  # ansible-lint: registered names carry the role
        topic = self.topics[handler]
        self.out.add_handler(
            {
                "name": owed_topic(topic),
                "ansible.builtin.shell": {"cmd": owed_record(path), "creates": path},
            }
        )
        self.out.add_task(
            {
                "name": f"{topic}: due while it is owed",
                "ansible.builtin.stat": {"path": path},
                "register": seen,
                "changed_when": f"{seen}.stat.exists",
                "notify": [topic],
            }
        )

    def release_owed(self, handler: str, call: Call) -> None:
        """At a release's restart (operations.release.restarted given the app root): its
        handler is notified too while ``<root>/pending/<service>`` is there, the marker a run
        that died between the switch and a passing check left (the check removes it)."""
        from operations.release import PENDING

        root = call.arguments.get("root")
        if not root:
            return
        path = f"{root}/{PENDING}/{call.arguments['service']}"
        seen = f"{self.role}_release_owed_{handler[:8]}"  # registered names carry the role
        self.out.add_task(
            {
                "name": f"{self.topics[handler]}: due while the release's restart is owed",
                "ansible.builtin.stat": {"path": path},
                "register": seen,
                "changed_when": f"{seen}.stat.exists",
                "notify": [self.topics[handler]],
            }
        )

    def notifier(self, handler: str, gates: list[str]) -> None:
        """At a handler's place: notify it when one of its gates changed (see build_role)."""
        # A result is undefined where its task never ran (a gate that is itself a handler).
        results = [
            f"({var} | default({{}})) is changed" for g in gates for var in self.registered[g]
        ]
        self.out.add_task(
            {
                "name": f"{self.topics[handler]}: due when its inputs changed",
                "ansible.builtin.debug": {"msg": f"{self.topics[handler]}: its inputs changed"},
                "changed_when": " or ".join(results),
                "notify": [self.topics[handler]],
            }
        )

    def add(self, op_hash: str, group: list[Call]) -> None:
        """The task(s) of one call site: one variant per distinct set of arguments."""
        first = group[0]
        self._prerequisites(group)
        if first.operation == "server.shell" and not first.guards:
            raise ExportError(
                f"{first.where()}: a command that runs on every converge cannot be idempotent; "
                "gate it with _if=<operation>.did_change or use an idempotent operation"
            )
        variants: dict[str, tuple[list[dict[str, Any]], list[str]]] = {}
        for call in sorted(group, key=lambda c: c.host):
            host = self.hosts[call.host]
            entries = [self._entry(call, task, host) for task in to_tasks(call)]
            key = canonical(entries)
            variants.setdefault(key, (entries, []))[1].append(call.host)
        is_handler = op_hash in self.topics
        count = sum(len(entries) for entries, _ in variants.values())
        number = 0
        for entries, on_hosts in variants.values():
            for entry in entries:
                number += 1
                item: dict[str, Any] = {"name": entry.pop("name")}
                if is_handler and count > 1:
                    item["name"] = f"{item['name']} ({number})"  # handler names are unique
                item.update(entry)
                if is_handler and item["name"] != self.topics[op_hash]:
                    item["listen"] = self.topics[op_hash]
                if on_hosts != self.role_hosts:
                    own = item.get("when")
                    guard = (
                        FIRST_OF_PLAY
                        if first.operation in ONCE_PER_RUN and on_hosts == self.role_hosts[:1]
                        else _when(on_hosts)
                    )
                    conditions = [guard, *([own] if isinstance(own, str) else own or [])]
                    item["when"] = conditions[0] if len(conditions) == 1 else conditions
                if op_hash in self.notifies and "ansible.builtin.stat" not in item:
                    item["notify"] = list(self.notifies[op_hash])  # (a stat never changes)
                for module in VALIDATING & item.keys() if op_hash in self.owes else ():
                    # The owed marker before the file changes (the notified handler also
                    # records it, for a change of owner or mode only).
                    args = dict(item[module])
                    args["validate"] = owed_validate(self.owes[op_hash], args.get("validate"))
                    item[module] = args
                if op_hash in self.registered and "ansible.builtin.stat" not in item:
                    if "register" not in item:
                        variable = f"{self.role}_changed_{len(self.registered_names())}"
                        item["register"] = variable
                    self.registered[op_hash].append(item["register"])
                if is_handler:
                    self.out.add_handler(item)
                else:
                    self.out.add_task(item)

    def _prerequisites(self, group: list[Call]) -> None:
        """What Ansible's modules need on the host that pyinfra's commands do not."""
        modules = {task.module for call in group[:1] for task in to_tasks(call)}
        if any(m.startswith("community.postgresql.") for m in modules) and not self.psycopg:
            self.psycopg = True
            self.out.add_task(dict(PSYCOPG))

    def registered_names(self) -> list[str]:
        return [v for names in self.registered.values() for v in names]

    def _entry(self, call: Call, task: Task, host: Host) -> dict[str, Any]:
        """One task as a YAML mapping, for one host: the host's own values made generic."""
        task_vars: dict[str, Any] = {}
        try:
            args = substitute_secrets(peers.own_values(plain(task.args), host), self.secrets)
        except TypeError as exc:
            raise ExportError(f"{call.where()}: {exc}") from None
        if task.template:
            role_path = task.template.removeprefix(f"{call.role}/")
            args["src"] = role_path
            self.out.templates[role_path] = task.template
            task_vars = self._derive_template_vars(call, task, host)
        elif task.template_vars:  # values the task reads from variables (per host)
            task_vars = self._derive_template_vars(call, task, host)
        for name, content in task.files.items():
            if self.out.files.get(name, content) != content:
                raise ExportError(f"{call.where()}: two different files named {name}")
            self.out.files[name] = content
        self.out.modules.add(task.module)
        entry: dict[str, Any] = {"name": capitalised(task.name), task.module: args}
        entry.update(plain(task.keywords))
        entry.update(_options(call))
        if "become_user" in entry:
            entry.setdefault("become", True)  # explicit beside become_user (partial-become)
        if task_vars:
            entry["vars"] = dict(sorted(task_vars.items()))
        return entry

    def _derive_template_vars(self, call: Call, task: Task, host: Host) -> dict[str, Any]:
        """Template variables that group_vars/defaults do not already give: derived per host
        (placed in group_vars or host_vars by ``peers``). One that another template of this
        host was given differently (a second instance of a service) is returned instead,
        as the task's own ``vars``."""
        own: dict[str, Any] = {}
        wanted = referenced_variables(task.template) if task.template else None
        visible = self.settings.visible(call.role, host)
        mine = self.host_vars.setdefault(host.name, {})
        for key, value in sorted(task.template_vars.items()):
            if wanted is not None and key not in wanted:
                continue
            try:
                value = plain(value)
            except TypeError as exc:
                raise ExportError(f"{call.where()}: template variable {key}: {exc}") from None
            if canonical(value) == canonical(visible.get(key, object())) and key not in mine:
                continue
            value = substitute_secrets(value, self.secrets)
            if key in mine and canonical(mine[key]) != canonical(value):
                own[key] = peers.own_values(value, host)
                continue
            mine[key] = value
            self.out.derived.setdefault(host.name, {})[key] = value
        return own


# -- the whole project -------------------------------------------------------------------------


@dataclass
class Recording:
    """What the recorder hands over: everything the export is made from."""

    env: str
    kind: str  # local | aws
    roles: list[str]  # deploy order
    hosts: list[Host]
    calls: list[Call]  # in pyinfra's operation order
    secrets: dict[str, str]  # name -> value, as the deploys asked for them
    group_data: GroupData
    secret_source: SecretSource
    overrides: dict[str, Any] = field(default_factory=dict)  # --set KEY=VALUE, for every host
    static_assets: StaticAssets | None = None  # AWS: what a release puts in the CDN's bucket


@dataclass(frozen=True)
class StaticAssets:
    """A release's content-hashed assets and the bucket CloudFront serves ``/static/*``
    from (``mahaops/release/assets.py``), for a play that publishes them first."""

    bucket: str
    region: str
    profile: str
    files: dict[str, bytes]  # hashed name -> content

    def play(self) -> dict[str, Any]:
        from mahaops.release.assets import IMMUTABLE, content_type

        connection = {"region": self.region, **({"profile": self.profile} if self.profile else {})}
        return {
            "name": "The release's static assets in the CDN's bucket, before any host switches",
            "hosts": lifecycle.CONTROL,
            "connection": "local",
            "gather_facts": False,
            "tasks": [
                {
                    # Content-hashed names: an object of that name holds these bytes already,
                    # and uploads are never deleted (older pages still name theirs).
                    "name": "Upload each asset the bucket does not have (static/<hashed name>)",
                    "amazon.aws.s3_object": {
                        "bucket": self.bucket,
                        "object": "static/{{ item.name }}",
                        "src": "{{ playbook_dir }}/files/static/{{ item.name }}",
                        "mode": "put",
                        "overwrite": "never",
                        "metadata": {
                            "Content-Type": "{{ item.type }}",
                            "Cache-Control": IMMUTABLE,
                        },
                        **connection,
                    },
                    "loop": [
                        {"name": name, "type": content_type(name)} for name in sorted(self.files)
                    ],
                    "loop_control": {"label": "{{ item.name }}"},
                }
            ],
        }


ANSIBLE_CFG = """\
# Written by `invoke export-ansible` from the pyinfra deploys: edit the deploys, not this.
[defaults]
inventory = inventory.yml
roles_path = roles
interpreter_python = /usr/bin/python3
forks = 20
retry_files_enabled = False

[ssh_connection]
# One SSH round trip per module instead of three; also lets become_user work without acl.
pipelining = True
"""


RELEASE_HEADER = """\
Rolling release (invoke release): each app server alone, checked through its nginx before
the next, then the workers; the first failure stops it (the failing host switches back).
It rolls out the release this export carries: export again for a new one.
  ansible-playbook release.yml"""
SCALE_HEADER = """\
Scale out (invoke scale): add each new host to inventory.yml (under its kind and its role
group, with its connection) and host_vars/<host>.yml (its private_address, as its
siblings' files), then
  ansible-playbook scale.yml -e scale_hosts=app-3
Its roles converge, and the roles whose files list their peers re-render for it."""
REPLACE_HEADER = """\
Replace a host (invoke replace): the new host in, as scale.yml brings it, then the old
one out: drained from the load balancers, its services stopped. Add the new host to the
inventory first; afterwards remove the old one and run site.yml.
  ansible-playbook replace.yml -e replace_new=app-3 -e replace_old=app-1"""
HOST_VARS_HEADER = """\
What is this host's own: its inventory data (private_address: where its peers reach it),
settings given with --set, and what a deploy derived here that differs from its group's
value (group_vars/). A host added to inventory.yml needs its private_address here."""


def build(rec: Recording, collection_version: Callable[[str], str | None]) -> dict[str, bytes]:
    """Every file of the export, by path relative to the export directory."""
    # A role without hosts was not recorded (its deploy needs a host's facts): left out.
    recorded = {c.role for c in rec.calls}
    roles = [ROLE_BY_NAME[name] for name in rec.roles if name in recorded]
    hosts = {h.name: h for h in rec.hosts}
    settings = layout_settings(rec.group_data, roles, rec.overrides)
    files: dict[str, bytes] = {"ansible.cfg": ANSIBLE_CFG.encode()}
    host_vars: dict[str, dict[str, Any]] = {h: dict(settings.overrides) for h in hosts}
    modules: set[str] = set()
    plays = []
    errors: list[str] = []
    derived: dict[str, dict[str, dict[str, Any]]] = {}  # role -> host -> variable -> value
    for role in roles:
        calls = [c for c in rec.calls if c.role == role.name]
        out = build_role(role.name, calls, hosts, settings, rec.secrets, host_vars)
        errors += out.errors
        derived[role.name] = out.derived
        modules |= out.modules
        base = f"roles/{role.name}"
        files[f"{base}/tasks/main.yml"] = yaml_file(
            out.tasks, f"{role.title}: recorded from deploys/{role.name}.py"
        )
        if out.handlers:
            files[f"{base}/handlers/main.yml"] = yaml_file(
                out.handlers, f"{role.title}: changes that deploys/{role.name}.py reacts to"
            )
        files[f"{base}/defaults/main.yml"] = yaml_file(
            settings.role_defaults[role.name],
            f"Defaults of the {role.name} settings (mahaops/settings/); "
            "group_vars/ hold group_data",
        )
        for role_path, source in sorted(out.templates.items()):
            files[f"{base}/templates/{role_path}"] = (TEMPLATES / source).read_bytes()
        for name, content in sorted(out.files.items()):
            files[f"{base}/files/{name}"] = content
        plays.append(
            {
                "name": capitalised(role.title),
                "hosts": "all" if role == BASE else role.group,
                "gather_facts": False,  # no task reads facts: the deploys resolved them
                "roles": [{"role": role.name}],
            }
        )
    if errors:
        raise ExportError("\n".join(["cannot export faithfully:", *errors]))
    try:
        placed = peers.derive(
            derived, hosts, lambda h: plain(settings.visible("", h)), exported_keys()
        )
    except ExportError as exc:
        raise ExportError(f"cannot export faithfully: {exc}") from None
    first = [rec.static_assets.play()] if rec.static_assets else []
    if rec.static_assets:
        for name, content in sorted(rec.static_assets.files.items()):
            files[f"files/static/{name}"] = content
        modules.add("amazon.aws.s3_object")
    files["site.yml"] = yaml_file(
        [*first, *plays], f"Environment {rec.env}: every role, in deploy order"
    )
    reads_inventory = {
        role
        for role, by_host in derived.items()
        for values in by_host.values()
        for key in values
        if key in peers.PEERS
    }
    for name, playbook, header in (
        ("release.yml", first + lifecycle.release(roles), RELEASE_HEADER),
        ("scale.yml", lifecycle.scale(roles, reads_inventory), SCALE_HEADER),
        ("replace.yml", lifecycle.replace(roles), REPLACE_HEADER),
    ):
        if playbook:
            files[name] = yaml_file(playbook, header)
    if any(r.name == "lb" for r in roles):
        files["files/haproxy-drain.py"] = lifecycle.HAPROXY_DRAIN.encode()
    files["inventory.yml"] = yaml_file(inventory(rec.hosts), f"Hosts of environment {rec.env}")

    used_secrets = sorted(rec.secrets)
    for group in sorted({*settings.group_vars, *placed.groups}):
        data = dict(settings.group_vars.get(group, {}))
        data.update(sorted(placed.groups.get(group, {}).items()))
        if group == "all":
            if used_secrets:
                data.update(rec.secret_source.common())
            data.update({f"{SECRET_PREFIX}{n}": rec.secret_source.lookup(n) for n in used_secrets})
        if data:
            files[f"group_vars/{group}.yml"] = yaml_file(
                data, f"From group_data/{group}.py and the settings' defaults"
            )
    for name, host in sorted(hosts.items()):
        values = {
            **plain(host.data),
            **settings.overrides,
            **dict(sorted(placed.hosts.get(name, {}).items())),
        }
        if values:
            files[f"host_vars/{name}.yml"] = yaml_file(values, HOST_VARS_HEADER)

    collections = sorted({m.rsplit(".", 1)[0] for m in modules} - {"ansible.builtin"})
    if rec.kind == "aws" and used_secrets:
        collections = sorted({*collections, "amazon.aws"})
    requirements = []
    for name in collections:
        version = collection_version(name)
        requirements.append({"name": name, **({"version": f">={version}"} if version else {})})
    files["requirements.yml"] = yaml_file(
        {"collections": requirements},
        "Bundled with the `ansible` package on PyPI (no Galaxy needed)",
    )
    _no_secret_in(files, rec.secrets)
    return files


def inventory(hosts: list[Host]) -> dict[str, Any]:
    kinds = sorted({h.groups[0] for h in hosts})
    children: dict[str, Any] = {}
    for kind in kinds:
        children[kind] = {
            "vars": {"ansible_group_priority": KIND_PRIORITY},
            "hosts": {
                h.name: plain(h.connection)
                for h in sorted(hosts, key=lambda h: h.name)
                if h.groups[0] == kind
            },
        }
    for group in GROUPS:
        members = sorted(h.name for h in hosts if group in h.groups[1:])
        entry: dict[str, Any] = {"vars": {"ansible_group_priority": ROLE_PRIORITY}}
        if members:
            entry["hosts"] = {name: {} for name in members}
        children[group] = entry
    return {"all": {"children": children}}


def _no_secret_in(files: Mapping[str, bytes], secrets: Mapping[str, str]) -> None:
    """The last guard: no secret value is written into the export, whatever the mapping did."""
    for path, content in files.items():
        for name, value in secrets.items():
            if value and value.encode() in content:
                raise ExportError(f"secret {name} would be written in plain text to {path}")
