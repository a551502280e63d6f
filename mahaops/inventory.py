"""Former home of HostSpec and host lookup, now :mod:`mahaops.hosts`.

Kept only so that code being moved right now still imports; new code imports
``mahaops.hosts``. Remove once nothing imports ``mahaops.inventory``.
"""

from mahaops.hosts import (
    HostSpec,
    aws_environment_names,
    current_env,
    discover,
    group_lists,
    kind_of,
)

__all__ = ["HostSpec", "aws_environment_names", "current_env", "discover", "group_lists", "kind_of"]
