"""What a deploy derives from the inventory, exported so that the inventory can change.

pyinfra computes template variables from the hosts it sees (the db server's pg_hba
sources are the app servers' and workers' addresses; the load balancer's backends are
the app servers). Written as values, an exported project would only know the hosts of
its export. Here each such variable becomes:

- a Jinja expression over the inventory (``groups``, ``hostvars[h].private_address``),
  evaluated by Ansible per host at run time, when the deploy computes it from the
  inventory (``PEERS``); each expression is checked, at export time, to give on every
  recorded host exactly the value the deploy computed there;
- ``{{ inventory_hostname }}`` / ``{{ private_address }}`` where the value is the host's
  own name or address;
- otherwise one value for the role's group (``group_vars/<group>.yml``; base's: for each
  role group the hosts agree within, and ``all``), and ``host_vars/<host>.yml`` only for
  a host whose value differs from its group's (e.g. a PostgreSQL tuned to its host's
  memory): a host added by hand gets its group's values.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2.nativetypes import NativeEnvironment

from mahaops import firewall
from mahaops.ansible_export.model import ExportError, Host, Jinja
from mahaops.roles import BASE, GROUPS, ROLE_BY_GROUP, ROLE_BY_NAME
from mahaops.settings import from_data
from mahaops.settings.base import BaseSettings

OWN_NAME = Jinja("{{ inventory_hostname }}")
OWN_ADDRESS = Jinja("{{ private_address }}")


def addresses(*groups: str) -> str:
    """A Jinja expression: the sorted private addresses of the hosts in ``groups`` (as
    ``mahaops.context.addresses``: hosts without one are left out; ``all`` is every host)."""
    members = " + ".join(f"(groups[{g!r}] | default([]))" for g in groups)
    return (
        f"(({members}) | map('extract', hostvars) | selectattr('private_address', 'defined')"
        " | map(attribute='private_address') | select | map('string')"
        " | unique(case_sensitive=true) | sort(case_sensitive=true) | list)"
    )


def _networks(expression: str) -> str:
    """Bare addresses as one-host networks, as ``ipaddress.ip_network`` writes them (the
    order holds: ``/`` sorts before any character of an address)."""
    return (
        f"(({expression} | reject('search', ':') | map('regex_replace', '$', '/32') | list)"
        f" + ({expression} | select('search', ':') | map('regex_replace', '$', '/128') | list)"
        " | sort(case_sensitive=true))"
    )


# The nftables rules of mahaops.firewall.rules, from each host's openings (static, from its
# settings: base_firewall_openings) and the inventory's addresses at run time.
FIREWALL_RULES = (
    "{%- set ns = namespace(rules=[]) -%}"
    "{%- for o in base_firewall_openings -%}"
    "{%- if 'anyone' in o.sources -%}"
    "{%- set ns.rules = ns.rules + [{'port': o.port, 'proto': o.proto, 'family': '',"
    " 'addresses': [], 'comment': o.comment}] -%}"
    "{%- else -%}"
    "{%- set ns.nets = [] -%}"
    "{%- for source in o.sources -%}"
    "{%- if source == 'admins' -%}"
    "{%- set ns.nets = ns.nets + base_firewall_admin_networks -%}"
    "{%- elif '/' in source -%}"  # a network itself (mahaops.firewall.is_network)
    "{%- set ns.nets = ns.nets + [source] -%}"
    "{%- else -%}"
    "{%- set ns.nets = ns.nets + "
    + _networks(addresses("SOURCE")).replace("'SOURCE'", "source")
    + " -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- set nets = ns.nets | unique(case_sensitive=true) | sort(case_sensitive=true) -%}"
    "{%- if '0.0.0.0/0' in nets and '::/0' in nets -%}"
    "{%- set ns.rules = ns.rules + [{'port': o.port, 'proto': o.proto, 'family': '',"
    " 'addresses': [], 'comment': o.comment}] -%}"
    "{%- else -%}"
    "{%- for family in ['ip', 'ip6'] -%}"
    "{%- set subset = nets | select('search', ':') | list if family == 'ip6'"
    " else nets | reject('search', ':') | list -%}"
    "{%- if subset -%}"
    "{%- set ns.rules = ns.rules + [{'port': o.port, 'proto': o.proto, 'family': family,"
    " 'addresses': subset, 'comment': o.comment}] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{ ns.rules }}"
)

# deploys/lb.py app_servers(): the app servers by name, with their address and nginx port.
LB_BACKENDS = (
    "{%- set ns = namespace(backends=[]) -%}"
    "{%- for h in (groups['app_servers'] | default([])) | sort(case_sensitive=true) -%}"
    "{%- if hostvars[h].private_address | default('') -%}"
    "{%- set ns.backends = ns.backends + [{'name': h, 'address': hostvars[h].private_address,"
    " 'port': (hostvars[h].nginx_listen_port | default(80)) | int}] -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{ ns.backends }}"
)

# mahaops.context.host_roles(), joined as log_shipping's log_role.
LOG_ROLE = (
    "{{ ("
    + "{"
    + ", ".join(f"{g!r}: {ROLE_BY_GROUP[g].name!r}" for g in GROUPS)
    + "}.items() | list | selectattr('0', 'in', group_names) | map(attribute='1')"
    " | join(',')) or 'base' }}"
)

# log_shipping's log_server_name (mahaops.context.members): the inventory name of the log
# server at log_server's address, which its certificate must name.
LOG_SERVER_NAME = (
    f"{{%- set first = {addresses('log_servers')} | first -%}}"
    "{%- set ns = namespace(name='') -%}"
    "{%- for h in groups['log_servers'] | default([]) -%}"
    "{%- if not ns.name and (hostvars[h].private_address | default('') | string) == first -%}"
    "{%- set ns.name = h -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{ ns.name }}"
)


def _url_host(setting: str, group: str) -> Callable[[PeerContext, Host, Any], Jinja | None]:
    """A URL to the first host of ``group`` (deploys/app.py release_vars), unless
    ``setting`` names the host: its address follows the inventory."""
    first = f"{addresses(group)} | first | default('127.0.0.1')"

    def derive(ctx: PeerContext, host: Host, value: Any) -> Jinja | None:
        if ctx.hostvars[host.name].get(setting):
            return None  # set by the operator: not the inventory's
        address = ctx.evaluate(f"{{{{ {first} }}}}", host)
        text = str(value)
        marker = f"@{address}:"
        if text.count(marker) != 1:
            raise ExportError(f"{host.name}: the URL in {value!r} is not on {group}'s {address}")
        return Jinja(text.replace(marker, f"@{{{{ {first} }}}}:"))

    return derive


def _first_unless(setting: str, group: str) -> Callable[[PeerContext, Host, Any], Jinja | None]:
    """The first host of ``group``'s address, or "" (deploys/worker.py mail_vars), unless
    ``setting`` names the host: then it is the operator's, not the inventory's."""

    def derive(ctx: PeerContext, host: Host, value: Any) -> Jinja | None:
        if ctx.hostvars[host.name].get(setting):
            return None
        return Jinja(f"{{{{ {addresses(group)} | first | default('') }}}}")

    return derive


def _expression(template: str) -> Callable[[PeerContext, Host, Any], Jinja | None]:
    def derive(ctx: PeerContext, host: Host, value: Any) -> Jinja | None:
        return Jinja(template)

    return derive


# The db hosts' off-host store: the log server first by name (deploys/_backup_store.py).
STORE_TARGET = (
    "{{ (postgresql_backup_offhost_user ~ '@'"
    " ~ hostvars[groups['log_servers'] | sort | first].private_address)"
    " if postgresql_backup_offhost and (groups['log_servers'] | default([])) else '' }}"
)


# Template variables a deploy computes from the inventory, by name.
PEERS: dict[str, Callable[[PeerContext, Host, Any], Jinja | None]] = {
    "base_firewall_rules": _expression(FIREWALL_RULES),
    "log_server": _expression(f"{{{{ {addresses('log_servers')} | first }}}}"),
    "log_server_name": _expression(LOG_SERVER_NAME),
    "log_role": _expression(LOG_ROLE),
    "postgresql_client_addresses": _expression(
        f"{{{{ {_networks(addresses('app_servers', 'workers'))} }}}}"
    ),
    "nginx_real_ip_sources": _expression(
        f"{{{{ ({addresses('load_balancers')} + nginx_real_ip_from)"
        " | unique(case_sensitive=true) | sort(case_sensitive=true) }}"
    ),
    "lb_backends": _expression(LB_BACKENDS),
    "app_database_url": _url_host("app_database_host", "db_servers"),
    "app_redis_url": _url_host("app_redis_host", "cache_servers"),
    "app_queue_url": _url_host("app_redis_host", "cache_servers"),
    "worker_mail_sink": _expression(f"{{{{ {addresses('mail_servers')} | first | default('') }}}}"),
    "worker_smtp_address": _first_unless("worker_smtp_host", "mail_servers"),
    "postgresql_backup_offhost_target": _expression(STORE_TARGET),
}
# What the peer expressions read besides the inventory, per host: the host's own openings
# (static, from its settings) and its admin networks, as mahaops.firewall normalises them.
FIREWALL_INPUTS = ("base_firewall_openings", "base_firewall_admin_networks")


# -- checking expressions at export time -------------------------------------------------------


def _extract(item: Any, container: Any, morekeys: Any = None) -> Any:
    value = container[item]
    for key in [] if morekeys is None else morekeys if isinstance(morekeys, list) else [morekeys]:
        value = value[key]
    return value


def _regex_replace(value: Any, pattern: str, replacement: str) -> str:
    return re.sub(pattern, replacement, str(value))


def _search(value: Any, pattern: str) -> bool:
    return re.search(pattern, str(value)) is not None


# Jinja as Ansible runs it, for the few Ansible filters and tests the expressions use.
_ENV = NativeEnvironment()
_ENV.filters.update(extract=_extract, regex_replace=_regex_replace)
_ENV.tests.update(search=_search)


@dataclass
class PeerContext:
    """The exported inventory as Ansible will see it, to evaluate expressions at export."""

    hosts: Mapping[str, Host]
    hostvars: dict[str, dict[str, Any]]  # host -> what Ansible's hostvars hold

    def groups(self) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {"all": sorted(self.hosts)}
        for group in GROUPS:
            found[group] = sorted(h.name for h in self.hosts.values() if group in h.groups[1:])
        return found

    def evaluate(self, template: str, host: Host) -> Any:
        variables = {
            **self.hostvars[host.name],
            "groups": self.groups(),
            "hostvars": self.hostvars,
            "group_names": sorted(host.groups),
            "inventory_hostname": host.name,
        }
        return _ENV.from_string(template).render(variables)


# -- the host's own name and address -----------------------------------------------------------


def own_values(value: Any, host: Host) -> Any:
    """``value`` with the host's own name and private address as references to them."""
    address = host.data.get("private_address")
    if isinstance(value, str) and not isinstance(value, Jinja):
        if value == host.name:
            return OWN_NAME
        if address and value == str(address) and _is_address(value):
            return OWN_ADDRESS
        return value
    if isinstance(value, list):
        return [own_values(v, host) for v in value]
    if isinstance(value, dict):
        return {k: own_values(v, host) for k, v in value.items()}
    return value


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# -- firewall inputs ---------------------------------------------------------------------------


