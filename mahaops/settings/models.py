"""The base of every settings model, and the registry of models by group_data file.

Each role's module (``base.py``, ``db.py`` ...) imports only this module; the package
(``mahaops.settings``) imports every role module, so asking it which models check a
group always sees them all, and nothing here imports back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    """A role's settings: every field prefixed by the role, defaulted, documented."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


S = TypeVar("S", bound=Settings)

# group name -> models whose keys may appear in that group's file, in registration order
_BY_GROUP: dict[str, list[type[Settings]]] = {}


def group_settings(*groups: str) -> Callable[[type[S]], type[S]]:
    """Register a settings model for the group_data files of ``groups``."""

    def register(model: type[S]) -> type[S]:
        for group in groups:
            _BY_GROUP.setdefault(group, []).append(model)
        return model

    return register


def registered() -> dict[str, tuple[type[Settings], ...]]:
    """Group -> models registered for it so far (a copy); ``mahaops.settings`` has them all."""
    return {group: tuple(models) for group, models in _BY_GROUP.items()}
