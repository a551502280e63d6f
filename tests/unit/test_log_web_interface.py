"""Graylog's web interface is an admin's tool: it listens on loopback (reached through
`invoke logs.ui`) or the private address, and no default or setting admits "anywhere"."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from mahaops import firewall
from mahaops.settings.log import LogServerSettings

GRAYLOG = {"log_backend": "graylog"}


def web_rules(data: dict[str, object]) -> list[firewall.Rule]:
    openings = firewall.declared(["log"], {**GRAYLOG, **data})
    rules = firewall.rules(openings, ["0.0.0.0/0", "::/0"], {"all": ["10.0.0.5"]})
    return [r for r in rules if r.port == 9000]


def test_by_default_the_web_interface_is_on_loopback_and_no_port_is_opened() -> None:
    assert LogServerSettings().graylog_http_bind == "loopback"
    assert LogServerSettings().graylog_admin_cidrs == []
    # Even with SSH open to anywhere (base_admin_cidrs, the local default), 9000 stays closed.
    assert web_rules({}) == []


def test_on_the_private_address_only_the_named_admin_networks_are_admitted() -> None:
    data: dict[str, object] = {
        "graylog_http_bind": "private",
        "graylog_admin_cidrs": ["192.0.2.0/24"],
    }
    assert [(r.family, r.addresses) for r in web_rules(data)] == [("ip", ("192.0.2.0/24",))]
    assert web_rules({"graylog_http_bind": "private"}) == []  # none named: tunnel only


@pytest.mark.parametrize("anywhere", ["0.0.0.0/0", "::/0"])
def test_anywhere_is_refused_as_the_web_interfaces_admin_network(anywhere: str) -> None:
    with pytest.raises(ValidationError, match="whole internet"):
        LogServerSettings(graylog_admin_cidrs=["192.0.2.0/24", anywhere])
