"""Invoke tasks: the operator's interface to the Maha platform (``invoke --list``).

Each subject's tasks are in ``mahaops/tasks/``.
"""

from mahaops.tasks import root

ns = root()
