"""Typed settings: group_data/*.py files checked against pydantic models.

group_data files are plain Python modules of prefixed settings, as pyinfra
reads them. Each file is checked against the models of its group before any
host is touched: an unknown key or a value of the wrong type stops the run
with a message naming the file and the key.

Precedence, lowest first: model defaults, ``all.py``, the inventory kind's
overlay (``local.py`` or ``aws.py``), the role group's file (``db_servers.py``
...), the inventory's host data, then ``--set`` overrides.
"""

from __future__ import annotations

import difflib
import runpy
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from pydantic import ValidationError

from mahaops import PROJECT_ROOT
from mahaops.roles import ENV_KINDS

# Every role's models, registered with their groups as their modules load (they import
# only mahaops.settings.models, never this package's names).
from mahaops.settings import (  # noqa: F401
    app,
    aws,
    base,
    cache,
    db,
    lb,
    local,
    log,
    mail,
    storage,
    tls,
    worker,
)
from mahaops.settings.models import S, Settings, group_settings, registered

__all__ = [
    "DEFAULT_GROUP_DATA",
    "GroupData",
    "Settings",
    "SettingsError",
    "all_models",
    "check_values",
    "from_data",
    "group_models",
    "group_settings",
    "models_for_group",
    "parse_overrides",
    "read_group_file",
]

DEFAULT_GROUP_DATA = PROJECT_ROOT / "group_data"


class SettingsError(ValueError):
    """Bad input in a settings source, reported with its file (or source) and key."""

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        super().__init__(f"{source}: {key}: {message}")


def group_models() -> dict[str, tuple[type[Settings], ...]]:
    """Group -> the models registered for its file, as declared: the platform-wide ones
    are registered for ``all`` (and the kind overlays), each role's for its own group."""
    return registered()


def models_for_group(group: str) -> list[type[Settings]]:
    """Models checking ``group_data/<group>.py``: the group's own plus the platform-wide ones.

    An inventory kind's overlay (``local.py``, ``aws.py``) applies to every host of that
    kind, so it may set any role's settings (e.g. a smaller database on a laptop).
    """
    if group in ENV_KINDS:
        return all_models()
    by_group = registered()
    shared = by_group.get("all", ())
    return [*shared, *(m for m in by_group.get(group, ()) if m not in shared)]


def all_models() -> list[type[Settings]]:
    """Every settings model, once each."""
    seen: list[type[Settings]] = []
    for models in registered().values():
        seen.extend(m for m in models if m not in seen)
    return seen


def read_group_file(path: Path) -> dict[str, Any]:
    """The settings a group_data file defines: its public, non-module names."""
    namespace = runpy.run_path(str(path))
    return {
        key: value
        for key, value in namespace.items()
        if not key.startswith("_") and not isinstance(value, ModuleType) and not callable(value)
    }


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def check_values(source: str, values: Mapping[str, Any], models: Iterable[type[Settings]]) -> None:
    """Check ``values`` against ``models``; raise SettingsError naming ``source`` and the key."""
    models = list(models)
    known: dict[str, type[Settings]] = {}
    for model in models:
        for field in model.model_fields:
            known.setdefault(field, model)
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingsError(source, key, f"unknown setting{hint}")
    for model in models:
        subset = {k: v for k, v in values.items() if known[k] is model}
        if not subset:
            continue
        try:
            model.model_validate(subset)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = err["loc"]
            key = str(loc[0]) if loc else next(iter(subset))
            detail = ".".join(str(p) for p in loc[1:])
            where = f" (at {detail})" if detail else ""
            got = f" (got {err['input']!r})" if loc and len(loc) == 1 else ""
            raise SettingsError(source, key, f"{err['msg']}{where}{got}") from None


class GroupData:
    """The checked contents of a group_data directory."""

    def __init__(self, directory: Path = DEFAULT_GROUP_DATA) -> None:
        self.directory = directory
        self.files: dict[str, dict[str, Any]] = {}
        if not directory.is_dir():
            raise SettingsError(str(directory), "-", "group_data directory not found")
        for path in sorted(directory.glob("*.py")):
            if path.name.startswith("_"):
                continue
            group = path.stem
            source = _display(path)
            try:
                values = read_group_file(path)
            except Exception as exc:  # a syntax or name error in a settings file
                raise SettingsError(source, "-", f"cannot be read: {exc}") from None
            check_values(source, values, models_for_group(group))
            self.files[group] = values

    def merged(
        self,
        groups: Iterable[str],
        host_data: Mapping[str, Any] | None = None,
        overrides: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Settings for a host in ``groups`` (kind first, then role groups), lowest first."""
        data: dict[str, Any] = dict(self.files.get("all", {}))
        for group in groups:
            data.update(self.files.get(group, {}))
        data.update(host_data or {})
        data.update(overrides or {})
        return data


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs from the command line; VALUE is JSON when it parses as JSON."""
    import json

    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SettingsError("--set", pair, "expected KEY=VALUE")
        try:
            result[key] = json.loads(raw)
        except json.JSONDecodeError:
            result[key] = raw
    check_values("--set", result, all_models())
    return result


def from_data(model: type[S], data: Mapping[str, Any]) -> S:
    """Build ``model`` from a host's merged data, taking only the model's own keys."""
    return model.model_validate({k: data[k] for k in model.model_fields if k in data})
