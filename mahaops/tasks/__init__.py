"""The Invoke tasks, one collection module per subject; ``tasks.py`` builds the command line.

Operator tasks: ``platform`` (up, down, deploy, plan, hosts), ``release`` (build, release,
rollback), ``ops`` (status, exec, unlock, history), ``aws`` (provision, teardown),
``ansible`` (export-ansible, bench-ansible), and the namespaced ``db`` (db.backup,
db.restore), ``sim`` (sim.up, sim.status, sim.down: the AWS stand-in) and ``logs``
(``logs``: the hosts' journals, from ``ops``; logs.ui). Developer
tasks: ``dev`` (test, lint, bench). Help texts shared by several tasks are in ``_common``.
"""

from __future__ import annotations

from invoke.collection import Collection

from mahaops.tasks import ansible, aws, db, dev, lifecycle, logs, ops, platform, release, sim

# Top-level names (`invoke up`, `invoke build`, ...): the command line predates the modules.
FLAT = (platform, lifecycle, release, ops, aws, ansible, dev)
NAMESPACED = (db, logs, sim)  # `invoke db.backup`, `invoke logs.ui`, `invoke sim.up`


def root() -> Collection:
    """The command line: every flat subject's tasks at the top, the others by their name."""
    ns = Collection()
    for module in FLAT:
        for name, body in module.ns.tasks.items():
            ns.add_task(body, name=name)
    for module in NAMESPACED:
        ns.add_collection(_logs_with_journal() if module is logs else module.ns)
    return ns


def _logs_with_journal() -> Collection:
    """``logs.ui`` plus the hosts' journals as the collection's default: ``invoke logs``."""
    collection = Collection(logs.ns.name)
    for name, body in logs.ns.tasks.items():
        collection.add_task(body, name=name)
    collection.add_task(ops.logs, name="journal", default=True)
    return collection
