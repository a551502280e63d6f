"""Every module of the project imports on its own: no import cycle breaks a lone import.

A cycle hides as long as modules happen to be imported in a lucky order; importing each
module first, in an interpreter that has loaded nothing of the project, exposes it. One
helper process loads the third-party libraries once, then forks a child per module (a
few at a time), so the check takes seconds, not a Python start per module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mahaops import PROJECT_ROOT

PACKAGES = ("mahaops", "deploys", "operations", "group_data", "inventories")

# Modules whose body may fail for a reason other than imports, and the error expected:
# the AWS inventory reads MAHA_ENV's description, and the check's environment has none.
EXPECTED_ERRORS = {"inventories.aws": "SettingsError"}

# Loaded once in the helper before forking: libraries only, never the project's modules.
LIBRARIES = (
    "pydantic",
    "pyinfra.api",
    "boto3",
    "botocore.session",
    "docker",
    "invoke",
    "fabric",
    "rich.console",
    "jinja2",
    "yaml",
)

_CHECKER = textwrap.dedent(
    """
    import importlib, json, os, sys, traceback

    modules, libraries, workers = json.loads(sys.argv[1])
    for library in libraries:
        try:
            importlib.import_module(library)
        except ImportError:
            pass
    sys.stdout.flush()

    def child(module):
        # Report through a pipe: the module may replace sys.stdout while it loads.
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            try:
                importlib.import_module(module)
                result = {"module": module}
            except BaseException as exc:
                result = {
                    "module": module,
                    "error": type(exc).__name__,
                    "import_error": isinstance(exc, ImportError),
                    "trace": traceback.format_exc(),
                }
            os.write(write, json.dumps(result).encode())
            os._exit(0)
        os.close(write)
        return module, pid, read

    def collect(module, pid, read):
        chunks = []
        while chunk := os.read(read, 65536):
            chunks.append(chunk)
        os.close(read)
        os.waitpid(pid, 0)
        died = {"module": module, "error": "died", "import_error": False}
        return json.loads(b"".join(chunks)) if chunks else died

    results, running, queue = [], [], list(modules)
    while queue or running:
        while queue and len(running) < workers:
            running.append(child(queue.pop(0)))
        results.append(collect(*running.pop(0)))
    print(json.dumps(results))
    """
)


def project_modules() -> list[str]:
    """Dotted names of every module under PACKAGES (``__main__`` modules aside: they run)."""
    names: list[str] = []
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
            if parts[-1] == "__main__" or not all(p.isidentifier() for p in parts):
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_alone(tmp_path: Path) -> None:
    modules = project_modules()
    assert "mahaops.hosts" in modules and "deploys.base" in modules
    env = {
        **os.environ,
        "MAHA_ENV": "import-check",  # an environment nobody described: inventories stay empty
        "MAHA_HOME": str(tmp_path / "maha-home"),
        "PYTHONPATH": str(PROJECT_ROOT),
    }
    workers = max(1, min(4, os.cpu_count() or 1))
    done = subprocess.run(
        [sys.executable, "-c", _CHECKER, json.dumps([modules, LIBRARIES, workers])],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(r["module"] for r in results) == sorted(modules)
    failures = [
        f"{r['module']}: {r.get('trace') or r['error']}"
        for r in results
        if "error" in r and (r["import_error"] or EXPECTED_ERRORS.get(r["module"]) != r["error"])
    ]
    assert not failures, "\n".join(failures)