def firewall_inputs(host: Host, visible: Mapping[str, Any]) -> dict[str, Any]:
    """The static half of a host's firewall rules: its openings and admin networks."""
    roles = [ROLE_BY_GROUP[g].name for g in GROUPS if g in host.groups[1:]]
    openings = firewall.declared(roles, visible)
    # Read as the deploy reads it: an environment that leaves it to the default (any
    # address, as the AWS environments whose security group guards SSH) still opens SSH.
    cidrs = from_data(BaseSettings, visible).base_admin_cidrs
    admin = sorted({str(ipaddress.ip_network(c, strict=False)) for c in cidrs})
    return {
        "base_firewall_openings": [
            {"port": o.port, "proto": o.proto, "sources": list(o.sources), "comment": o.comment}
            for o in openings
        ],
        "base_firewall_admin_networks": admin,
    }


# -- placement ---------------------------------------------------------------------------------


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def role_groups(host: Host) -> tuple[str, ...]:
    return tuple(g for g in host.groups[1:] if g in ROLE_BY_GROUP)


@dataclass
class Placement:
    """Where derived variables land: group_vars files and host_vars files."""

    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_host(self, name: str, key: str, value: Any) -> None:
        self.hosts.setdefault(name, {})[key] = value

    def to_group(self, group: str, key: str, value: Any) -> bool:
        """False when the group already has another value for ``key``."""
        held = self.groups.setdefault(group, {})
        if key in held and canonical(held[key]) != canonical(value):
            return False
        held[key] = value
        return True


