"""What a deploy knows about its host and the inventory, as plain typed values."""

from __future__ import annotations

from typing import TypeVar

from pyinfra import host, inventory
from pyinfra.api.exceptions import NoGroupError

from mahaops.settings import Settings, from_data

S = TypeVar("S", bound=Settings)


def settings(model: type[S]) -> S:
    """The current host's settings for ``model``, already checked before the run began."""
    return from_data(model, host.data.dict())


def _addresses(group: str) -> list[str]:
    try:
        members = inventory.get_group(group)
    except NoGroupError:  # no host of that group in this inventory
        return []
    return sorted(
        str(h.data.get("private_address")) for h in members if h.data.get("private_address")
    )


def members(group: str) -> list[tuple[str, str]]:
    """(inventory name, private address) of the hosts in ``group``, by address."""
    try:
        found = inventory.get_group(group)
    except NoGroupError:
        return []
    return sorted(
        (
            (h.name, str(h.data.get("private_address")))
            for h in found
            if h.data.get("private_address")
        ),
        key=lambda pair: pair[1],
    )


def addresses(*groups: str) -> list[str]:
    """Private addresses of the hosts in ``groups``; ``all`` means every host."""
    found: set[str] = set()
    for group in groups:
        if group == "all":
            found.update(
                str(h.data.get("private_address"))
                for h in inventory
                if h.data.get("private_address")
            )
        else:
            found.update(_addresses(group))
    return sorted(found)


def host_roles() -> list[str]:
    """Role names of the current host, from its inventory groups."""
    from mahaops.roles import ROLE_BY_GROUP

    return [ROLE_BY_GROUP[g].name for g in host.groups if g in ROLE_BY_GROUP]
