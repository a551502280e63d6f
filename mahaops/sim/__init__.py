"""The ``sim`` stand-in: an AWS environment whose API is moto on 127.0.0.1, whose EC2
instances are Docker hosts made from the local platform's host image.

An environment in group_data/aws.py with ``profile = "maha-sim"`` (:data:`SIM_PROFILE`)
is run here: ``mahaops.aws.session.make_session`` starts the moto server on first use
(``server``) and points boto3 at it, so provisioning, the AWS inventory and the deploys
run unchanged. The same process keeps Docker in step with EC2 (``hosts``): a container
per running instance, on a network per subnet, at the instance's own addresses.
See docs/sim.md.
"""

from __future__ import annotations

from pathlib import Path

SIM_PROFILE = "maha-sim"
"""The AWS profile of environments run by the stand-in (it is written, not read, by us)."""

PUBLIC_CIDR = "54.214.0.0/16"
"""Where moto draws public addresses from; the stand-in routes it to its hosts only."""

LABEL_INSTANCE = "maha.sim.instance"
LABEL_SERVER = "maha.sim.server"  # the moto server whose instance a container is
LABEL_SUBNET = "maha.sim.subnet"
LABEL_ENV = "maha.sim.env"
PROJECT_LABEL = "maha.project"


class SimError(RuntimeError):
    """The stand-in cannot do what was asked; the message says why and what to do."""


def sim_home() -> Path:
    """``$MAHA_HOME/sim-server``: the moto server's pid, port, log and AWS config."""
    from mahaops.secrets import maha_home

    path = maha_home() / "sim-server"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