def _most_common(values: list[Any]) -> Any:
    counts = Counter(canonical(v) for v in values)
    best = max(counts.values())
    return next(v for v in values if counts[canonical(v)] == best)  # the first of them


def place(
    placement: Placement,
    role: str,
    values: Mapping[str, Any],
    key: str,
    hosts: Mapping[str, Host],
) -> None:
    """Place one variable ``role``'s deploy derived, ``values`` per host: one value for
    the role's group (base: for "all", and for each role group whose hosts differ from it),
    host_vars only for the hosts that differ from their group's value."""
    if ROLE_BY_NAME[role] != BASE:
        group = ROLE_BY_NAME[role].group
        common = _most_common(list(values.values()))
        placed = placement.to_group(group, key, common)
        for name, value in values.items():
            if not placed or canonical(value) != canonical(common):
                placement.to_host(name, key, value)
        return
    buckets: dict[str, list[str]] = {}
    for name in values:
        own = role_groups(hosts[name])
        buckets.setdefault(own[0] if len(own) == 1 else "all", []).append(name)
    default = _most_common([values[n] for n in buckets.get("all", values)])
    if not placement.to_group("all", key, default):
        for name, value in values.items():
            placement.to_host(name, key, value)
        return
    for bucket, names in sorted(buckets.items()):
        reference = default
        common = _most_common([values[n] for n in names])
        differs = bucket != "all" and canonical(common) != canonical(default)
        if differs and placement.to_group(bucket, key, common):
            reference = common
        for name in names:
            if canonical(values[name]) != canonical(reference):
                placement.to_host(name, key, values[name])


