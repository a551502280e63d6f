"""Host-specific values in the export are variables, not tasks guarded by host names: what a
deploy derives from the inventory (firewall sources, pg_hba, backends) is a Jinja expression
over the exported inventory, so a host added to it by hand is admitted by its peers.

Host-free: hand-made calls like the deploys' (their values computed as the deploys compute
them), exported, then read back with real Ansible (``ansible -m debug`` runs on the control
node and connects to no host).
"""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mahaops import firewall
from mahaops.ansible_export.model import Call, Host
from mahaops.ansible_export.playbook import ansible_env, tool
from mahaops.ansible_export.project import FIRST_OF_PLAY, Recording, SecretSource, build
from mahaops.settings import GroupData

ADDRESSES = {
    "app-1": "10.9.0.4",
    "app-2": "10.9.0.5",
    "db-1": "10.9.0.2",
    "lb-1": "10.9.0.7",
    "log-1": "10.9.0.8",
}
GROUP = {"app": "app_servers", "db": "db_servers", "lb": "load_balancers", "log": "log_servers"}
CONNECTION = {"ansible_host": "127.0.0.1", "ansible_port": 2222, "ansible_become": True}


def host(name: str) -> Host:
    role = name.split("-")[0]
    return Host(
        name,
        ("local", GROUP[role]),
        dict(CONNECTION),
        {"private_address": ADDRESSES[name], "maha_role": role},
    )


def members(addresses: dict[str, str], group: str) -> list[str]:
    return sorted(a for n, a in addresses.items() if GROUP[n.split("-")[0]] == group)


# -- the values the deploys compute for an inventory ----------------------------------------


def firewall_rules(name: str, addresses: dict[str, str]) -> list[dict[str, Any]]:
    """deploys/base.py template_vars: base_firewall_rules."""
    role = name.split("-")[0]
    data = group_data(GROUP[role])
    openings = firewall.declared([role], data)
    groups = {g: members(addresses, g) for g in GROUP.values()}
    groups["all"] = sorted(addresses.values())
    admins = data.get("base_admin_cidrs", ["0.0.0.0/0", "::/0"])
    rules = firewall.rules(openings, admins, groups)
    return [{**r.__dict__, "addresses": list(r.addresses)} for r in rules]


def group_data(group: str) -> dict[str, Any]:
    """A host's group data as pyinfra merges it: all, the kind's overlay, its group."""
    files = GroupData().files
    return {**files.get("all", {}), **files.get("local", {}), **files.get(group, {})}


def pg_clients(addresses: dict[str, str]) -> list[str]:
    """deploys/db.py template_vars: postgresql_client_addresses."""
    return [str(ipaddress.ip_network(a)) for a in members(addresses, "app_servers")]


def backends(addresses: dict[str, str]) -> list[dict[str, Any]]:
    """deploys/lb.py app_servers()."""
    return [
        {"name": n, "address": a, "port": 80}
        for n, a in sorted(addresses.items())
        if n.startswith("app-")
    ]


def sshd_expected(name: str) -> dict[str, str]:
    return {"port": "22", "allowtcpforwarding": "yes" if name.startswith("log-") else "no"}


def template(name: str, role: str, op_hash: str, src: str, data: dict[str, Any]) -> Call:
    return Call(
        host=name,
        role=role,
        op_hash=op_hash,
        operation="files.template",
        name=f"Write {src}",
        location=f"deploys/{role}.py:1",
        arguments={
            "src": src,
            "dest": f"/etc/{src.rsplit('/', 1)[-1].removesuffix('.j2')}",
            "user": "root",
            "group": "root",
            "mode": "644",
            "create_remote_dir": True,
            "jinja_env_kwargs": {"trim_blocks": True},
            "data": data,
        },
        defaults={},
    )


