"""An EBS volume mounted where a role keeps its data (the db hosts' PostgreSQL data and dumps).

EC2 names an attached volume by the device given at attach time (``/dev/sdf``) on Xen
types and ``/dev/nvmeXn1`` on Nitro types, where ``/dev/disk/by-id`` holds a link named
by the volume id: the operation finds the device by the id, so either works.

In the AWS stand-in (``sim``, docs/sim.md) an instance is a container, which can have no
block device and cannot mount: there the volume is a directory the stand-in links at
``/dev/sim-ebs/<volume id>`` when EC2 says it is attached, and ``path`` becomes a link to
it. What it holds outlives the instance as an EBS volume's data does.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import FactBase, StringCommand, operation

from operations.facts import IsContainer


def device_command(volume_id: str) -> str:
    """Shell printing the volume's device, waiting up to 60 s for it to appear."""
    serial = volume_id.replace("-", "")
    candidates = f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial} /dev/xvdf /dev/sdf"
    return (
        "dev=; for i in $(seq 60); do "
        f"for d in {candidates}; do [ -b $d ] && dev=$(readlink -f $d) && break 2; done; "
        'sleep 1; done; [ -n "$dev" ] && echo "$dev"'
    )


class EbsMounted(FactBase[bool]):
    """
    Whether ``path`` is a mount of volume ``volume_id``'s device.

    .. code:: python

        host.get_fact(EbsMounted, volume_id="vol-0abc", path="/var/lib/postgresql")
    """

    def command(self, volume_id: str, path: str) -> str:
        serial = volume_id.replace("-", "")
        return (
            f"src=$(findmnt -no SOURCE {shlex.quote(path)} 2>/dev/null) && "
            f"for d in /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{serial} /dev/xvdf /dev/sdf;"
            ' do [ -b $d ] && [ "$(readlink -f $d)" = "$(readlink -f "$src")" ] && echo yes && '
            "exit 0; done; echo no"
        )

    def process(self, output: list[str]) -> bool:
        return bool(output) and output[-1].strip() == "yes"


SIM_STORE = "/var/lib/sim-ebs"  # every volume's data, in each stand-in host (mahaops/sim)
SIM_DEVICES = "/dev/sim-ebs"  # a link per volume attached to the host (gone at a restart)


class SimEbsLinked(FactBase[str]):
    """
    In the AWS stand-in: ``"linked"`` when ``path`` is the link to volume ``volume_id``,
    ``"no"`` when it is not, ``"none"`` on a host that is no stand-in instance.

    .. code:: python

        host.get_fact(SimEbsLinked, volume_id="vol-0abc", path="/var/lib/postgresql")
    """

    def command(self, volume_id: str, path: str) -> str:
        device = shlex.quote(f"{SIM_DEVICES}/{volume_id}")
        return (
            f"[ -d {SIM_STORE} ] || {{ echo none; exit 0; }}; "
            f'[ "$(readlink {shlex.quote(path)})" = {device} ] && echo linked || echo no'
        )

    def process(self, output: list[str]) -> str:
        return output[-1].strip() if output else "none"


def sim_link_command(volume_id: str, path: str) -> str:
    """Shell waiting up to 60 s for the stand-in to link the volume, then making ``path``
    the volume: a new (empty) volume gets what ``path`` held; over a kept one, what
    ``path`` held is moved aside (``<path>.before-<volume id>``), as a mount hides it."""
    p = shlex.quote(path)
    device = shlex.quote(f"{SIM_DEVICES}/{volume_id}")
    aside = shlex.quote(f"{path}.before-{volume_id}")
    return (
        f"for i in $(seq 60); do [ -d {device} ] && break; sleep 1; done; "
        f"[ -d {device} ] || {{ echo 'volume {volume_id} is not attached' >&2; exit 1; }}; "
        f"if [ -d {p} ] && [ ! -L {p} ]; then "
        f'if [ -z "$(ls -A {device})" ]; then cp -a {p}/. {device}/; rm -rf {p}; '
        f"else rm -rf {aside}; mv {p} {aside}; fi; fi; "
        f"ln -sfn {device} {p}"
    )


def mount_command(volume_id: str, path: str, fs_type: str = "ext4") -> str:
    """Shell formatting the volume if it holds no file system yet (a new volume), copying
    what ``path`` already holds onto it, recording it in fstab by UUID and mounting it."""
    p = shlex.quote(path)
    return (
        f"dev=$({device_command(volume_id)}) || "
        f"{{ echo 'volume {volume_id} is not attached' >&2; exit 1; }}; "
        # blkid -p exits 2 when the device holds no signature at all: only then format.
        'blkid -p "$dev" >/dev/null 2>&1; found=$?; '
        f'if [ $found = 2 ]; then mkfs.{fs_type} -q "$dev"; '
        f'if [ -d {p} ] && [ -n "$(ls -A {p})" ]; then t=$(mktemp -d); '
        f'mount "$dev" "$t" && cp -a {p}/. "$t"/ && umount "$t"; rmdir "$t"; fi; '
        'elif [ $found != 0 ]; then echo "cannot read $dev (blkid: $found)" >&2; exit 1; fi; '
        'uuid=$(blkid -s UUID -o value "$dev"); '
        f"mkdir -p {p}; sed -i '\\| {path} |d' /etc/fstab; "
        f'echo "UUID=$uuid {path} {fs_type} defaults,nofail,x-systemd.device-timeout=60 0 2"'
        " >> /etc/fstab; "
        f"mount {p}"
    )


@operation()
def mounted(volume_id: str, path: str):
    """
    Mount EBS volume ``volume_id`` on ``path`` now and at every boot (fstab, by UUID,
    ``nofail``); a volume with no file system yet is formatted (ext4) and gets what
    ``path`` held. A volume kept from a former host is mounted as it is.

    + volume_id: the attached volume (``vol-...``)
    + path: where its data lives

    **Example:**

    .. code:: python

        mounted(name="Data on its EBS volume", volume_id="vol-0abc", path="/var/lib/postgresql")
    """
    if host.get_fact(IsContainer):  # the AWS stand-in (sim): instances are containers
        linked = host.get_fact(SimEbsLinked, volume_id=volume_id, path=path)
        if linked == "none":
            host.noop(f"a container has no block device for {volume_id}: {path} stays as is")
        elif linked == "linked":
            host.noop(f"{path} is on {volume_id}")
        else:
            yield StringCommand(sim_link_command(volume_id, path))
        return
    if host.get_fact(EbsMounted, volume_id=volume_id, path=path):
        host.noop(f"{path} is on {volume_id}")
        return
    yield StringCommand(mount_command(volume_id, path))
