"""Node.js is a supported LTS by default (issue 17): NodeSource's on every environment but
the local one, whose hosts reach no NodeSource and keep Debian 12's own package."""

from __future__ import annotations

from mahaops.settings import GroupData, from_data
from mahaops.settings.app import NodejsSettings

SUPPORTED_LTS = {20, 22, 24}  # LTS lines maintained upstream (20 to April 2026, 22 to 2027)


def nodejs(groups: tuple[str, ...]) -> NodejsSettings:
    return from_data(NodejsSettings, GroupData().merged(groups))


def test_app_servers_and_workers_run_a_supported_lts_from_nodesource_on_aws() -> None:
    for group in ("app_servers", "workers"):
        n = nodejs(("aws", group))
        assert n.nodejs_major in SUPPORTED_LTS
        assert n.nodejs_major != n.nodejs_distribution_major  # the NodeSource path


def test_the_local_platform_keeps_debian_s_package() -> None:
    for group in ("app_servers", "workers"):
        n = nodejs(("local", group))
        assert n.nodejs_major == n.nodejs_distribution_major == 18  # the Debian path


def test_the_default_itself_is_a_supported_lts() -> None:
    assert NodejsSettings().nodejs_major in SUPPORTED_LTS
