"""Reads one fact through the fact batch on a real host and prints what happened (JSON).

``python -m tests.runner.fact_probe ENV HOST PATH`` is one run, as a deploy makes one:
the batch is read at the start, ``File(PATH)`` is asked, then (with ``--then-remove``)
an operation's command removes PATH and the fact is asked again. Separate process,
because pyinfra's gevent patching must come first.
"""

from gevent import monkey

monkey.patch_all()

# ruff: noqa: E402
import json
import sys

from pyinfra.api.command import StringCommand
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.context import ctx_host, ctx_state
from pyinfra.facts.files import File

from mahaops import secrets
from mahaops.local.hosts import inventory_hosts
from mahaops.runner import factcache
from mahaops.runner.state import build_state
from mahaops.settings import DEFAULT_GROUP_DATA, GroupData


def main(env: str, name: str, path: str, then_remove: bool) -> dict[str, object]:
    specs = [h for h in inventory_hosts(env) if h.name == name]
    state = build_state(specs, GroupData(DEFAULT_GROUP_DATA), {}, dry=False)
    factcache.install(secrets.env_dir(env))
    connect_all(state)
    factcache.prefetch(state, {""})
    host = state.inventory.get_host(name)
    seen = []
    with ctx_state.use(state), ctx_host.use(host):
        seen.append(host.get_fact(File, path=path) is not None)
        if then_remove:
            host.run_shell_command(StringCommand("rm", "-f", path), _sudo=True)
            seen.append(host.get_fact(File, path=path) is not None)
    disconnect_all(state)
    factcache.save()
    batched, live = factcache.stats()[name]
    return {"exists": seen, "batched": batched, "live": live}


if __name__ == "__main__":
    env, name, path = sys.argv[1:4]
    result = main(env, name, path, then_remove="--then-remove" in sys.argv)

    print(json.dumps(result))
