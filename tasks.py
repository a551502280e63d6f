"""Invoke tasks: the operator's interface to the Maha platform (``invoke --list``)."""

from __future__ import annotations

from invoke.collection import Collection

ns = Collection()

# -- local platform and deploys --------------------------------------------------------------

# -- releases ---------------------------------------------------------------------------------
from mahaops import release_tasks  # noqa: E402

ns.add_task(release_tasks.build)

# -- AWS --------------------------------------------------------------------------------------

# -- Ansible export ---------------------------------------------------------------------------
