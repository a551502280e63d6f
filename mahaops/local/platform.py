"""The whole Maha platform on this machine: `invoke up` and `invoke down`."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from mahaops import tls
from mahaops.local.hosts import DATA_PATHS, PUBLISHED, Environment, LocalHost
from mahaops.release import current_build
from mahaops.roles import deployable_roles
from mahaops.runner import DeployResult, run_deploy
from mahaops.secrets import env_dir, store_for
from mahaops.settings import GroupData, from_data
from mahaops.settings.lb import LbSettings
from mahaops.settings.local import DEFAULT_SHAPE

# How hosts are listed and made.
ROLE_ORDER = ("lb", "app", "db", "cache", "log", "mail", "storage", "worker")


def shape(group_data: GroupData | None = None) -> dict[str, int]:
    """Hosts per role of a local environment: ``local_hosts`` in group_data/local.py
    (checked: a bad value stops here naming the file and the key)."""
    files = (group_data or GroupData()).files
    given = files.get("local", {}).get("local_hosts")
    counts = dict(given) if given is not None else dict(DEFAULT_SHAPE)
    return {role: counts[role] for role in ROLE_ORDER if role in counts}


def __getattr__(name: str) -> tuple[tuple[str, int], ...]:
    # ``PLATFORM``: the shape as (role, count) pairs, for callers written before settings.
    if name == "PLATFORM":
        return tuple(shape().items())
    raise AttributeError(name)


def missing_hosts(
    counts: Mapping[str, int], existing: Iterable[LocalHost]
) -> list[tuple[str, str]]:
    """(role, name) of the hosts to create so each role has its count: the lowest free
    ``<role>-<n>`` names (a replaced ``app-1`` is not made again while app-3 stands in)."""
    hosts = list(existing)
    taken = {h.name for h in hosts}
    wanted = []
    for role_name, count in counts.items():
        have = sum(1 for h in hosts if h.role == role_name)
        index = 1
        for _ in range(max(0, count - have)):
            while f"{role_name}-{index}" in taken:
                index += 1
            taken.add(f"{role_name}-{index}")
            wanted.append((role_name, f"{role_name}-{index}"))
    return wanted


def beyond_shape(counts: Mapping[str, int], existing: Iterable[LocalHost]) -> dict[str, int]:
    """Role -> hosts more than the shape asks (``up`` leaves them: removing is a decision)."""
    have: dict[str, int] = {}
    for host in existing:
        have[host.role] = have.get(host.role, 0) + 1
    return {r: n - counts.get(r, 0) for r, n in have.items() if n > counts.get(r, 0)}


@dataclass
class UpResult:
    created: list[str]
    hosts: list[LocalHost]
    deploy: DeployResult
    release: str | None = None  # the release the app servers and workers run
    timings: dict[str, float] = field(default_factory=dict)  # step -> seconds

    @property
    def changed(self) -> bool:
        return bool(self.created or self.deploy.changed)


def up(
    env: str = "local",
    console: Console | None = None,
    capture: bool = False,
    quiet: bool = False,
    hosts_per_role: Mapping[str, int] | None = None,
) -> UpResult:
    """Create the platform's missing hosts, then converge every role on all of them.

    Steps: Docker engine, package cache and host image (built once, reused); the release
    of app/ (built once per content); missing hosts only, as many per role as
    ``hosts_per_role`` (default: ``local_hosts`` of group_data/local.py); one deploy of
    every role.
    """
    counts = dict(hosts_per_role) if hosts_per_role is not None else shape()
    console = console or Console()
    timings: dict[str, float] = {}

    def say(msg: str) -> None:
        console.print(f"[bold]•[/] {msg}")

    started = time.monotonic()
    environment = Environment(env)
    say(f"Preparing environment [bold]{env}[/]: Docker engine, package cache, host image")
    image = environment.prepare(progress=say)
    timings["prepare"] = time.monotonic() - started

    roles = deployable_roles()
    release_id = None
    if {"app", "worker"} & set(roles):
        mark = time.monotonic()
        say("Release of app/ (built only when app/ changed)")
        built = current_build()
        release_id = built.id
        say(f"Release [bold]{built.id}[/]")
        timings["release"] = time.monotonic() - mark

    mark = time.monotonic()
    _restart_stopped(environment)
    created = remake_unpublished(environment, image, say)
    existing = environment.hosts()
    for role_name, name in missing_hosts(counts, existing):
        say(f"Creating host {name}")
        environment.create(role_name, name=name, image=image)
        created.append(name)
    for role_name, extra in sorted(beyond_shape(counts, existing).items()):
        say(
            f"{extra} {role_name} host(s) beyond local_hosts ({counts.get(role_name, 0)}): "
            f"left running; `invoke scale --env {env} --role {role_name}` removes hosts"
        )
    timings["hosts"] = time.monotonic() - mark

    mark = time.monotonic()
    say(f"Deploying roles: {', '.join(roles)}")
    result = run_deploy(env, roles=roles, capture=capture, quiet=quiet)
    timings["deploy"] = time.monotonic() - mark
    hosts = environment.hosts()
    address = url(hosts)
    apps = {h.name for h in hosts if h.role == "app"}
    if result.ok and address and apps:
        # Roles on different hosts converge side by side, so the load balancer may still be
        # counting its first passed checks: the platform is up when every app server answers.
        mark = time.monotonic()
        seen = wait_for_lb(address, apps)
        timings["lb"] = time.monotonic() - mark
        say(f"Load balancer: {len(seen)} of {len(apps)} app servers in service")
    timings["total"] = time.monotonic() - started
    outcome = UpResult(created, hosts, result, release_id, timings)
    if result.ok and not outcome.changed:
        say(f"No changes: the platform was already converged ({timings['total']:.1f}s)")
    elif result.ok:
        say(f"Converged: {len(result.changed)} change(s) in {timings['total']:.1f}s")
    return outcome


def wait_for_lb(address: str, apps: set[str], timeout: float = 60.0) -> set[str]:
    """The app servers answering through the load balancer, once all do (or at ``timeout``)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for _ in range(2 * len(apps)):
            try:
                with urllib.request.urlopen(f"{address}health", timeout=5) as response:
                    seen.add(response.headers.get("X-Maha-Server", ""))
            except (urllib.error.URLError, OSError):
                pass
        if apps <= seen:
            break
        time.sleep(0.5)
    return seen & apps


