"""boto3 sessions and clients: standard retries, a call log, and the dry-run guard.

Clients are made without an explicit ``endpoint_url`` so botocore's own
configuration (profiles, ``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_<SERVICE>``)
stays in charge.
"""

from __future__ import annotations

import os
import threading
from functools import cached_property
from typing import Any

import boto3
from botocore.config import Config

from mahaops.sim import SIM_PROFILE

CALL_LOG_ENV = "MAHA_AWS_CALL_LOG"
"""If set, every AWS operation is appended to this file as ``service Operation``."""

# Throttling and transient errors are retried with backoff by botocore's standard mode.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    user_agent_extra="mahaops",
    connect_timeout=10,
    read_timeout=60,
)

_READ_PREFIXES = ("Describe", "List", "Get", "Head")
_log_lock = threading.Lock()


def is_mutating(operation: str) -> bool:
    """Whether an API operation may change AWS (anything not Describe/List/Get/Head)."""
    return not operation.startswith(_READ_PREFIXES)


class DryRunViolation(RuntimeError):
    """A mutating AWS call was attempted during ``--dry``: a bug, never a change."""


def _record_call(model: Any, **_: Any) -> None:
    path = os.environ.get(CALL_LOG_ENV)
    if not path:
        return
    with _log_lock, open(path, "a", encoding="utf-8") as handle:
        handle.write(f"{model.service_model.service_name} {model.name}\n")


def _refuse_mutation(model: Any, **_: Any) -> None:
    if is_mutating(model.name):
        raise DryRunViolation(
            f"{model.service_model.service_name}.{model.name} refused: --dry changes nothing"
        )


# Right after a VPC, subnet, security group or instance profile is made, other calls may
# not see it yet for seconds (eventual consistency): AWS answers "not found" or, for a
# profile, "Invalid IAM Instance Profile". Calls that build on a new resource retry these
# with backoff for about two minutes; reads (existence checks) and deletes never do.
EVENTUAL_CODES = frozenset(
    {
        "InvalidGroup.NotFound",
        "InvalidSubnetID.NotFound",
        "InvalidVpcID.NotFound",
        "InvalidRouteTableID.NotFound",
        "InvalidInternetGatewayID.NotFound",
        "InvalidAllocationID.NotFound",
        "InvalidInstanceID.NotFound",
        "InvalidNetworkInterfaceID.NotFound",
        "InvalidSubnet",  # ELB: a subnet it cannot see yet
        "InvalidConfigurationRequest",  # ELB: a security group it cannot see yet
    }
)
_BUILDS_ON = ("Create", "Run", "Authorize", "Attach", "Associate", "Modify", "Register", "Put")
EVENTUAL_ATTEMPTS = 10  # 1+2+4+8+16+20*5 s of waiting: about two minutes


def eventual_retry_delay(
    response: Any = None, attempts: int = 0, operation: Any = None, **_: Any
) -> float | None:
    """botocore ``needs-retry`` hook: seconds to wait before retrying a call that failed
    only because a resource made a moment ago is not visible yet; None otherwise."""
    if response is None or operation is None or attempts >= EVENTUAL_ATTEMPTS:
        return None
    if not str(operation.name).startswith(_BUILDS_ON):
        return None
    error = (response[1] or {}).get("Error", {}) if isinstance(response, tuple) else {}
    code, message = str(error.get("Code", "")), str(error.get("Message", "")).lower()
    profile = code == "InvalidParameterValue" and "instance profile" in message
    if code not in EVENTUAL_CODES and not profile:
        return None
    return float(min(2 ** (attempts - 1), 20))


def make_session(
    region: str | None = None, profile: str | None = None, *, dry: bool = False
) -> boto3.Session:
    """A session for one environment; with ``dry``, mutating calls raise instead of running.

    The profile ``maha-sim`` is the stand-in on this machine (docs/sim.md): its moto
    server, started on first use, with its endpoint and dummy credentials.
    """
    if profile == SIM_PROFILE:
        from mahaops.sim.server import session as sim_session

        return instrument(sim_session(region), dry=dry)
    return instrument(boto3.Session(profile_name=profile, region_name=region), dry=dry)


def instrument(session: boto3.Session, *, dry: bool = False) -> boto3.Session:
    """Log calls to ``$MAHA_AWS_CALL_LOG``; with ``dry``, refuse mutating ones from now on.

    Hooks apply to clients made after this call; registering twice is harmless.
    """
    session.events.register("before-call.*.*", _record_call, unique_id="maha-call-log")
    hooks: Any = session.events  # the stubs want handlers returning None; a delay is the API
    hooks.register_first("needs-retry", eventual_retry_delay, unique_id="maha-eventual-consistency")
    if dry:
        session.events.register("before-call.*.*", _refuse_mutation, unique_id="maha-dry-guard")
    return session


class Clients:
    """The clients provisioning needs, made once per session."""

    def __init__(self, session: boto3.Session) -> None:
        self.session = session

    def _client(self, service: str, region: str | None = None) -> Any:
        session: Any = self.session  # service names are chosen at run time: untyped client
        return session.client(service, region_name=region, config=CLIENT_CONFIG)

    @property
    def region(self) -> str:
        return str(self.session.region_name)

    @cached_property
    def ec2(self) -> Any:
        return self._client("ec2")

    @cached_property
    def elbv2(self) -> Any:
        return self._client("elbv2")

    @cached_property
    def iam(self) -> Any:
        return self._client("iam")

    @cached_property
    def s3(self) -> Any:
        return self._client("s3")

    @cached_property
    def ssm(self) -> Any:
        return self._client("ssm")

    @cached_property
    def sts(self) -> Any:
        return self._client("sts")

    @cached_property
    def cloudfront(self) -> Any:
        return self._client("cloudfront", region="us-east-1")  # a global service

    @cached_property
    def account_id(self) -> str:
        return str(self.sts.get_caller_identity()["Account"])
