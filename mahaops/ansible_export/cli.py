"""The exporter's command line (run through ``__main__``, after gevent's patching)."""

from __future__ import annotations

import argparse
import json
import logging
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mahaops.ansible_export.model import ExportError
from mahaops.ansible_export.writer import collection_version, write
from mahaops.settings import DEFAULT_GROUP_DATA, SettingsError, parse_overrides


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m mahaops.ansible_export")
    parser.add_argument("--env", default="local")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", action="append", default=[], help="host or group names")
    parser.add_argument("--role", action="append", default=[], help="role(s) to export")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--group-data", type=Path, default=DEFAULT_GROUP_DATA)
    parser.add_argument("--json", type=Path, help="write a summary of the export here")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    console = Console(highlight=False, soft_wrap=True)
    logging.getLogger("pyinfra").setLevel(logging.ERROR)  # host-key notices on local hosts
    from mahaops.ansible_export.project import build
    from mahaops.ansible_export.record import record

    try:
        recording = record(
            args.env, args.group_data, args.limit, args.role, parse_overrides(args.overrides)
        )
        files = build(recording, collection_version)
        write(files, args.out)
    except (ExportError, SettingsError, ValueError) as exc:
        console.print(f"[red]export failed:[/] {exc}")
        return 2
    table = Table(title=f"Ansible project for {args.env} in {args.out}", title_justify="left")
    for column in ("role", "hosts", "tasks", "handlers", "templates"):
        table.add_column(column, justify="left" if column == "role" else "right")
    hosts = Counter(c.role for c in {(c.role, c.host): c for c in recording.calls}.values())
    summary = {}
    for name in recording.roles:
        tasks = files.get(f"roles/{name}/tasks/main.yml", b"").count(b"\n- name:")
        handlers = files.get(f"roles/{name}/handlers/main.yml", b"").count(b"\n- name:")
        templates = sum(p.startswith(f"roles/{name}/templates/") for p in files)
        summary[name] = {"tasks": tasks, "handlers": handlers, "templates": templates}
        table.add_row(name, str(hosts[name]), str(tasks), str(handlers), str(templates))
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps({"roles": summary, "files": sorted(files)}, indent=2))
    return 0
