"""Playbooks that mirror the lifecycle commands for Ansible users (issue 13): a rolling
release (``invoke release``), scaling a role out (``invoke scale``) and replacing a host
(``invoke replace``). They run the exported roles; what a host does is the roles' own.

Peers follow the inventory (``peers.py``), so scaling out is: the new hosts in the
inventory with their host_vars, their roles converged, then the roles that read the
inventory re-run on their hosts (firewalls, pg_hba, load balancer backends...).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mahaops import firewall
from mahaops.lifecycle.plan import CONFIG_READERS
from mahaops.roles import BASE, ROLE_BY_NAME, Role


def capitalised(name: str) -> str:
    return name[:1].upper() + name[1:]


# Hosts named with -e (the first play stops the run without them); the default only lets
# the playbook parse (ansible-lint's syntax check): no host has that name.
UNNAMED = "'-e-names-no-host'"
SCALE_HOSTS = f"{{{{ scale_hosts | default({UNNAMED}) }}}}"
REPLACE_OLD = "replace_old"
REPLACE_NEW = "replace_new"
HAPROXY_SOCKET = "/run/haproxy/admin.sock"


def _named(*variables: str) -> dict[str, Any]:
    """A first play that stops the run unless the operator named the hosts (-e)."""
    return {
        "name": "The hosts are named on the command line",
        "hosts": "localhost",
        "gather_facts": False,
        "tasks": [
            {
                "name": f"The command line names {variable} (-e {variable}=HOST)",
                "ansible.builtin.assert": {
                    "that": [f"{variable} | default('') | length > 0"],
                    "fail_msg": f"name the hosts: -e {variable}=HOST",
                    "quiet": True,
                },
            }
            for variable in variables
        ],
    }


def _play(name: str, hosts: str, role: Role, **keywords: Any) -> dict[str, Any]:
    return {
        "name": name,
        "hosts": hosts,
        "gather_facts": False,
        **keywords,
        "roles": [{"role": role.name}],
    }


def release(roles: Sequence[Role]) -> list[dict[str, Any]]:
    """Each app server alone, in name order (migrations run on the first), checked through
    its nginx before the next; a failure stops the release. Then the workers."""
    plays: list[dict[str, Any]] = []
    names = {r.name: r for r in roles}
    if "app" in names:
        play = _play(
            "Release on the app servers, one at a time",
            names["app"].group,
            names["app"],
            serial=1,
            order="sorted",
            max_fail_percentage=0,
            any_errors_fatal=True,
        )
        play["post_tasks"] = [
            {
                "name": "The app server answers its health check through nginx",
                "ansible.builtin.uri": {
                    "url": "http://127.0.0.1:{{ nginx_listen_port }}{{ app_health_path }}",
                    "status_code": 200,
                },
                "register": "app_release_health",
                "until": "app_release_health.status == 200",
                "retries": "{{ app_health_retries }}",
                "delay": "{{ app_health_interval | int }}",
            }
        ]
        plays.append(play)
    if "worker" in names:
        plays.append(
            _play(
                "Release on the workers, once every app server runs it",
                names["worker"].group,
                names["worker"],
                order="sorted",
                max_fail_percentage=0,
                any_errors_fatal=True,
            )
        )
    return plays


# Groups scale.yml fills at run time: the new hosts (the pattern named with -e, resolved),
# and per role the other hosts whose files list a new host (``peers_group``).
NEW_GROUP = "maha_scale_new"
NEW_GROUPS = "scale_new_groups"  # the new hosts' inventory groups, a play variable


def peers_group(role: Role) -> str:
    return f"maha_scale_peers_{role.name}"


def _readers(role: Role) -> list[str]:
    """The groups whose hosts ``role``'s files list (``invoke scale``'s CONFIG_READERS)."""
    return sorted(
        ROLE_BY_NAME[changed].group
        for changed, readers in CONFIG_READERS.items()
        for peer, deploy, _why in readers
        if peer == role.name and deploy == role.name
    )


def _peer_condition(role: Role) -> str:
    """When a host that is not new re-runs ``role`` for the new hosts, as ``invoke scale``
    decides it (mahaops/lifecycle/plan.py): base where its firewall admits a new host's group
    or every host (mahaops/firewall.py), or where it ships logs to a new log server; another
    role on the hosts of its group whose files list a new host's group."""
    if role == BASE:
        shippers = sorted(
            ROLE_BY_NAME[changed].group
            for changed, readers in CONFIG_READERS.items()
            if any(deploy == BASE.name for _peer, deploy, _why in readers)
        )
        sources = "base_firewall_openings | map(attribute='sources') | flatten"
        return (
            f"base_firewall_openings is not defined"
            f" or ({sources} | intersect({NEW_GROUPS} + [{firewall.ALL_HOSTS!r}]) | length > 0)"
            f" or ({NEW_GROUPS} | intersect({shippers!r}) | length > 0)"
        )
    return (
        f"{role.group!r} in group_names"
        f" and ({NEW_GROUPS} | intersect({_readers(role)!r}) | length > 0)"
    )


