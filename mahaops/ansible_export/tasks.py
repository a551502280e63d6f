"""Invoke task: ``invoke export-ansible --env NAME --out DIR``."""

from __future__ import annotations

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task


@task(
    name="export-ansible",
    help={
        "env": "environment to export: 'local' (Docker) or one from group_data/aws.py",
        "out": "directory to write the Ansible project into (replaced if it holds an export)",
        "limit": "only these hosts or groups (repeatable), e.g. app-1 or app_servers",
    },
    iterable=["limit"],
)
def export_ansible(c: Context, env: str = "local", out: str = "", limit=None):
    """Export every role deploy as a runnable Ansible project (recorded from the hosts)."""
    from pathlib import Path

    from mahaops.ansible_export import export

    if not out:
        raise Exit("error: --out DIR is required", code=2)
    result = export(env, Path(out), limit=limit or (), capture=False)
    if not result.ok:
        raise Exit(code=result.returncode)
