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
from operations.apt import REPAIR_INTERRUPTED


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


# A new host that dies mid-run (scale.yml). Ansible drops a failed or unreachable host from
# the later plays, but ends the whole run when every host of a play failed in it: the
# control node is in each play that converges new hosts (ended at once: it runs nothing), so
# the death of every new host leaves the run going to its settling plays.
CONTROL = "localhost"
PENDING = "maha_scale_pending"  # true on a new host while a play converges it
# New hosts still pending between plays: those that died in one (a live host ends its play
# with the mark false). Evaluated on the control node.
DEAD = (
    f"groups[{NEW_GROUP!r}] | default([]) | map('extract', hostvars)"
    f" | selectattr({PENDING!r}, 'defined') | selectattr({PENDING!r})"
    " | map(attribute='inventory_hostname') | list"
)


def revoke_group(role: Role) -> str:
    return f"maha_scale_revoke_{role.name}"


def _new_in(role: Role) -> str:
    """The new hosts of ``role``'s group (a group: the control node must not be
    intersected away from a play's hosts)."""
    return f"{NEW_GROUP}_{role.group}"


def _leave_out_dead(once: bool = True) -> dict[str, Any]:
    """A new host that died is no peer's any more: with no private address, the inventory's
    peer lists (``peers.py``) leave it out, as the deploys leave out a host without one."""
    return {
        "name": "New hosts that died in this run leave their peers' lists",
        "ansible.builtin.set_fact": {"private_address": ""},
        "delegate_to": "{{ item }}",
        "delegate_facts": True,
        **({"run_once": True} if once else {}),
        "loop": f"{{{{ {DEAD} }}}}",
    }


def _pending(value: bool) -> dict[str, Any]:
    return {
        "name": "A new host converging" if value else "The new host came through this play",
        "ansible.builtin.set_fact": {PENDING: value},
        "when": f"inventory_hostname in groups[{NEW_GROUP!r}]",
    }


def _converging(play: dict[str, Any]) -> dict[str, Any]:
    """A play that converges new hosts: the control node keeps the run going if they all
    die, and each new host is marked pending until the play is through with it."""
    roles = play.pop("roles")
    return {
        **play,
        "pre_tasks": [
            _leave_out_dead(),
            _pending(True),
            {
                "name": "The control node only keeps the run going",
                "ansible.builtin.meta": "end_host",
                "when": f"inventory_hostname == {CONTROL!r}",
            },
        ],
        "roles": roles,
        "post_tasks": [_pending(False)],
    }


def _settle(rerun: Sequence[Role]) -> list[dict[str, Any]]:
    """The last plays: when new hosts died, the peers that were re-rendered for them are
    again, without them, and the run fails naming them. Nothing runs when none died."""
    plays: list[dict[str, Any]] = [
        {
            "name": "New hosts that died: their peers re-render without them",
            "hosts": CONTROL,
            "gather_facts": False,
            "tasks": [
                _leave_out_dead(once=False),
                *(
                    {
                        "name": f"Hosts that re-ran {role.name} for them, again",
                        "ansible.builtin.add_host": {
                            "name": "{{ item }}",
                            "groups": revoke_group(role),
                        },
                        "loop": f"{{{{ groups[{peers_group(role)!r}] | default([]) }}}}",
                        "when": f"{DEAD} | length > 0",
                        "changed_when": False,
                    }
                    for role in rerun
                ),
            ],
        }
    ]
    for role in rerun:
        plays.append(
            _play(
                f"{capitalised(role.title)} again on its peers, without the new hosts that died",
                revoke_group(role),
                role,
            )
        )
    plays.append(
        {
            "name": "The run fails if a new host died",
            "hosts": CONTROL,
            "gather_facts": False,
            "tasks": [
                {
                    "name": "No new host died",
                    "ansible.builtin.assert": {
                        "that": [f"{DEAD} | length == 0"],
                        "fail_msg": f"{{{{ {DEAD} | join(', ') }}}} failed during scale.yml:"
                        " its peers no longer admit it. Bring it back and run the same command"
                        " again, or remove it from inventory.yml and host_vars/.",
                        "quiet": True,
                    },
                }
            ],
        }
    )
    return plays


def scale(roles: Sequence[Role], reads_inventory: set[str]) -> list[dict[str, Any]]:
    """Converge ``scale_hosts`` (already in the inventory, with their host_vars) and re-run
    the roles whose files list their peers, on the hosts whose files list the new ones (as
    ``invoke scale``: a new app server re-renders the db's pg_hba and firewall and the load
    balancer's backends, not the other app servers); in deploy order, so a new app server
    is admitted by the database before its health check, and reaches the load balancer
    only after.

    A new host that fails or dies after the first play (as ``invoke scale``: the peers do
    not keep admitting a host that never came up, and the command names it):

    - Ansible leaves it out of the later plays; the control node is in each play that
      converges new hosts, ended at once, so that the run goes on even when every new host
      of a play died (Ansible ends a run at a play whose hosts all failed, and at any error
      under ``any_errors_fatal``, which these plays therefore do not set);
    - a new host is marked pending (a fact) while a play converges it, and unmarked at the
      play's end: between plays, a pending new host is one that died. Each play first gives
      those an empty ``private_address`` (a fact, over their host_vars' for this run), and
      every peer list leaves out a host without an address (``peers.py``): the plays after
      the death render their peers without it;
    - the last plays re-run each role on the hosts that re-ran it for the new ones (the
      peers that admitted it before it died), then fail naming the dead hosts. When none
      died their groups are empty: a scale that succeeds runs what it ran before.

    Rerunning the same command once the host is back converges it: its dpkg is repaired
    first if the death interrupted a package install.
    """
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
                    # A host that died during an install: apt refuses anything until then.
                    # The deploys' own repair (operations/apt.py): `dpkg --configure -a`
                    # alone fails when a dependency was never unpacked (nodejs without
                    # libnode108), so `apt-get -f install` follows whatever it answers.
                    "name": "Finish a package install an earlier run left half done",
                    "ansible.builtin.shell": REPAIR_INTERRUPTED,
                    "register": "scale_dpkg_repair",
                    "changed_when": "'dpkg was interrupted' in scale_dpkg_repair.stderr",
                },
                {
                    "name": "The new hosts, as a group the next plays read",
                    "ansible.builtin.group_by": {"key": NEW_GROUP},
                    "changed_when": False,
                },
                {
                    "name": "The new hosts of each role group",
                    "ansible.builtin.group_by": {"key": f"{NEW_GROUP}_{{{{ item }}}}"},
                    "loop": "{{ group_names }}",
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
                _converging(_play("Base system on the new hosts", f"{CONTROL}:{NEW_GROUP}", role))
            )
            peers = _play(
                "Base system on the others: firewalls admit them", peers_group(role), role
            )
            roles_ = peers.pop("roles")
            plays.append({**peers, "pre_tasks": [_leave_out_dead()], "roles": roles_})
        elif role.name in reads_inventory:
            plays.append(
                _converging(
                    _play(
                        f"{capitalised(role.title)}: the new hosts, and the others re-rendered",
                        f"{CONTROL}:{_new_in(role)}:{peers_group(role)}",
                        role,
                    )
                )
            )
        else:
            plays.append(
                _converging(
                    _play(
                        f"{capitalised(role.title)}: the new hosts",
                        f"{CONTROL}:{_new_in(role)}",
                        role,
                    )
                )
            )
    return [*plays, *_settle(rerun)]


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
