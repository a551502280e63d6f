"""What scale, replace and remove decide before touching anything: hosts and peers."""

from __future__ import annotations

import pytest

from mahaops import firewall
from mahaops.lifecycle import plan
from mahaops.lifecycle.plan import Existing
from mahaops.local.hosts import LocalHost
from mahaops.local.platform import beyond_shape, missing_hosts
from mahaops.roles import role
from mahaops.settings import GroupData

PLATFORM = [
    Existing("lb-1", "lb", True),
    Existing("app-1", "app", True),
    Existing("app-2", "app", True),
    Existing("db-1", "db", True),
    Existing("cache-1", "cache", True),
    Existing("log-1", "log", True),
    Existing("worker-1", "worker", True),
]


def data_of(role_name: str) -> dict[str, object]:
    return GroupData().merged(("local", role(role_name).group))


def test_scaling_up_takes_the_lowest_free_names() -> None:
    hosts = [h for h in PLATFORM if h.name != "app-1"]  # app-1 was replaced by app-2 earlier
    changes = plan.scale("app", 3, hosts)
    assert changes.create == ["app-1", "app-3"] and not changes.remove


def test_scaling_down_removes_lost_hosts_first_then_the_highest_numbered() -> None:
    hosts = [*PLATFORM, Existing("app-3", "app", True), Existing("app-4", "app", False)]
    assert plan.scale("app", 3, hosts).remove == ["app-4"]
    down = plan.scale("app", 2, hosts)
    assert down.remove == ["app-3", "app-4"] and down.lost == ["app-4"]
    assert plan.scale("app", 1, hosts).remove == ["app-2", "app-3", "app-4"]


def test_scaling_to_the_same_count_starts_stopped_hosts_and_creates_nothing() -> None:
    hosts = [*PLATFORM[:2], Existing("app-2", "app", False), *PLATFORM[3:]]
    changes = plan.scale("app", 2, hosts)
    assert changes.restart == ["app-2"] and not changes.create and not changes.remove
    assert plan.scale("app", 2, PLATFORM).empty


def test_replace_makes_one_host_of_the_same_role_then_removes_the_old() -> None:
    changes = plan.replace("app-1", PLATFORM)
    assert (changes.role, changes.create, changes.remove) == ("app", ["app-3"], ["app-1"])
    assert plan.replace("worker-1", PLATFORM).create == ["worker-2"]


def test_only_the_shapes_roles_scale() -> None:
    with pytest.raises(ValueError, match="--role: 'base'"):
        plan.scale("base", 1, PLATFORM)
    with pytest.raises(ValueError, match="--count: -1"):
        plan.scale("app", -1, PLATFORM)


def test_an_unknown_host_is_refused_naming_the_hosts() -> None:
    with pytest.raises(ValueError, match=r"no host 'app-9'.*app-1"):
        plan.remove("app-9", PLATFORM)


def test_a_lost_host_is_removed_without_draining() -> None:
    hosts = [*PLATFORM[:1], Existing("app-1", "app", False), *PLATFORM[2:]]
    assert plan.remove("app-1", hosts).lost == ["app-1"]
    assert plan.remove("app-2", hosts).lost == []


def test_an_app_server_is_admitted_by_postgresql_redis_and_the_log_server_then_the_lb() -> None:
    peers = plan.peer_roles("app", data_of)
    assert {r: p.deploys for r, p in peers.items()} == {
        "db": ("base", "db"),  # nftables and pg_hba
        "cache": ("base",),  # nftables (Redis itself has no address list)
        "log": ("base",),  # nftables: every host ships logs
        "storage": ("base",),  # nftables: the app presigns for it
        "lb": ("lb",),  # HAProxy's backends
    }
    before, after = plan.split_peers("app", peers)
    assert [p.role for p in before] == ["db", "cache", "log", "storage"]
    assert [p.role for p in after] == ["lb"]


def test_a_worker_is_no_business_of_the_load_balancer() -> None:
    peers = plan.peer_roles("worker", data_of)
    assert set(peers) == {"db", "cache", "log", "mail", "storage"}  # mail, storage admit workers


def test_a_new_db_server_moves_its_clients_after_it_is_ready() -> None:
    peers = plan.peer_roles("db", data_of)
    before, after = plan.split_peers("db", peers)
    assert not before
    assert {p.role: p.deploys for p in after}.items() >= {
        ("app", ("app",)),
        ("worker", ("worker",)),
    }


def test_every_firewall_opening_to_a_group_has_its_peers() -> None:
    # A role admitting another role's group in mahaops/firewall.py re-runs base when a host
    # of that group comes or goes: the table cannot miss one the firewall declares.
    for peer in ("db", "cache", "log", "mail", "storage", "app", "lb"):
        for opening in firewall.role_openings(peer, data_of(peer)):
            for source in opening.sources:
                if source in (firewall.ANYONE, firewall.ADMINS):
                    continue
                changed = [
                    r for r in ("db", "cache", "log", "mail", "storage", "app", "worker", "lb")
                    if source in (firewall.ALL_HOSTS, role(r).group)
                ]  # fmt: skip
                for name in changed:
                    assert "base" in plan.peer_roles(name, data_of)[peer].deploys, (peer, name)


def _host(name: str, role_name: str) -> LocalHost:
    return LocalHost(name, role_name, "e", f"maha-e-{name}", "10.0.0.2", 22)


def test_up_makes_what_the_shape_lacks_without_remaking_a_replaced_name() -> None:
    existing = [_host("app-2", "app"), _host("app-3", "app"), _host("db-1", "db")]
    shape = {"app": 3, "db": 1, "cache": 1}
    assert missing_hosts(shape, existing) == [("app", "app-1"), ("cache", "cache-1")]
    assert missing_hosts({"app": 2, "db": 1}, existing) == []
    assert beyond_shape({"app": 1, "db": 1}, existing) == {"app": 1}
