"""Writing the export to disk, replacing a previous export but nothing else."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from mahaops.ansible_export.model import ExportError
from mahaops.ansible_export.project import ANSIBLE_CFG


def is_export(path: Path) -> bool:
    cfg = path / "ansible.cfg"
    return cfg.is_file() and cfg.read_text().startswith(ANSIBLE_CFG.splitlines()[0])


def write(files: Mapping[str, bytes], out: Path) -> None:
    """Write ``files`` as the whole content of ``out`` (atomically swapped in)."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()) and not is_export(out):
        raise ExportError(f"{out} is not empty and holds no previous export: not overwriting")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for rel, content in sorted(files.items()):
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
            os.chmod(path, 0o644)
        os.chmod(staging, 0o755)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@functools.cache
def _collections_root() -> Path | None:
    spec = importlib.util.find_spec("ansible_collections")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def collection_version(name: str) -> str | None:
    """Version of a collection bundled with the installed ``ansible`` package, if any."""
    root = _collections_root()
    if root is None:
        return None
    manifest = root.joinpath(*name.split("."), "MANIFEST.json")
    if not manifest.is_file():
        return None
    return str(json.loads(manifest.read_text())["collection_info"]["version"])
