"""Replacing a host that keeps data (db, cache, log): the new host on the old one's volumes."""

from __future__ import annotations

from mahaops.lifecycle import plan as planning
from mahaops.lifecycle.local import Lifecycle, LifecycleError


def takeover(life: Lifecycle, changes: planning.Changes, dry: bool = False) -> None:
    """Not built yet: refused before anything changes."""
    raise LifecycleError(
        f"replacing a {changes.role} host is not supported yet: its data lives on volumes "
        f"named after {changes.remove[0]} (`invoke down` and `up` keep and adopt them)"
    )
