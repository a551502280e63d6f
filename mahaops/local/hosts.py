"""Hosts of a local environment: systemd containers found by their labels, reached over SSH.

Every container carries ``maha.project``, ``maha.env`` and ``maha.role``; nothing else
records what exists. Hosts share a per-environment Docker network (their private
addresses) and publish SSH, and any role port meant for the operator, on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import docker
from docker.errors import APIError, NotFound
from docker.models.containers import Container

from mahaops.hosts import HostSpec
from mahaops.local import keys
from mahaops.local.engine import ensure_engine, raise_inotify_limits
from mahaops.local.image import ensure_image
from mahaops.local.pkgcache import ensure_package_cache
from mahaops.roles import ROLE_BY_NAME, role

PROJECT = "maha"
LABEL_PROJECT = "maha.project"
LABEL_ENV = "maha.env"
LABEL_ROLE = "maha.role"
DEPLOY_USER = "maha"

# Where a role keeps data that must outlive its container (`invoke down` keeps volumes).
# PostgreSQL's data is useless without the cluster's configuration beside it: Debian keeps
# that in /etc, and its packages create no cluster where data already exists.
DATA_PATHS: dict[str, tuple[str, ...]] = {
    "db": ("/var/lib/postgresql", "/etc/postgresql"),
    "cache": ("/var/lib/redis",),
    "log": ("/var/log/maha-remote",),
    "mail": ("/var/lib/maha-mail",),  # the sink's Maildir: what campaigns sent, for counting
    "storage": ("/var/lib/maha-storage",),  # the S3 objects (moto keeps them in memory only)
}


def volume_name(container: str, path: str, index: int) -> str:
    """``<container>-data`` for a role's first data path, ``-data-<path>`` for the others."""
    return f"{container}-data" if index == 0 else f"{container}-data{path.replace('/', '-')}"


# Container ports published on 127.0.0.1 for the operator, besides SSH: the load
# balancer's HTTP and HTTPS (lb_http_port, lb_https_port at their defaults), the storage's
# S3 API (storage_port's default: browsers send presigned uploads and downloads there).
PUBLISHED: dict[str, tuple[int, ...]] = {"lb": (80, 443), "storage": (9000,)}


@dataclass(frozen=True)
class LocalHost:
    name: str
    role: str
    env: str
    container: str
    private_address: str
    ssh_port: int
    ports: dict[int, int] = field(default_factory=dict)  # container port -> 127.0.0.1 port
    gateway: str = ""  # this machine on the env's network: where published ports arrive from

    def spec(self) -> HostSpec:
        return HostSpec(
            name=self.name,
            groups=("local", role(self.role).group) if self.role != "base" else ("local",),
            data={
                "ssh_hostname": "127.0.0.1",
                "ssh_port": self.ssh_port,
                "ssh_user": DEPLOY_USER,
                "ssh_key": str(keys.deploy_key(self.env)),
                # Ports on loopback are reused by new containers with new host keys.
                "ssh_strict_host_key_checking": "off",
                "ssh_known_hosts_file": "/dev/null",
                "private_address": self.private_address,
                "maha_role": self.role,
                "maha_env": self.env,
                "published_ports": dict(self.ports),
                # docker-proxy connects from here for the ports published on 127.0.0.1: a
                # role admits it for those (mahaops/firewall.py, the storage's S3 API).
                "docker_gateway": self.gateway,
            },
        )


def _gateway(attrs: dict[str, Any]) -> str:
    """A Docker network's gateway: this machine's address on it (the first host by default)."""
    config = attrs["IPAM"]["Config"][0]
    if config.get("Gateway"):
        return str(config["Gateway"])
    return str(next(ipaddress.ip_network(config["Subnet"]).hosts()))