def calls() -> list[Call]:
    result = []
    for name in sorted(ADDRESSES):
        rules = firewall_rules(name, ADDRESSES)
        result.append(
            template(name, "base", "fw", "base/nftables.conf.j2", {"base_firewall_rules": rules})
        )
        # log_shipping: the log server's address and the name its certificate must carry.
        log = {"log_server": ADDRESSES["log-1"], "log_server_name": "log-1"}
        result.append(template(name, "base", "fwd", "log/rsyslog-forward.conf.j2", log))
        result.append(
            Call(
                host=name,
                role="base",
                op_hash="sshd",
                operation="operations.sshd.effective",
                name="sshd applies the hardened settings (sshd -T)",
                location="deploys/base.py:166",
                arguments={"expected": sshd_expected(name), "pending": False},
                defaults={},
            )
        )
    result.append(
        template(
            "db-1",
            "db",
            "hba",
            "db/pg_hba.conf.j2",
            {"postgresql_client_addresses": pg_clients(ADDRESSES)},
        )
    )
    result.append(
        template("lb-1", "lb", "haproxy", "lb/haproxy.cfg.j2", {"lb_backends": backends(ADDRESSES)})
    )
    for name in ("app-1", "app-2"):
        result.append(
            template(name, "app", "unit", "app/maha-web.service.j2", {"app_server_name": name})
        )
    result.append(
        Call(
            host="app-1",
            role="app",
            op_hash="migrate",
            operation="operations.release.migrated",
            name="Migrate the database for r1",
            location="deploys/app.py:200",
            arguments={
                "release_id": "r1",
                "user": "maha-app",
                "root": "/srv/maha",
                "command": "node src/migrate.js",
                "allow_breaking": False,
            },
            defaults={},
        )
    )
    return result


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return build(
        Recording(
            env="t1",
            kind="local",
            roles=["base", "db", "app", "lb"],
            hosts=[host(n) for n in sorted(ADDRESSES)],
            calls=calls(),
            secrets={},
            group_data=GroupData(),
            secret_source=SecretSource("local", "t1", "/nonexistent/secrets.json"),
        ),
        lambda _name: None,
    )


def test_no_exported_task_is_guarded_by_host_names(files: dict[str, bytes]) -> None:
    task_files = [p for p in files if "/tasks/" in p or "/handlers/" in p]
    assert task_files
    for path in task_files:
        assert b"inventory_hostname in" not in files[path], path


def test_migrations_run_on_the_first_host_of_the_play_not_a_named_one(
    files: dict[str, bytes],
) -> None:
    tasks = yaml.safe_load(files["roles/app/tasks/main.yml"])
    [migrate] = [t for t in tasks if t["name"].startswith("Migrate")]
    assert migrate["when"] == FIRST_OF_PLAY


def test_the_inventory_says_how_to_reach_a_host_and_host_vars_what_is_its_own(
    files: dict[str, bytes],
) -> None:
    inventory = yaml.safe_load(files["inventory.yml"])
    assert inventory["all"]["children"]["local"]["hosts"]["db-1"] == CONNECTION
    own = yaml.safe_load(files["host_vars/db-1.yml"])
    assert own == {"private_address": "10.9.0.2", "maha_role": "db"}
    # Values the hosts of a group share are the group's: log servers check their own sshd.
    log_servers = yaml.safe_load(files["group_vars/log_servers.yml"])
    assert log_servers["base_sshd_expected"] == sshd_expected("log-1")
    assert yaml.safe_load(files["group_vars/all.yml"])["base_sshd_expected"] == sshd_expected(
        "app-1"
    )


def write(files: dict[str, bytes], root: Path) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def add_host(root: Path, name: str, group: str, address: str) -> None:
    """What an Ansible user does: an inventory entry in its group, and its host_vars."""
    path = root / "inventory.yml"
    inventory = yaml.safe_load(path.read_text())
    children = inventory["all"]["children"]
    children["local"]["hosts"][name] = dict(CONNECTION)
    children[group].setdefault("hosts", {})[name] = {}
    path.write_text(yaml.safe_dump(inventory))
    (root / "host_vars" / f"{name}.yml").write_text(
        yaml.safe_dump({"private_address": address, "maha_role": name.split("-")[0]})
    )


