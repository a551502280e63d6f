"""Facts the project's deploys read (pyinfra facts: a command and a parser)."""

from __future__ import annotations

from pyinfra.api import FactBase


class IsContainer(FactBase[bool]):
    """
    Whether the host is a container (Docker, LXC, systemd-nspawn...), where kernel
    settings and clock discipline belong to the machine underneath.

    .. code:: python

        if not host.get_fact(IsContainer):
            ...
    """

    def command(self) -> str:
        return (
            "systemd-detect-virt --container --quiet 2>/dev/null && echo yes "
            "|| { test -f /.dockerenv && echo yes || echo no; }"
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"
