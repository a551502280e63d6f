"""What the task modules share: help texts written once, consoles, SSH to an inventory host."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console

from mahaops.hosts import HostSpec
from mahaops.masking import MaskingStream

ENV_HELP = "environment: 'local' (Docker on this machine) or one from group_data/aws.py"
LOCAL_ENV_HELP = "local environment name (default: local)"
ROLES = "base, db, cache, log, mail, storage, app, worker, lb"
LIMIT_HELP = "only these hosts or groups (repeatable), e.g. app-1 or app_servers"
SET_HELP = "override a setting for this run, KEY=VALUE (repeatable; VALUE may be JSON)"

F = TypeVar("F", bound=Callable[..., Any])


def help_for_positional(name: str) -> Callable[[F], F]:
    """Decorate a task whose positional argument ``name`` would swallow ``--help``: invoke
    hands a required positional whatever follows the task (pyinvoke/invoke#982), so
    ``invoke replace --help`` ran a replace of a host called "--help". Given
    ``--help`` there, show the task's help instead. Put it between ``@task`` and ``@guarded``
    so that nothing (no lock, no host) is touched first::

        @task(help={...})
        @help_for_positional("host")
        @guarded("replace")
        def replace(c, host, env="local"): ...
    """

    def decorate(body: F) -> F:
        @functools.wraps(body)
        def wrapper(c: Any, *args: Any, **kwargs: Any) -> Any:
            value = kwargs.get(name, args[0] if args else None)
            if value == "--help":
                sys.stdout.flush()
                # invoke's own help for the task, as `invoke --help TASK` prints it.
                os.execv(sys.executable, [sys.executable, "-m", "invoke", "--help", body.__name__])
            return body(c, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``--set`` pairs as settings, or the task stops naming the bad one (before any host)."""
    from invoke.exceptions import Exit

    from mahaops.settings import SettingsError, parse_overrides

    try:
        return parse_overrides(pairs or [])
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None


@contextmanager
def one_line_errors(*failures: type[BaseException], label: str = "error") -> Iterator[None]:
    """Known failures end the task with one clear line, not a traceback: bad settings exit
    2 (nothing was touched), each of ``failures`` exits 1, its message after ``label``."""
    from invoke.exceptions import Exit

    from mahaops.settings import SettingsError

    try:
        yield
    except SettingsError as exc:
        raise Exit(f"error: {exc}", code=2) from None
    except failures as exc:
        raise Exit(f"{label}: {exc}", code=1) from None


def masked_console(stderr: bool = False) -> Console:
    """A console that masks every known secret (for tasks printing what hosts answer)."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(file=MaskingStream(stream), highlight=False)  # type: ignore[arg-type]


@contextmanager
def connect(spec: HostSpec) -> Iterator[Any]:
    """A Fabric connection to ``spec`` as its inventory describes it (user, port, key)."""
    from mahaops.fleet.ssh import connection

    conn = connection(spec)
    try:
        yield conn
    finally:
        conn.close()
