"""EC2 instances as hosts: Docker kept in step with what the moto server says.

Each pass reads ``describe_instances`` and ``describe_subnets`` from the server (through
boto3, as any client would) and makes Docker match:

- a running instance gets a host container from the local platform's host image, on a
  Docker network per subnet (the subnet's CIDR, its ``.1`` as router, like a VPC's), at
  the instance's ``PrivateIpAddress``; with a ``PublicIpAddress`` it is also reachable
  there from this machine, on an internal network over moto's public range (no route
  out: hosts reach each other and the package cache through their subnet's router);
- at first boot, as cloud-init does on Debian's AMIs: the user ``admin`` (sudo, no
  password) with the key pair's public key, the image's own deploy user removed (an AMI
  has none), apt sent through the package cache (the sim's only way out), then the
  instance's ``UserData`` run once, in the background, logged to
  /var/log/cloud-init-output.log;
- a stopped instance's container is stopped, a terminated one's removed;
- an EBS volume attached to an instance appears in its host as ``/dev/sim-ebs/<volume
  id>``, a link into the server's volume store (``/var/lib/sim-ebs``, one Docker volume
  mounted in every host: a container can get no block device, nor a mount after it
  started); ``operations/ebs.py`` puts a role's data there. Detached, the link goes; the
  store's data stays with the volume, as EBS keeps it, until the server stops.

With ``on_ready`` (the daemon's), an instance stays ``pending`` in EC2 until its host
is up and booted, as on AWS: ``instance_running`` waiters then mean a host to log into.

Containers carry the instance id and the server's token (``maha.sim.*`` labels), never
the local inventory's ``maha.env``: the local platform's tasks do not see them.
"""

from __future__ import annotations

import base64
import contextlib
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from docker.errors import APIError, NotFound
from docker.models.containers import Container
from docker.types import IPAMConfig, IPAMPool

from mahaops.sim import (
    LABEL_ENV,
    LABEL_INSTANCE,
    LABEL_SERVER,
    LABEL_SUBNET,
    PROJECT_LABEL,
    PUBLIC_CIDR,
)
from operations.ebs import SIM_DEVICES as EBS_DEVICES
from operations.ebs import SIM_STORE as EBS_STORE

FIRST_USER = "admin"  # Debian's AMIs: cloud-init's default user
IMAGE_USER = "maha"  # the host image's deploy user, which an AMI does not have
PUBLIC_NETWORK = "maha-sim-public"
APT_EGRESS = "/etc/apt/apt.conf.d/00sim-egress"  # the base role's own file is 01maha-proxy
BOOT_DONE = "/var/lib/cloud/instance/boot-finished"
PARALLEL_BOOTS = 4  # hosts made at once: most of a boot is waiting on systemd
RETRY_AFTER = 30.0  # seconds before an instance whose host could not be made is tried again

Log = Callable[[str], None]


def container_name(instance_id: str) -> str:
    return f"maha-sim-{instance_id}"


