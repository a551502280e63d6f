"""Benchmark: a no-op converge of the whole local platform, pyinfra against the exported
Ansible project on the same hosts, at several platform sizes (`invoke bench-platform`).

For each size: a throw-away environment of that many hosts (``SHAPES``) converged by
``up``; then pyinfra's no-op run, timed as an operator runs it (the whole command,
process start included), a few times; the export; then ``ansible-playbook site.yml``
against the very same hosts, forks set to the host count, the same number of times.
Both should change nothing: the changes each counted are printed beside the times, so
a figure bought by skipping work would show.
"""

from __future__ import annotations

import io
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mahaops.ansible_export import export
from mahaops.ansible_export.playbook import run_playbook
from mahaops.local import platform
from mahaops.local.hosts import Environment
from mahaops.runner import run_deploy

# Hosts per role at each size: the default platform, and one with more app servers and
# workers (the roles a growing platform adds).
SHAPES: dict[int, dict[str, int]] = {
    7: {"lb": 1, "app": 2, "db": 1, "cache": 1, "log": 1, "worker": 1},
    16: {"lb": 1, "app": 6, "db": 1, "cache": 1, "log": 1, "worker": 6},
}


@dataclass
class SizeResult:
    hosts: int
    converge: float  # the fresh `up`, for scale
    export: float
    pyinfra: list[float] = field(default_factory=list)
    ansible: list[float] = field(default_factory=list)
    pyinfra_changed: int = 0
    ansible_changed: int = 0
    changed_names: set[str] = field(default_factory=set)  # what a no-op run changed, by tool

    @property
    def ratio(self) -> float:
        return statistics.median(self.ansible) / statistics.median(self.pyinfra)


def measure(size: int, rounds: int, console: Console) -> SizeResult:
    env = f"benchp{secrets.token_hex(2)}"
    environment = Environment(env)
    try:
        console.print(f"[bold]•[/] {size} hosts: creating and converging them (`up`)")
        started = time.perf_counter()
        quiet = Console(file=io.StringIO())  # the bench's own lines only
        up = platform.up(env, console=quiet, capture=True, quiet=True, hosts_per_role=SHAPES[size])
        if not up.deploy.ok:
            raise RuntimeError(f"the {size}-host platform did not converge:\n{up.deploy.output}")
        names = sorted(h.name for h in up.hosts)
        result = SizeResult(size, time.perf_counter() - started, 0.0)
        for round_ in range(1, rounds + 1):
            console.print(f"[bold]•[/] {size} hosts: pyinfra no-op {round_}/{rounds}")
            mark = time.perf_counter()
            run = run_deploy(env, quiet=True, capture=True)
            result.pyinfra.append(time.perf_counter() - mark)
            if not run.ok:
                raise RuntimeError(f"pyinfra no-op failed:\n{run.output[-3000:]}")
            result.pyinfra_changed += len(run.changed)
            result.changed_names |= {f"pyinfra: {op.host} {op.name}" for op in run.changed}
        with tempfile.TemporaryDirectory(prefix="maha-bench-platform-") as tmp:
            project = Path(tmp) / "project"
            console.print(f"[bold]•[/] {size} hosts: exporting the Ansible project")
            mark = time.perf_counter()
            exported = export(env, project)
            result.export = time.perf_counter() - mark
            if not exported.ok:
                raise RuntimeError(f"export failed:\n{exported.output[-3000:]}")
            for round_ in range(1, rounds + 1):
                console.print(f"[bold]•[/] {size} hosts: ansible-playbook no-op {round_}/{rounds}")
                mark = time.perf_counter()
                played = run_playbook(project, limit=names, extra=["--forks", str(len(names))])
                result.ansible.append(time.perf_counter() - mark)
                if not played.ok:
                    raise RuntimeError(f"ansible-playbook failed:\n{played.output[-3000:]}")
                result.ansible_changed += played.changed
                result.changed_names |= {
                    f"ansible: {', '.join(hosts)} {task}"
                    for task, hosts in played.changed_tasks.items()
                }
        return result
    finally:
        environment.remove(volumes=True)


def table(results: list[SizeResult]) -> Table:
    rounds = len(results[0].pyinfra) if results else 0
    out = Table(
        title=f"No-op converge of the local platform (median of {rounds}), same hosts",
        title_justify="left",
    )
    for column in ("hosts", "pyinfra", "ansible", "ratio", "changed p/a", "up, export"):
        out.add_column(column, justify="right", no_wrap=True)
    for r in results:
        out.add_row(
            str(r.hosts),
            f"{statistics.median(r.pyinfra):.1f}s",
            f"{statistics.median(r.ansible):.1f}s",
            f"{r.ratio:.1f}x",
            f"{r.pyinfra_changed} / {r.ansible_changed}",
            f"{r.converge:.0f}s, {r.export:.1f}s",
        )
    return out


def main(sizes: list[int], rounds: int = 3) -> list[SizeResult]:
    unknown = [s for s in sizes if s not in SHAPES]
    if unknown:
        raise SystemExit(f"--sizes: no shape for {unknown}; known: {sorted(SHAPES)}")
    console = Console()
    results = [measure(size, rounds, console) for size in sizes]
    console.print(table(results))
    for r in results:
        for name in sorted(r.changed_names):
            console.print(f"  {r.hosts} hosts, changed on a no-op run: {name}")
    return results
