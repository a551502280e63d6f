"""On AWS the load balancer is no inventory host: the app servers' firewall must admit it
from its subnets (``nginx_real_ip_from``, set by the AWS inventory), or every health check
and request is dropped and the target never becomes healthy (found by the sim stand-in)."""

from __future__ import annotations

from mahaops import firewall
from mahaops.aws.security import _sources
from mahaops.settings.aws import AwsEnvironment


def nginx_rules(data: dict[str, object], groups: dict[str, list[str]]) -> list[firewall.Rule]:
    openings = firewall.declared(["app"], data)
    return [r for r in firewall.rules(openings, ["203.0.113.0/24"], groups) if r.port == 80]


def test_app_servers_admit_the_load_balancer_subnets_when_it_is_no_inventory_host() -> None:
    rules = nginx_rules({"nginx_real_ip_from": ["10.0.1.0/24", "10.0.2.9/24"]}, {})
    assert [r.addresses for r in rules] == [("10.0.1.0/24", "10.0.2.0/24")]


def test_without_trusted_proxies_only_the_load_balancer_hosts_reach_nginx() -> None:
    rules = nginx_rules({}, {"load_balancers": ["10.9.0.7"]})
    assert [r.addresses for r in rules] == [("10.9.0.7/32",)]
    assert nginx_rules({}, {}) == []  # nobody: nginx is closed


def test_a_network_source_is_a_security_group_cidr_rule_too() -> None:
    opening = firewall.Opening(80, "tcp", ("load_balancers", "10.0.1.0/24"), "nginx")
    spec = AwsEnvironment.model_construct(region="eu-west-1", ssh_public_key="k", admin_cidrs=[])
    assert _sources(opening, spec) == ["sg:lb", "10.0.1.0/24"]