def scale(roles: Sequence[Role], reads_inventory: set[str]) -> list[dict[str, Any]]:
    """Converge ``scale_hosts`` (already in the inventory, with their host_vars) and re-run
    the roles whose files list their peers, on the hosts whose files list the new ones (as
    ``invoke scale``: a new app server re-renders the db's pg_hba and firewall and the load
    balancer's backends, not the other app servers); in deploy order, so a new app server
    is admitted by the database before its health check, and reaches the load balancer
    only after."""
    rerun = [r for r in roles if r == BASE or r.name in reads_inventory]
    plays: list[dict[str, Any]] = [
        _named("scale_hosts"),
        {
            "name": "The new hosts are in the inventory and answer",
            "hosts": SCALE_HOSTS,
            "gather_facts": False,
            "any_errors_fatal": True,
            "tasks": [
                {
                    "name": "A new host has the private address its peers admit",
                    "ansible.builtin.assert": {
                        "that": ["private_address | default('') | length > 0"],
                        "fail_msg": "set private_address in host_vars/{{ inventory_hostname }}.yml",
                        "quiet": True,
                    },
                },
                {
                    "name": "Wait until the new host answers over SSH",
                    "ansible.builtin.wait_for_connection": {"timeout": 300},
                },
                {
                    "name": "The new hosts, as a group the next plays read",
                    "ansible.builtin.group_by": {"key": NEW_GROUP},
                    "changed_when": False,
                },
            ],
        },
        {
            # group_by runs on the control node: no host is contacted here.
            "name": "The hosts whose files list the new ones",
            "hosts": f"all:!{NEW_GROUP}",
            "gather_facts": False,
            "vars": {
                NEW_GROUPS: f"{{{{ groups[{NEW_GROUP!r}] | map('extract', hostvars, "
                "'group_names') | flatten | unique }}",
            },
            "tasks": [
                {
                    "name": f"Hosts that re-run {role.name} for the new ones",
                    "ansible.builtin.group_by": {"key": peers_group(role)},
                    "when": _peer_condition(role),
                    "changed_when": False,
                }
                for role in rerun
            ],
        },
    ]
    for role in roles:
        if role == BASE:
            plays.append(
                _play("Base system on the new hosts", SCALE_HOSTS, role, any_errors_fatal=True)
            )
            plays.append(
                _play("Base system on the others: firewalls admit them", peers_group(role), role)
            )
        elif role.name in reads_inventory:
            plays.append(
                _play(
                    f"{capitalised(role.title)}: the new hosts, and the others re-rendered",
                    f"{NEW_GROUP}:{peers_group(role)}:&{role.group}",
                    role,
                    any_errors_fatal=True,
                )
            )
        else:
            plays.append(
                _play(
                    f"{capitalised(role.title)}: the new hosts",
                    f"{SCALE_HOSTS}:&{role.group}",
                    role,
                    any_errors_fatal=True,
                )
            )
    return plays


def replace(roles: Sequence[Role]) -> list[dict[str, Any]]:
    """The new host in (as scale.yml), then the old one out: drained from the load
    balancers, its services stopped; the inventory is the operator's to edit."""
    plays: list[dict[str, Any]] = [
        _named(REPLACE_NEW, REPLACE_OLD),
        {
            "name": "The new host comes in as scale.yml brings it",
            "ansible.builtin.import_playbook": "scale.yml",
            "vars": {"scale_hosts": f"{{{{ {REPLACE_NEW} | default({UNNAMED}) }}}}"},
        },
    ]
    if any(r.name == "lb" for r in roles):
        plays.append(
            {
                "name": "The old host leaves the load balancers",
                "hosts": "load_balancers",
                "gather_facts": False,
                "any_errors_fatal": True,
                "tasks": [
                    {
                        "name": "Drain the old host, then take it out of service",
                        "ansible.builtin.script": {
                            "cmd": f"files/haproxy-drain.py {{{{ {REPLACE_OLD} | quote }}}}",
                            "executable": "python3",
                        },
                        "register": "lb_replace_drain",
                        "changed_when": "'changed' in lb_replace_drain.stdout",
                        "when": f"{REPLACE_OLD} in groups['app_servers'] | default([])",
                    }
                ],
            }
        )
    plays.append(
        {
            "name": "The old host stops serving",
            "hosts": f"{{{{ {REPLACE_OLD} | default({UNNAMED}) }}}}",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Stop the app's services (workers finish their jobs first)",
                    "ansible.builtin.systemd_service": {"name": "{{ item }}", "state": "stopped"},
                    "loop": ["maha-web", "maha-worker"],
                    "failed_when": False,
                },
                {
                    "name": "What is left to the operator",
                    "ansible.builtin.debug": {
                        "msg": f"Remove {{{{ {REPLACE_OLD} }}}} from inventory.yml and "
                        f"host_vars/, then run site.yml: its peers stop admitting it.",
                    },
                },
            ],
        }
    )
    return plays


# Run on a load balancer by replace.yml (files/haproxy-drain.py): through HAProxy's admin
# socket (no socat on the hosts), drain the server, wait until it holds no session, then
# put it in maintenance. Prints "changed" when it did something.
HAPROXY_DRAIN = f"""\
import socket
import sys
import time


def ask(command):
    with socket.socket(socket.AF_UNIX) as s:
        s.connect({HAPROXY_SOCKET!r})
        s.sendall(command.encode() + b"\\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out.decode()


def sessions(server):
    rows = [r.split(",") for r in ask("show stat").splitlines()]
    found = [r for r in rows if r[:2] == ["app_servers", server]]
    return int(found[0][4]) if found else None  # scur


server = sys.argv[1]
if sessions(server) is None:
    sys.exit(0)
ask(f"set server app_servers/{{server}} state drain")
for _ in range(60):
    if not sessions(server):
        break
    time.sleep(1)
ask(f"set server app_servers/{{server}} state maint")
print("changed")
"""
