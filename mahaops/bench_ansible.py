"""Benchmark: pyinfra against the exported Ansible project (`invoke bench-ansible`).

Two sets of fresh test-bed hosts in a throw-away environment, one per tool, with the
same roles. Each tool converges its own hosts once (fresh), then converges them again
a few times with nothing to change (no-op). Both are timed as an operator runs them:
the whole command, process start included. The export itself is timed apart.
"""

from __future__ import annotations

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
from mahaops.local.hosts import Environment, LocalHost
from mahaops.runner import run_deploy

GOAL = 4.0  # pyinfra at least this many times faster than the playbook on a no-op run


@dataclass
class Timing:
    fresh: float = 0.0
    noop: list[float] = field(default_factory=list)
    changed_on_noop: int = 0

    @property
    def noop_median(self) -> float:
        return statistics.median(self.noop)


@dataclass
class Result:
    roles: list[str]
    hosts: int
    export_seconds: float
    pyinfra: Timing
    ansible: Timing

    @property
    def noop_ratio(self) -> float:
        return self.ansible.noop_median / self.pyinfra.noop_median

    @property
    def fresh_ratio(self) -> float:
        return self.ansible.fresh / self.pyinfra.fresh


def _timed_pyinfra(env: str, roles: list[str], hosts: list[LocalHost]) -> tuple[float, int]:
    started = time.perf_counter()
    result = run_deploy(env, roles=roles, limit=[h.name for h in hosts], quiet=True)
    elapsed = time.perf_counter() - started
    if not result.ok:
        raise RuntimeError(f"pyinfra converge failed:\n{result.output[-3000:]}")
    return elapsed, len(result.changed)


def _timed_ansible(project: Path, hosts: list[LocalHost]) -> tuple[float, int]:
    started = time.perf_counter()
    run = run_playbook(project, limit=[h.name for h in hosts])
    elapsed = time.perf_counter() - started
    if not run.ok:
        raise RuntimeError(f"ansible-playbook failed:\n{run.output[-3000:]}")
    return elapsed, run.changed


def measure(env: Environment, image: str, roles: list[str], rounds: int) -> Result:
    wanted = ["base", *(r for r in roles if r != "base")]
    placed = [r for r in wanted if r != "base"] or ["base"]  # one host per role
    mine = [env.create(r, image=image) for r in placed]
    theirs = [env.create(r, image=image) for r in placed]
    pyinfra, ansible = Timing(), Timing()

    pyinfra.fresh, _ = _timed_pyinfra(env.env, wanted, mine)
    for _ in range(rounds):
        seconds, changed = _timed_pyinfra(env.env, wanted, mine)
        pyinfra.noop.append(seconds)
        pyinfra.changed_on_noop += changed

    with tempfile.TemporaryDirectory(prefix="maha-bench-ansible-") as tmp:
        project = Path(tmp) / "project"
        started = time.perf_counter()
        exported = export(env.env, project, limit=[h.name for h in theirs])
        export_seconds = time.perf_counter() - started
        if not exported.ok:
            raise RuntimeError(f"export failed:\n{exported.output[-3000:]}")
        ansible.fresh, _ = _timed_ansible(project, theirs)
        for _ in range(rounds):
            seconds, changed = _timed_ansible(project, theirs)
            ansible.noop.append(seconds)
            ansible.changed_on_noop += changed
    return Result(wanted, len(mine), export_seconds, pyinfra, ansible)


def table(result: Result) -> Table:
    title = (
        f"pyinfra vs exported Ansible: roles {', '.join(result.roles)}, "
        f"{result.hosts} fresh host(s) per tool"
    )
    out = Table(title=title, title_justify="left")
    for column in ("run", "pyinfra", "ansible-playbook", "ansible / pyinfra"):
        out.add_column(column, justify="left" if column == "run" else "right")
    p, a = result.pyinfra, result.ansible
    out.add_row(
        "fresh converge", f"{p.fresh:.1f}s", f"{a.fresh:.1f}s", f"{result.fresh_ratio:.1f}x"
    )
    goal = "[green]" if result.noop_ratio >= GOAL else "[yellow]"
    out.add_row(
        f"no-op (median of {len(p.noop)})",
        f"{p.noop_median:.1f}s",
        f"{a.noop_median:.1f}s",
        f"{goal}{result.noop_ratio:.1f}x[/] (goal {GOAL:.0f}x)",
    )
    out.add_row("changed on no-op", str(p.changed_on_noop), str(a.changed_on_noop), "")
    out.add_row("export (once)", "", f"{result.export_seconds:.1f}s", "")
    return out


def main(roles: list[str], rounds: int = 3) -> Result:
    console = Console()
    env = Environment(f"bencha{secrets.token_hex(2)}")
    try:
        with console.status("Preparing the test bed"):
            image = env.prepare()
        with console.status(
            f"Converging fresh hosts with pyinfra and Ansible, {rounds} no-ops each"
        ):
            result = measure(env, image, roles or ["base"], rounds)
    finally:
        env.remove(volumes=True)
    console.print(table(result))
    return result
