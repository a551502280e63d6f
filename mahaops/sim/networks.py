"""The stand-in's address ranges against this machine's: a VPC that overlaps a network
already here would shadow it (or be shadowed), so it is refused before anything is made."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mahaops.sim import PUBLIC_CIDR, SimError

Network = ipaddress.IPv4Network


def kernel_routes(path: Path = Path("/proc/net/route")) -> list[tuple[Network, str]]:
    """This machine's IPv4 routes (network, interface), the default route left out."""
    routes = []
    for line in path.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        iface, dest, mask = fields[0], int(fields[1], 16), int(fields[7], 16)
        if mask == 0:
            continue  # the default route: every address "overlaps" it
        # /proc/net/route prints addresses in host (little-endian) byte order.
        addr = ipaddress.IPv4Address(dest.to_bytes(4, "little"))
        prefix = bin(mask).count("1")
        routes.append((ipaddress.IPv4Network(f"{addr}/{prefix}", strict=False), iface))
    return routes


def docker_networks(client: Any) -> list[tuple[Network, str]]:
    """(subnet, name) of every Docker network with an IPv4 subnet."""
    found = []
    for network in client.networks.list():
        for config in (network.attrs.get("IPAM") or {}).get("Config") or []:
            subnet = config.get("Subnet", "")
            if subnet and ":" not in subnet:
                found.append((ipaddress.IPv4Network(subnet), network.name))
    return found


def collisions(
    wanted: Network, routes: Iterable[tuple[Network, str]], networks: Iterable[tuple[Network, str]]
) -> list[str]:
    """What on this machine ``wanted`` overlaps: Docker networks, then other routes.

    A sim's own networks count too: at start there must be none (another sim server
    runs, or a lost one left them: ``invoke sim.down`` removes them).
    """
    networks = list(networks)
    hits = [f"Docker network {name} ({net})" for net, name in networks if net.overlaps(wanted)]
    docker_nets = {net for net, _name in networks}
    hits += [
        f"route {net} on {iface}"
        for net, iface in routes
        if net not in docker_nets and net.overlaps(wanted)
    ]
    return hits


def check_free(client: Any, cidrs: dict[str, str]) -> None:
    """Refuse when a range the stand-in would use overlaps a network of this machine
    (checked when the server starts, before it makes anything).

    ``cidrs`` maps where a range comes from (``group_data/aws.py: aws_environments.sim.
    vpc_cidr``) to the range; moto's public range is always checked too.
    """
    wanted = {**cidrs, f"moto's public addresses ({PUBLIC_CIDR})": PUBLIC_CIDR}
    routes, networks = kernel_routes(), docker_networks(client)
    problems = []
    for source, cidr in wanted.items():
        hits = collisions(ipaddress.IPv4Network(cidr), routes, networks)
        if hits:
            problems.append(f"{source}: {cidr} overlaps {', '.join(hits)}")
    if problems:
        raise SimError(
            "the sim VPC must not collide with a network of this machine; "
            + "; ".join(problems)
            + " (choose another range)"
        )