# -- the whole export ------------------------------------------------------------------------


def derive(
    derived: Mapping[str, Mapping[str, Mapping[str, Any]]],
    hosts: Mapping[str, Host],
    visible: Callable[[Host], dict[str, Any]],
    settings_keys: set[str],
) -> Placement:
    """Where the variables each role derived (role -> host -> key -> value) are written.

    ``visible(host)``: what Ansible's hostvars hold for ``host`` (group_vars, host data,
    --set), to check every expression against the values the deploys computed."""
    ctx = PeerContext(hosts, {name: visible(host) for name, host in hosts.items()})
    placement = Placement()
    by_role: dict[str, dict[str, dict[str, Any]]] = {}  # role -> key -> host -> value
    for role, by_host in derived.items():
        for name, values in by_host.items():
            for key, value in values.items():
                by_role.setdefault(role, {}).setdefault(key, {})[name] = value

    base_keys = by_role.get(BASE.name, {})
    if "base_firewall_rules" in base_keys:
        _firewall_inputs(placement, ctx, base_keys["base_firewall_rules"], hosts, visible)
    for role, keys in by_role.items():
        for key, values in sorted(keys.items()):
            if key in settings_keys:  # a setting the deploy passed differently: per host
                for name, value in values.items():
                    placement.to_host(name, key, value)
                continue
            exported = {name: _exported(ctx, key, hosts[name], v) for name, v in values.items()}
            place(placement, role, exported, key, hosts)
    return placement


def _exported(ctx: PeerContext, key: str, host: Host, value: Any) -> Any:
    """The value a host's variable is exported as: an expression over the inventory
    (checked to give ``value`` on this host), or ``value`` with the host's own name and
    address as references."""
    derive_peer = PEERS.get(key)
    expression = derive_peer(ctx, host, value) if derive_peer else None
    if expression is None:
        return own_values(value, host)
    secrets = (
        {n: f"{{{{ {n} }}}}" for n in re.findall(r"\{\{ (maha_secret_\w+) \}\}", value)}
        if isinstance(value, str)
        else {}
    )
    ctx.hostvars[host.name].update(secrets)
    got = ctx.evaluate(expression, host)
    if canonical(got) != canonical(value):
        raise ExportError(
            f"{key} on {host.name}: the inventory expression gives {got!r}, "
            f"the deploy computed {value!r}"
        )
    return expression


def _firewall_inputs(
    placement: Placement,
    ctx: PeerContext,
    rules: Mapping[str, Any],
    hosts: Mapping[str, Host],
    visible: Callable[[Host], dict[str, Any]],
) -> None:
    """Each host's openings and admin networks, which the firewall rules' expression reads:
    placed per role group, also for groups without a host yet (a host added later gets its
    group's openings)."""
    kind = next(iter(hosts.values())).groups[0]
    values: dict[str, dict[str, Any]] = {}
    every = dict(hosts)
    # Stand-ins: a host of no role group, and one of each group without a host.
    every["<none>"] = Host("<none>", (kind,), {}, {})
    for group in GROUPS:
        if not any(group in h.groups[1:] for h in hosts.values()):
            stand_in = Host(f"<{group}>", (kind, group), {}, {})
            every[stand_in.name] = stand_in
    for name, host in every.items():
        values[name] = firewall_inputs(host, visible(host))
        if name in rules:
            ctx.hostvars[name].update(values[name])
    for key in FIREWALL_INPUTS:
        place(placement, BASE.name, {n: v[key] for n, v in values.items()}, key, every)
    for name in list(placement.hosts):
        if name not in hosts:
            del placement.hosts[name]
