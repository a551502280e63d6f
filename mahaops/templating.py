"""Jinja2 as both pyinfra and the exported Ansible roles render it.

Templates under templates/ are shared verbatim with the Ansible export, so they are
rendered here with Ansible's template-module defaults (trim_blocks on, trailing
newline kept) and only ever see plain variables: prefixed settings and a few derived
values, never pyinfra's ``host`` or ``state`` objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from mahaops import PROJECT_ROOT

TEMPLATES = PROJECT_ROOT / "templates"
# Passed to pyinfra's files.template, which already keeps the trailing newline.
JINJA_ENV_KWARGS: dict[str, Any] = {"trim_blocks": True}

_env = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    undefined=StrictUndefined,
    autoescape=False,  # config files, not HTML
    keep_trailing_newline=True,
    **JINJA_ENV_KWARGS,
)


def template_path(name: str) -> str:
    """Absolute path of ``templates/<name>``, for pyinfra's files.template."""
    path = TEMPLATES / name
    if not path.is_file():
        raise FileNotFoundError(f"no template {path}")
    return str(path)


def render(name: str, **variables: Any) -> str:
    return _env.get_template(name).render(**variables)


def relative(path: str | Path) -> str:
    return str(Path(path).resolve().relative_to(TEMPLATES))
