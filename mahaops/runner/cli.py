"""The runner's command line and a run from start to end (started by ``__main__``)."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError

from mahaops import pyinfra_hooks, secrets
from mahaops.hosts import kind_of
from mahaops.release.assets import publish_release
from mahaops.runner import engine, factcache, report
from mahaops.runner.report import console
from mahaops.runner.state import (
    UsageError,
    apply_limit,
    build_state,
    check_limit,
    load_hosts,
    select_roles,
)
from mahaops.settings import DEFAULT_GROUP_DATA, GroupData, SettingsError
from mahaops.settings import parse_overrides as parse_set
from mahaops.sim import SimError


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mahaops.runner", description="Converge hosts to their roles."
    )
    parser.add_argument("--env", default="local", help="environment (local, or one in aws.py)")
    parser.add_argument("--role", action="append", default=[], help="role(s) to deploy")
    parser.add_argument("--limit", action="append", default=[], help="host or group names")
    parser.add_argument("--dry", action="store_true", help="plan with diffs, change nothing")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="KEY=VALUE setting"
    )
    parser.add_argument(
        "--group-data", type=Path, default=DEFAULT_GROUP_DATA, help="group_data directory"
    )
    parser.add_argument("--hosts-json", type=Path, help="hosts instead of discovery (tests)")
    parser.add_argument("--json", type=Path, help="write the outcome of each operation here")
    parser.add_argument("--quiet", action="store_true", help="no progress, warnings only")
    parser.add_argument("--verbose", action="store_true", help="pyinfra's own per-host lines")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    try:
        pyinfra_hooks.install()
        group_data = GroupData(args.group_data)
        local = kind_of(args.env, group_data.files) == "local"
        report.configure_logging(args.quiet, local=local, verbose=args.verbose)
        overrides = parse_set(args.overrides)
        roles = select_roles(args.role)
        kind, hosts = load_hosts(args.env, group_data, args.hosts_json)
        check_limit(args.limit, hosts)
        if not hosts:
            make = "invoke up" if kind == "local" else f"invoke provision --env {args.env}"
            raise UsageError(f"no hosts in environment {args.env!r} (made yet? `{make}`)")
        state = build_state(hosts, group_data, overrides, args.dry)
    except (
        SettingsError,
        ValueError,
        pyinfra_hooks.PyinfraVersionError,
        SimError,  # the AWS stand-in's server gone, say: its message says what to do
        BotoCoreError,  # no credentials, an unknown profile, AWS out of reach
    ) as exc:
        console.print(f"[red]error:[/] {exc}")
        return 2
    apply_limit(state, args.limit)
    results: list[dict[str, Any]] = []
    crashed = False  # an error outside any operation (a deploy's own bug, say) fails the run
    with secrets.using(secrets.store_for(kind, args.env)):
        try:
            factcache.install(secrets.env_dir(args.env), role_of=engine.asking_role)
            connect_all(state)
            factcache.prefetch(state, {r.name for r in roles})
            releases = engine.plan(state, roles, hosts)
            if kind == "aws":  # the CDN has a release's assets before a page names them
                for built in releases:
                    publish_release(
                        args.env,
                        built.tarball,
                        dry=args.dry,
                        progress=console.print,
                        group_data=args.group_data,
                    )
            if not args.dry:
                engine.execute(state, progress=not args.quiet)
        except PyinfraError as exc:
            crashed = True
            console.print(f"[red]error:[/] {exc}")
        except Exception as exc:  # a bug in a deploy: still report what ran
            crashed = True
            logging.getLogger("pyinfra").exception("deploy failed")
            console.print(f"[red]error:[/] {type(exc).__name__}: {exc}")
        finally:
            results = report.outcomes(state, args.dry, engine.op_funcs)
            disconnect_all(state)
            factcache.save()
    unreachable = [h.name for h in state.inventory if h not in state.activated_hosts]
    if state.limit_hosts:
        unreachable = [n for n in unreachable if n in {h.name for h in state.limit_hosts}]
    report.summary(results, args.dry, time.monotonic() - started)
    for name in unreachable:
        console.print(f"[red]unreachable:[/] {name}")
    report.print_failures(engine.failures, kind)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "dry": args.dry,
                    "operations": results,
                    "unreachable": unreachable,
                    "facts": factcache.stats(),
                }
            )
        )
    failed = crashed or unreachable or any(r["status"] in ("failed", "skipped") for r in results)
    return 1 if failed else 0