def _tags(resource: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def ebs_store_name(token: str) -> str:
    """The Docker volume holding the data of the server ``token``'s EBS volumes."""
    return f"maha-sim-ebs-{token[:12]}"


def attach_script(wanted: set[str], held: set[str]) -> str:
    """Shell making ``/dev/sim-ebs`` hold a link for each of ``wanted`` (volume ids) and for
    none of ``held - wanted`` (detached since): a new volume's store starts empty."""
    lines = [f"install -d -m 711 {EBS_STORE} && install -d -m 755 {EBS_DEVICES}"]
    for volume in sorted(wanted):
        v = shlex.quote(volume)
        lines.append(
            f"install -d -m 755 {EBS_STORE}/{v} && ln -sfn {EBS_STORE}/{v} {EBS_DEVICES}/{v}"
        )
    for volume in sorted(held - wanted):
        lines.append(f"rm -f {EBS_DEVICES}/{shlex.quote(volume)}")
    return " && ".join(lines)


class Reconciler:
    """One moto server's instances made into hosts, pass after pass."""

    def __init__(
        self,
        endpoint: str,
        regions: list[str],
        token: str,
        docker_client: Any | None = None,
        log: Log = print,
        on_ready: Callable[[str, str], None] | None = None,
    ) -> None:
        from mahaops.local.engine import ensure_engine

        self.endpoint = endpoint
        self.regions = regions
        self.token = token
        self.docker = docker_client or ensure_engine()
        self.log = log
        self.on_ready = on_ready  # (region, instance id): its host answers; EC2 says running
        self._image: str | None = None
        self._apt_proxy: str | None = None
        self._failed: dict[str, float] = {}
        self._attached: dict[str, set[str]] = {}  # instance id -> volumes linked in its host

    # -- AWS side ----------------------------------------------------------------------------

    def _ec2(self, region: str) -> Any:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )
        config = Config(retries={"mode": "standard", "max_attempts": 3})
        return session.client("ec2", endpoint_url=self.endpoint, config=config)

    def _describe(
        self,
    ) -> tuple[
        dict[str, tuple[str, dict[str, Any]]], dict[str, dict[str, Any]], dict[str, set[str]]
    ]:
        """Instances (id -> region, instance), subnets by id, and the volumes attached to each
        instance."""
        instances: dict[str, tuple[str, dict[str, Any]]] = {}
        subnets: dict[str, dict[str, Any]] = {}
        attachments: dict[str, set[str]] = {}
        for region in self.regions:
            ec2 = self._ec2(region)
            for page in ec2.get_paginator("describe_instances").paginate():
                for reservation in page["Reservations"]:
                    for instance in reservation["Instances"]:
                        instances[instance["InstanceId"]] = (region, instance)
            for page in ec2.get_paginator("describe_subnets").paginate():
                for subnet in page["Subnets"]:
                    subnets[subnet["SubnetId"]] = subnet
            for page in ec2.get_paginator("describe_volumes").paginate():
                for volume in page["Volumes"]:
                    for attachment in volume.get("Attachments", []):
                        if attachment.get("State") in ("attaching", "attached"):
                            held = attachments.setdefault(attachment["InstanceId"], set())
                            held.add(volume["VolumeId"])
        return instances, subnets, attachments

    # -- one pass ----------------------------------------------------------------------------

    def containers(self) -> dict[str, Container]:
        found = self.docker.containers.list(
            all=True, filters={"label": [f"{LABEL_SERVER}={self.token}"]}
        )
        return {c.labels[LABEL_INSTANCE]: c for c in found}

    def once(self) -> None:
        """Make Docker match the server's instances once."""
        instances, subnets, attachments = self._describe()
        containers = self.containers()
        new: list[tuple[str, dict[str, Any]]] = []
        for instance_id, (region, instance) in sorted(instances.items()):
            state = instance["State"]["Name"]
            container = containers.get(instance_id)
            try:
                if state in ("pending", "running"):
                    if container is None:
                        if time.monotonic() >= self._failed.get(instance_id, 0.0):
                            new.append((region, instance))
                        continue
                    if container.status != "running":
                        container.start()
                        self._attached.pop(instance_id, None)  # /dev is new at each start
                        self.log(f"{instance_id}: started")
                    self._attach(instance_id, container, attachments.get(instance_id, set()))
                    self._ready(region, instance)
                elif state in ("stopping", "stopped"):
                    if container is not None and container.status == "running":
                        container.stop(timeout=20)
                        self.log(f"{instance_id}: stopped")
                elif container is not None:  # shutting-down, terminated
                    container.remove(force=True)
                    self._attached.pop(instance_id, None)
                    self.log(f"{instance_id}: terminated, host removed")
            except Exception as exc:  # one host's trouble must not stop the others
                self._failure(instance_id, exc)
        if new:
            self._create_all(new, subnets)
        for instance_id, container in containers.items():
            if instance_id not in instances:
                container.remove(force=True)
                self.log(f"{instance_id}: gone from EC2, host removed")
        self._prune_networks(subnets)

    def _attach(self, instance_id: str, container: Container, wanted: set[str]) -> None:
        """The host's ``/dev/sim-ebs`` links made to match ``wanted``, the volumes EC2 says
        are attached to it."""
        held = self._attached.get(instance_id)
        if held == wanted:
            return
        code, output = container.exec_run(["sh", "-c", attach_script(wanted, held or set())])
        if code != 0:
            raise RuntimeError(f"volumes not linked: {output.decode(errors='replace')[-500:]}")
        for volume in sorted(wanted - (held or set())):
            self.log(f"{instance_id}: {volume} attached")
        for volume in sorted((held or set()) - wanted):
            self.log(f"{instance_id}: {volume} detached")
        self._attached[instance_id] = set(wanted)

    def _ready(self, region: str, instance: dict[str, Any]) -> None:
        if instance["State"]["Name"] == "pending" and self.on_ready is not None:
            self.on_ready(region, instance["InstanceId"])

    def _failure(self, instance_id: str, exc: Exception) -> None:
        self._failed[instance_id] = time.monotonic() + RETRY_AFTER
        self.log(f"{instance_id}: {type(exc).__name__}: {exc}")

    def _create_all(
        self, new: list[tuple[str, dict[str, Any]]], subnets: dict[str, dict[str, Any]]
    ) -> None:
        """Hosts for new instances, booted side by side (networks made first, one by one)."""
        try:
            self._prepare()
            for _region, instance in new:
                self._subnet_network(subnets[instance["SubnetId"]])
            if any(instance.get("PublicIpAddress") for _r, instance in new):
                self._public_network()
        except Exception as exc:
            for _region, instance in new:
                self._failure(instance["InstanceId"], exc)
            return
        with ThreadPoolExecutor(max_workers=PARALLEL_BOOTS) as pool:
            futures = {
                pool.submit(self._create, region, instance, subnets): (region, instance)
                for region, instance in new
            }
            for future, (region, instance) in futures.items():
                try:
                    future.result()
                    self._ready(region, instance)
                except Exception as exc:
                    self._failure(instance["InstanceId"], exc)

    def run(self, stop: threading.Event, interval: float = 2.0) -> None:
        """Passes until ``stop`` is set; a failed pass is logged and the next one tries."""
        while not stop.is_set():
            try:
                self.once()
            except Exception as exc:
                self.log(f"pass failed: {type(exc).__name__}: {exc}")
            stop.wait(interval)

    # -- networks ----------------------------------------------------------------------------

    def _network(
        self, name: str, cidr: str, labels: dict[str, str], *, internal: bool = False
    ) -> Any:
        try:
            return self.docker.networks.get(name)
        except NotFound:
            pass
        import ipaddress

        router = str(next(ipaddress.ip_network(cidr).hosts()))
        ipam = IPAMConfig(pool_configs=[IPAMPool(subnet=cidr, gateway=router)])
        return self.docker.networks.create(
            name,
            driver="bridge",
            internal=internal,
            ipam=ipam,
            labels={PROJECT_LABEL: "maha", LABEL_SERVER: self.token, **labels},
        )

    def _subnet_network(self, subnet: dict[str, Any]) -> Any:
        labels = {LABEL_SUBNET: subnet["SubnetId"]}
        if env := _tags(subnet).get("Environment"):
            labels[LABEL_ENV] = env
        return self._network(f"maha-sim-{subnet['SubnetId']}", subnet["CidrBlock"], labels)

    def _public_network(self) -> Any:
        # Internal: no default route through it, so hosts talk to each other from their
        # private addresses, as on AWS, while this machine reaches their public ones.
        return self._network(PUBLIC_NETWORK, PUBLIC_CIDR, {LABEL_SUBNET: "public"}, internal=True)

    def _prune_networks(self, subnets: dict[str, dict[str, Any]]) -> None:
        networks = self.docker.networks.list(filters={"label": [f"{LABEL_SERVER}={self.token}"]})
        for network in networks:
            subnet_id = network.attrs.get("Labels", {}).get(LABEL_SUBNET, "")
            if subnet_id in subnets:
                continue  # the public network goes too once no host uses it
            network.reload()
            if not network.attrs.get("Containers"):
                with contextlib.suppress(NotFound, APIError):
                    network.remove()
                    self.log(f"{network.name}: no subnet or host uses it, removed")

    # -- hosts -------------------------------------------------------------------------------

    def _ebs_store(self) -> str:
        name = ebs_store_name(self.token)
        try:
            self.docker.volumes.get(name)
        except NotFound:
            labels = {PROJECT_LABEL: "maha", LABEL_SERVER: self.token}
            self.docker.volumes.create(name, labels=labels)
        return name

    def _prepare(self) -> tuple[str, str]:
        """The host image and the apt proxy URL, made ready once per server."""
        if self._image is None or self._apt_proxy is None:
            from mahaops.local.hosts import _gateway
            from mahaops.local.image import ensure_image
            from mahaops.local.pkgcache import PORT, ensure_package_cache

            bridge = _gateway(self.docker.networks.get("bridge").attrs)
            ensure_package_cache(bind=["127.0.0.1", bridge])
            self._apt_proxy = f"http://host.docker.internal:{PORT}"
            self._image = ensure_image(self.docker, IMAGE_USER, self.log)
        return self._image, self._apt_proxy

    def _create(
        self, region: str, instance: dict[str, Any], subnets: dict[str, dict[str, Any]]
    ) -> Container:
        instance_id = instance["InstanceId"]
        image, apt_proxy = self._prepare()
        subnet = subnets[instance["SubnetId"]]
        network = self._subnet_network(subnet)
        private = instance["PrivateIpAddress"]
        tags = _tags(instance)
        labels = {
            PROJECT_LABEL: "maha",
            LABEL_SERVER: self.token,
            LABEL_INSTANCE: instance_id,
            LABEL_ENV: tags.get("Environment", ""),
            "maha.sim.name": tags.get("Name", ""),
        }
        container = self.docker.containers.create(
            image,
            name=container_name(instance_id),
            # EC2 would say ip-10-…; the base role then names the host after its Name tag,
            # which a container cannot do later (Docker bind-mounts /etc/hostname).
            hostname=tags.get("Name") or f"ip-{private.replace('.', '-')}",
            labels=labels,
            network=network.name,
            networking_config={
                network.name: self.docker.api.create_endpoint_config(ipv4_address=private)
            },
            volumes={
                "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "ro"},
                self._ebs_store(): {"bind": EBS_STORE, "mode": "rw"},
            },
            tmpfs={"/run": "", "/run/lock": ""},
            cap_add=["NET_ADMIN"],  # nftables inside the host
            stop_signal="SIGRTMIN+3",  # systemd's clean shutdown
            extra_hosts={"host.docker.internal": "host-gateway"},
        )
        try:
            if public := instance.get("PublicIpAddress"):
                self._public_network().connect(container, ipv4_address=public)
            container.start()
            self._first_boot(container, region, instance, apt_proxy)
        except Exception:
            container.remove(force=True)
            raise
        self.log(f"{instance_id}: host {container.name} at {private} {public or ''}".rstrip())
        return container

    def _first_boot(
        self, container: Container, region: str, instance: dict[str, Any], apt_proxy: str
    ) -> None:
        ec2 = self._ec2(region)
        key = ""
        if key_name := instance.get("KeyName"):
            pairs = ec2.describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True)
            key = pairs["KeyPairs"][0].get("PublicKey", "").strip()
        attribute = ec2.describe_instance_attribute(
            InstanceId=instance["InstanceId"], Attribute="userData"
        )
        encoded = attribute.get("UserData", {}).get("Value", "")
        user_data = base64.b64decode(encoded).decode() if encoded else ""
        _wait_for_systemd(container)
        script = first_boot_script(key, apt_proxy, user_data)
        code, output = container.exec_run(
            ["sh", "-c", script], environment={"USER_DATA": user_data}
        )
        if code != 0:
            raise RuntimeError(f"first boot failed: {output.decode(errors='replace')[-2000:]}")