def unpublished(hosts: Iterable[LocalHost]) -> dict[str, list[int]]:
    """Host -> the ports its role publishes on 127.0.0.1 that its container lacks (made
    before the role published them: the lb before HTTPS, say)."""
    found = {}
    for host in hosts:
        missing = [p for p in PUBLISHED.get(host.role, ()) if p not in host.ports]
        if missing:
            found[host.name] = missing
    return found


def remake_unpublished(
    environment: Environment, image: str, say: Callable[[str], None] = lambda _: None
) -> list[str]:
    """Re-make the hosts that lack a published port (Docker cannot add one to a container):
    the same name and role, on the same data volumes; the deploy that follows converges it
    and re-renders its peers (its private address may change). Returns their names."""
    remade = []
    for name, ports in sorted(unpublished(environment.hosts()).items()):
        host = next(h for h in environment.hosts() if h.name == name)
        owner = _data_owner(environment, host)
        listed = ", ".join(str(p) for p in ports)
        say(f"Re-making host {name}: port {listed} is not published (its data volumes are kept)")
        environment.remove([name])
        environment.create(host.role, name=name, image=image, data_of=owner)
        remade.append(name)
    return remade


def _data_owner(environment: Environment, host: LocalHost) -> str | None:
    """The host whose data volumes ``host`` runs on: another one's after a replacement."""
    paths = DATA_PATHS.get(host.role, ())
    if not paths:
        return None
    container = environment.client.containers.get(host.container)
    for mount in container.attrs.get("Mounts", []):
        if mount.get("Destination") == paths[0] and mount.get("Name"):
            prefix = environment.container_name("")
            return str(mount["Name"]).removeprefix(prefix).removesuffix("-data") or None
    return None


def _restart_stopped(environment: Environment) -> None:
    for container in environment.containers():
        if container.status != "running":
            container.start()
            host = environment._host(container)
            if host:
                environment.wait_for_ssh(host)


def hosts_table(hosts: list[LocalHost]) -> Table:
    table = Table(title="Hosts", title_justify="left")
    for column in ("host", "role", "private address", "ssh", "published"):
        table.add_column(column)
    for host in hosts:
        published = ", ".join(f"{p}→127.0.0.1:{h}" for p, h in sorted(host.ports.items()))
        table.add_row(
            host.name,
            host.role,
            host.private_address,
            f"127.0.0.1:{host.ssh_port}",
            published or "-",
        )
    return table


def url(hosts: list[LocalHost]) -> str | None:
    for host in hosts:
        if host.role == "lb" and 80 in host.ports:
            return f"http://127.0.0.1:{host.ports[80]}/"
    return None


def https_url(hosts: list[LocalHost]) -> str | None:
    """The load balancer's HTTPS on 127.0.0.1, when its host publishes it (an lb host made
    before HTTPS was published has 80 only, and Docker cannot add a port to a container)."""
    for host in hosts:
        if host.role == "lb" and 443 in host.ports:
            return f"https://localhost:{host.ports[443]}/"
    return None


def lb_tls(group_data: GroupData | None = None) -> bool:
    """Whether the load balancer serves HTTPS (``lb_tls`` in group_data)."""
    files = (group_data or GroupData()).files
    data = {**files.get("all", {}), **files.get("load_balancers", {})}
    return from_data(LbSettings, data).lb_tls


def ca_file(env: str) -> Path:
    """The environment CA's certificate for the operator's clients to trust, written beside
    the environment's secrets (its key stays in the store)."""
    return tls.write_ca_certificate(store_for("local", env), env_dir(env) / "ca.crt")


def down(env: str = "local", volumes: bool = False) -> list[str]:
    """Remove the platform's hosts and network; data volumes stay unless ``volumes``."""
    return Environment(env).remove(volumes=volumes)
