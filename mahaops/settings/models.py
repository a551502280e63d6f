"""The base of every settings model, and the registry of models by group_data file.

Each role's module (``base.py``, ``db.py`` ...) imports only this module; the package
(``mahaops.settings``) imports every role module, so asking it which models check a
group always sees them all, and nothing here imports back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo, field_validator

# C0 controls and DEL: a newline in a value would start a new line in the config file it
# is written to (a second directive, or a second sysctl), so none is ever accepted.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _control_character_at(value: Any, where: str) -> str | None:
    """The first control character in ``value`` (strings, list items, dict keys and values)
    and where it is, e.g. ``U+000A in redis_save``; None when there is none."""
    if isinstance(value, str):
        found = _CONTROL.search(value)
        return f"U+{ord(found.group()):04X} in {where}" if found else None
    if isinstance(value, dict):
        parts = [(f"a key of {where}", k) for k in value]
        parts += [(f"{where}[{k!r}]", v) for k, v in value.items()]
    elif isinstance(value, list | tuple | set | frozenset):
        parts = [(f"{where}[{i}]", v) for i, v in enumerate(value)]
    else:
        return None
    return next((f for w, v in parts if (f := _control_character_at(v, w))), None)


class Record(BaseModel):
    """A strictly typed value: no coercion (``True`` is not the port 1, ``"22"`` not 22)
    and no control character in any string, however deeply nested."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_control_characters(cls, value: Any, info: ValidationInfo) -> Any:
        found = _control_character_at(value, info.field_name or "value")
        if found:
            raise ValueError(f"a control character ({found}): settings are single lines")
        return value


class Settings(Record):
    """A role's settings: every field prefixed by the role, defaulted, documented."""

    model_config = ConfigDict(validate_default=True)


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


def _fingerprint(value: str) -> str:
    if value and not re.fullmatch(r"[0-9A-F]{40}", value):
        raise ValueError(f"{value!r} is not a key fingerprint (40 upper-case hex digits)")
    return value


# A vendor signing key's pinned fingerprint; "" pins nothing, so every key is refused.
Fingerprint = Annotated[str, AfterValidator(_fingerprint)]
