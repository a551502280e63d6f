"""The storage's S3 port is admitted from app servers, workers and the Docker gateway its
published port arrives from (browsers on the operator's machine), and from nobody else:
not the admin networks, which are 0.0.0.0/0 locally."""

from __future__ import annotations

from mahaops import firewall
from mahaops.local.hosts import LocalHost


def s3_rules(data: dict[str, object], groups: dict[str, list[str]]) -> list[firewall.Rule]:
    openings = firewall.declared(["storage"], data)
    return [r for r in firewall.rules(openings, ["0.0.0.0/0"], groups) if r.port == 9000]


def test_app_servers_workers_and_the_gateway_only() -> None:
    groups = {"app_servers": ["10.9.0.5", "10.9.0.6"], "workers": ["10.9.0.8"]}
    rules = s3_rules({"docker_gateway": "10.9.0.1"}, groups)
    assert [(r.family, r.addresses) for r in rules] == [
        ("ip", ("10.9.0.1/32", "10.9.0.5/32", "10.9.0.6/32", "10.9.0.8/32"))
    ]


def test_without_a_gateway_only_the_clients() -> None:
    rules = s3_rules({}, {"app_servers": ["10.9.0.5"]})
    assert [r.addresses for r in rules] == [("10.9.0.5/32",)]
    assert s3_rules({}, {}) == []  # nobody: closed


def test_the_port_follows_the_setting() -> None:
    openings = firewall.declared(["storage"], {"storage_port": 9443})
    assert [o.port for o in openings if o.comment.startswith("S3")] == [9443]


def test_a_local_host_tells_its_gateway() -> None:
    host = LocalHost("s-1", "storage", "t1", "c", "10.9.0.4", 2222, {9000: 32770}, "10.9.0.1")
    assert host.spec().data["docker_gateway"] == "10.9.0.1"