class Environment:
    """The containers, network and volumes of one local environment (``maha.env``)."""

    def __init__(self, env: str, client: docker.DockerClient | None = None) -> None:
        if not env.replace("-", "").isalnum() or env != env.lower():
            raise ValueError(f"bad environment name {env!r}: lower-case letters, digits and -")
        self.env = env
        self.client = client or ensure_engine()

    @property
    def network_name(self) -> str:
        return f"{PROJECT}-{self.env}"

    def _labels(self, role_name: str | None = None) -> dict[str, str]:
        labels = {LABEL_PROJECT: PROJECT, LABEL_ENV: self.env}
        if role_name:
            labels[LABEL_ROLE] = role_name
        return labels

    def _filters(self) -> dict[str, list[str]]:
        return {"label": [f"{LABEL_PROJECT}={PROJECT}", f"{LABEL_ENV}={self.env}"]}

    def containers(self) -> list[Container]:
        found = self.client.containers.list(all=True, filters=self._filters())
        return sorted(found, key=lambda c: c.name)

    def hosts(self) -> list[LocalHost]:
        return [h for h in (self._host(c) for c in self.containers()) if h is not None]

    def _host(self, container: Container) -> LocalHost | None:
        container.reload()
        if container.status != "running":
            return None
        net = container.attrs["NetworkSettings"]
        ports: dict[int, int] = {}
        for spec, bindings in (net.get("Ports") or {}).items():
            if bindings:
                ports[int(spec.split("/")[0])] = int(bindings[0]["HostPort"])
        own = (net.get("Networks") or {}).get(self.network_name, {})
        address = own.get("IPAddress", "")
        return LocalHost(
            name=container.labels.get("maha.host", container.name),
            role=container.labels[LABEL_ROLE],
            env=self.env,
            container=container.name,
            private_address=address,
            ssh_port=ports.get(22, 0),
            ports={p: h for p, h in ports.items() if p != 22},
            gateway=own.get("Gateway", ""),
        )

    def ensure_network(self) -> str:
        """The env's network; returns its gateway (this machine, as the hosts see it)."""
        try:
            network = self.client.networks.get(self.network_name)
        except NotFound:
            network = self.client.networks.create(
                self.network_name, driver="bridge", labels=self._labels()
            )
            network.reload()
        return _gateway(network.attrs)

    def prepare(self, progress: Callable[[str], None] = lambda _m: None) -> str:
        """Engine, package cache, image and network ready; returns the host image tag."""
        for limit in raise_inotify_limits():
            progress(f"warning: could not raise {limit}; many hosts may fail to start")
        bridge = _gateway(self.client.networks.get("bridge").attrs)
        ensure_package_cache(bind=["127.0.0.1", bridge])
        tag = ensure_image(self.client, DEPLOY_USER, progress)
        self.ensure_network()
        keys.deploy_key(self.env)
        return tag

    def container_name(self, host_name: str) -> str:
        return f"{PROJECT}-{self.env}-{host_name}"

    def create(
        self,
        role_name: str,
        name: str | None = None,
        image: str | None = None,
        publish: Iterable[int] | None = None,
        data_of: str | None = None,
    ) -> LocalHost:
        """Create and start a host for ``role_name`` (named ``<role>-<n>`` by default), on
        the data volumes of host ``data_of`` when given (a replacement on kept data)."""
        if role_name not in ROLE_BY_NAME:
            role(role_name)  # raises with the list of roles
        image = image or self.prepare()
        taken = {h.name for h in self.hosts()} | {
            c.labels.get("maha.host", "") for c in self.containers()
        }
        if name is None:
            index = 1
            while f"{role_name}-{index}" in taken:
                index += 1
            name = f"{role_name}-{index}"
        ports = {22: ("127.0.0.1", None)}
        for port in publish if publish is not None else PUBLISHED.get(role_name, ()):
            ports[port] = ("127.0.0.1", None)
        volumes = {"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"}}
        for index, path in enumerate(DATA_PATHS.get(role_name, ())):
            volume = volume_name(self.container_name(data_of or name), path, index)
            if not any(
                v.name == volume for v in self.client.volumes.list(filters={"name": volume})
            ):
                self.client.volumes.create(volume, labels=self._labels(role_name))
            volumes[volume] = {"bind": path, "mode": "rw"}
        container = self.client.containers.run(
            image,
            name=self.container_name(name),
            hostname=name,
            detach=True,
            labels={**self._labels(role_name), "maha.host": name},
            network=self.network_name,
            ports=ports,
            volumes=volumes,
            tmpfs={"/run": "", "/run/lock": ""},
            cap_add=["NET_ADMIN"],  # nftables inside the host
            stop_signal="SIGRTMIN+3",  # systemd's clean shutdown
            extra_hosts={"host.docker.internal": "host-gateway"},
        )
        self.client.networks.get(self.network_name).reload()
        self._authorize(container)
        host = self._host(container)
        assert host is not None, f"{container.name} stopped right after start"
        self.wait_for_ssh(host)
        return host

    def _authorize(self, container: Container) -> None:
        key = keys.public_key(self.env)
        script = (
            f"umask 077; printf '%s\\n' '{key}' > /home/{DEPLOY_USER}/.ssh/authorized_keys"
            f" && chown {DEPLOY_USER}: /home/{DEPLOY_USER}/.ssh/authorized_keys"
        )
        code, output = container.exec_run(["sh", "-c", script])
        if code != 0:
            raise RuntimeError(f"cannot install the deploy key: {output.decode()}")

    @staticmethod
    def wait_for_ssh(host: LocalHost, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", host.ssh_port), timeout=2) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"{host.name}: sshd did not answer on 127.0.0.1:{host.ssh_port}")

    def remove(self, names: Iterable[str] | None = None, volumes: bool = False) -> list[str]:
        """Remove hosts (all of the env by default); data volumes only when asked."""
        wanted = set(names) if names is not None else None
        removed = []
        volumes_used: set[str] = set()
        for container in self.containers():
            host_name = container.labels.get("maha.host", container.name)
            if wanted is not None and host_name not in wanted:
                continue
            container.remove(force=True)
            removed.append(host_name)
            if volumes:
                # Its own, and those it took over from a host it replaced (data_of).
                mounts = container.attrs.get("Mounts", [])
                volumes_used.update(m["Name"] for m in mounts if m.get("Name"))
                for volume in self.client.volumes.list(filters={"name": f"{container.name}-data"}):
                    volumes_used.add(volume.name)
        # Once every container named is gone: a replacement may use its predecessor's volumes.
        for name in sorted(volumes_used):
            try:
                self.client.volumes.get(name).remove(force=True)
            except NotFound:
                pass
            except APIError as exc:
                if exc.status_code != 409:  # 409: a host not removed here still uses it
                    raise
        if wanted is None:
            with contextlib.suppress(NotFound):
                self.client.networks.get(self.network_name).remove()
        return removed


def inventory_hosts(env: str) -> list[HostSpec]:
    """The env's running hosts as inventory entries (empty when Docker is not running)."""
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException:
        return []
    return [h.spec() for h in Environment(env, client).hosts()]