def _wait_for_systemd(container: Container, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _code, output = container.exec_run(["systemctl", "is-system-running"])
        if output.decode().strip() in ("running", "degraded"):
            return
        time.sleep(0.5)
    raise TimeoutError(f"{container.name}: systemd did not finish booting in {timeout:.0f}s")


def first_boot_script(public_key: str, apt_proxy: str, user_data: str) -> str:
    """What cloud-init does at an instance's first boot, as one shell script (runs once).

    The UserData itself comes in the environment (``USER_DATA``), never in the text. Only
    scripts (``#!``) run, as cloud-init's user scripts; other formats (cloud-config) are
    noted in the output log as not run by the stand-in.
    """
    user = FIRST_USER
    lines = [
        "set -eu",
        f"test -e {BOOT_DONE} && exit 0",
        # An AMI has no deploy user: the base role makes it, handing over from admin.
        f"if id {IMAGE_USER} >/dev/null 2>&1; then userdel -r {IMAGE_USER} 2>/dev/null || true; fi",
        f"rm -f /etc/sudoers.d/90-{IMAGE_USER}",
        f"id {user} >/dev/null 2>&1 ||"
        f" useradd --create-home --shell /bin/bash --groups sudo {user}",
        f"passwd -l {user} >/dev/null",
        f"echo '{user} ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/90-cloud-init-users",
        "chmod 440 /etc/sudoers.d/90-cloud-init-users",
        f"install -d -m 700 -o {user} -g {user} /home/{user}/.ssh",
        f"printf '%s\\n' {shlex.quote(public_key)} > /home/{user}/.ssh/authorized_keys",
        f"chown {user}: /home/{user}/.ssh/authorized_keys",
        f"chmod 600 /home/{user}/.ssh/authorized_keys",
        # The sim's way out, in place of an internet gateway: the package cache.
        f"echo 'Acquire::http::Proxy \"{apt_proxy}\";' > {APT_EGRESS}",
        "mkdir -p /var/lib/cloud/instance",
    ]
    if user_data.strip() and not user_data.startswith("#!"):
        lines.append(
            "echo 'sim: UserData is not a #! script; the stand-in runs scripts only'"
            " >> /var/log/cloud-init-output.log"
        )
    elif user_data.strip():
        lines += [
            'printf "%s" "$USER_DATA" > /var/lib/cloud/instance/user-data.txt',
            "chmod 700 /var/lib/cloud/instance/user-data.txt",
            # cloud-final runs it after sshd is up; so does this, in the background.
            "systemd-run --unit=sim-user-data --quiet sh -c"
            " '/var/lib/cloud/instance/user-data.txt >>/var/log/cloud-init-output.log 2>&1'",
        ]
    lines.append(f"touch {BOOT_DONE}")
    return "\n".join(lines) + "\n"