def ansible_vars(root: Path, pattern: str, *variables: str) -> dict[str, dict[str, Any]]:
    """Per host of ``pattern``, the variables as Ansible templates them (debug runs on the
    control node)."""
    wanted = ", ".join(f"{v!r}: {v}" for v in variables)
    message = f"msg={{{{ {{{wanted}}} | to_json }}}}"
    proc = subprocess.run(
        [tool("ansible"), pattern, "-o", "-m", "ansible.builtin.debug", "-a", message],
        cwd=root,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = {}
    for line in proc.stdout.splitlines():
        name, _, answer = line.partition(" | SUCCESS => ")
        if answer:
            found[name] = json.loads(json.loads(answer)["msg"])
    return found


def test_a_host_added_to_the_inventory_is_admitted_by_its_peers(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    write(files, tmp_path)
    add_host(tmp_path, "app-3", "app_servers", "10.9.0.6")
    after = {**ADDRESSES, "app-3": "10.9.0.6"}

    seen = ansible_vars(tmp_path, "all", "base_firewall_rules", "base_sshd_expected")
    db = ansible_vars(tmp_path, "db-1", "postgresql_client_addresses")["db-1"]
    assert db["postgresql_client_addresses"] == pg_clients(after)
    assert "10.9.0.6/32" in db["postgresql_client_addresses"]
    for name in ("db-1", "log-1", "app-3"):  # the db's and log server's firewalls admit it
        assert seen[name]["base_firewall_rules"] == firewall_rules(name, after), name
    lb = ansible_vars(tmp_path, "lb-1", "lb_backends")["lb-1"]
    assert lb["lb_backends"] == backends(after)

    # The new host itself: its own name, its group's sshd expectations.
    new = ansible_vars(tmp_path, "app-3", "app_server_name")["app-3"]
    assert new == {"app_server_name": "app-3"}
    assert seen["app-3"]["base_sshd_expected"] == sshd_expected("app-3")
    assert seen["log-1"]["base_sshd_expected"] == sshd_expected("log-1")


def test_the_existing_hosts_render_what_the_deploys_computed(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    write(files, tmp_path)
    seen = ansible_vars(tmp_path, "all", "base_firewall_rules")
    assert sorted(seen) == sorted(ADDRESSES)
    for name in sorted(ADDRESSES):
        assert seen[name]["base_firewall_rules"] == firewall_rules(name, ADDRESSES), name


def test_shippers_verify_the_name_of_the_log_server_the_inventory_has(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    write(files, tmp_path)
    seen = ansible_vars(tmp_path, "all", "log_server", "log_server_name")
    assert {n: v["log_server_name"] for n, v in seen.items()} == dict.fromkeys(ADDRESSES, "log-1")
    # A log server put in its place by hand (another name, a lower address) is the one named.
    add_host(tmp_path, "log-0", "log_servers", "10.9.0.1")
    seen = ansible_vars(tmp_path, "app-1", "log_server", "log_server_name")
    assert seen["app-1"] == {"log_server": "10.9.0.1", "log_server_name": "log-0"}


# -- scale.yml re-runs a role only where a file lists the new host ----------------------------


def _plays_hosts(
    root: Path, playbook: list[dict[str, Any]], extra: list[str]
) -> dict[str, list[str]]:
    """Per play of ``playbook`` (written beside the project's), the hosts it ran on. Runs on
    the control node: its tasks are group_by and debug only."""
    (root / "probe.yml").write_text(yaml.safe_dump(playbook, sort_keys=False))
    proc = subprocess.run(
        [tool("ansible-playbook"), "probe.yml", *extra],
        cwd=root,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    ran: dict[str, list[str]] = {}
    play = ""
    for line in proc.stdout.splitlines():
        if line.startswith("PLAY ["):
            play = line[len("PLAY [") :].split("]", 1)[0]
            ran[play] = []
        elif line.startswith("ok: [") and play:
            name = line[len("ok: [") :].split("]", 1)[0]
            if name not in ran[play]:
                ran[play].append(name)
    return {p: sorted(h) for p, h in ran.items()}


@pytest.mark.parametrize("new", ["app-3", "lb-2", "log-2"])
def test_scale_yml_re_runs_a_role_only_on_the_peers_invoke_scale_re_runs(
    files: dict[str, bytes], tmp_path: Path, new: str
) -> None:
    """The hosts each play of scale.yml reaches for a new host are those ``invoke scale``
    re-converges (mahaops/lifecycle/plan.py): a new app server re-renders the db's pg_hba
    and firewall, the log server's firewall and the load balancer's backends; the other app
    servers are not touched."""
    from mahaops.lifecycle.plan import peer_roles
    from mahaops.roles import ROLE_BY_NAME

    write(files, tmp_path)
    role = new.split("-")[0]
    add_host(tmp_path, new, GROUP[role], "10.9.0.9")
    plays = yaml.safe_load(files["scale.yml"])
    # The real playbook, each role's tasks replaced by a debug: which hosts, not what.
    probe = []
    for play in plays:
        play = dict(play)
        if "roles" in play:
            play["tasks"] = [{"ansible.builtin.debug": {"msg": "here"}}]
            del play["roles"]
        else:
            play["tasks"] = [t for t in play["tasks"] if "ansible.builtin.group_by" in t] or [
                {"ansible.builtin.debug": {"msg": "here"}}
            ]
        probe.append(play)
    ran = _plays_hosts(tmp_path, probe, ["-e", f"scale_hosts={new}"])

    peers = peer_roles(role, lambda r: group_data(ROLE_BY_NAME[r].group))

    def reruns(name: str) -> tuple[str, ...]:
        """What invoke scale re-converges on the existing host ``name``."""
        peer = peers.get(name.split("-")[0])
        return peer.deploys if peer else ()

    existing = sorted(ADDRESSES)
    for play in plays:
        if "roles" not in play:
            continue
        [ran_role] = [r["role"] for r in play["roles"]]
        if play["name"] == "Base system on the new hosts":
            expected = [new]
        elif play["name"].endswith("without the new hosts that died"):
            expected = []  # none died
        elif play["name"].endswith(": the new hosts"):  # the role reads no inventory here
            expected = [new] if ran_role == role else []
        else:
            expected = [h for h in existing if ran_role in reruns(h)]
            if ran_role != "base" and ran_role == role:
                expected.append(new)
        assert ran.get(play["name"], []) == sorted(expected), (play["name"], ran)


# -- scale.yml: a new host that dies leaves its peers' lists -----------------------------------

# What a probe's peer plays print: the pg_hba sources and the load balancer's backends.
_LISTS = (
    "{{ postgresql_client_addresses | default([]) | join(',') }}"
    " | {{ lb_backends | default([]) | map(attribute='name') | join(',') }}"
)
_CONTROL_NODE_ONLY = {
    "ansible.builtin.group_by",
    "ansible.builtin.add_host",
    "ansible.builtin.set_fact",
}


def test_a_new_host_that_dies_in_scale_yml_leaves_its_peers_lists_and_is_named(
    files: dict[str, bytes], tmp_path: Path
) -> None:
    """scale.yml's real plays, each role a debug printing the peer lists, and the new app
    server unreachable (nothing answers on its port) when its app role starts: the run goes
    on, the load balancer (after it) never lists it, the peers that admitted it before
    (base, the db's pg_hba) render again without it, and the run fails naming it."""
    write(files, tmp_path)
    new = "app-3"
    add_host(tmp_path, new, "app_servers", "10.9.0.9")
    own = tmp_path / "host_vars" / f"{new}.yml"
    own.write_text(own.read_text() + "ansible_port: 1\n")  # refused: it died
    probe = []
    for play in yaml.safe_load(files["scale.yml"]):
        play = dict(play)
        if "roles" in play:
            [role] = [r["role"] for r in play.pop("roles")]
            dies = role == "app" and "the new hosts" in play["name"]
            task = (
                {"ansible.builtin.ping": {}} if dies else {"ansible.builtin.debug": {"msg": _LISTS}}
            )
            play["tasks"] = [task]
        else:  # what runs on the control node (the final assert fails the run)
            play["tasks"] = [
                t
                for t in play["tasks"]
                if _CONTROL_NODE_ONLY & t.keys() or t["name"] == "No new host died"
            ] or [{"ansible.builtin.debug": {"msg": "here"}}]
        probe.append(play)
    (tmp_path / "probe.yml").write_text(yaml.safe_dump(probe, sort_keys=False))
    proc = subprocess.run(
        [tool("ansible-playbook"), "probe.yml", "-e", f"scale_hosts={new}"],
        cwd=tmp_path,
        env=ansible_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert f"{new} failed during scale.yml" in out, out
    printed: dict[str, dict[str, str]] = {}  # play -> host -> lists
    for chunk in proc.stdout.split("PLAY [")[1:]:
        name = chunk.split("]", 1)[0]
        for host_name, msg in re.findall(r'^ok: \[(\S+)\] => \{\n\s+"msg": (".*")$', chunk, re.M):
            printed.setdefault(name, {})[host_name] = json.loads(msg)
    admitting = "10.9.0.9/32"
    [db_play] = [p for p in printed if "re-rendered" in p and "db-1" in printed[p]]
    assert admitting in printed[db_play]["db-1"], printed  # admitted before it died
    [lb_play] = [p for p in printed if "re-rendered" in p and "lb-1" in printed[p]]
    assert new not in printed[lb_play]["lb-1"], printed  # after: never listed
    again = {p: hosts for p, hosts in printed.items() if p.endswith("that died")}
    assert {h for hosts in again.values() for h in hosts} >= {"db-1", "lb-1"}, printed
    for play_name, hosts in again.items():
        for host_name, lists in hosts.items():
            assert admitting not in lists and new not in lists, (play_name, host_name, lists)
