"""The stand-in's process: moto's server on 127.0.0.1 and the reconciler, one lifetime.

    python -m mahaops.sim.daemon --port P --token T --regions eu-west-1

Started by ``mahaops.sim.server.start`` (never by hand); SIGTERM stops both. moto is
given Debian 12 images (``debian-amis.json``, the owner and names provisioning looks
for), four shims for gaps in moto 5.2 that a real account does not have, instances
that stay ``pending`` until their host has booted, and the ALB stand-in (``alb``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

AMIS = Path(__file__).with_name("debian-amis.json")


PLAIN_HTTP_ONLY = {"Bool": {"aws:SecureTransport": "false"}}


def tls_only_bucket_policies() -> None:
    """moto ignores a bucket policy's conditions, so the buckets' "deny plain HTTP" statement
    denies every request. Requests to the stand-in stand for AWS's TLS endpoint: that
    statement is left out when moto weighs a request (the rest of the policy still is)."""
    import json

    from moto.iam.access_control import IAMPolicy, PermissionResult
    from moto.s3.models import FakeBucket

    if getattr(FakeBucket.get_permission, "_maha_shim", False):
        return

    def get_permission(self: Any, action: str, resource: str) -> Any:
        policy = json.loads(self.policy) if self.policy is not None else {}
        kept = [s for s in policy.get("Statement", []) if s.get("Condition") != PLAIN_HTTP_ONLY]
        if not kept:
            return PermissionResult.NEUTRAL
        return IAMPolicy(json.dumps({**policy, "Statement": kept})).is_action_permitted(
            action, resource
        )

    get_permission._maha_shim = True  # type: ignore[attr-defined]
    FakeBucket.get_permission = get_permission  # type: ignore[method-assign]


def termination_protection_at_launch() -> None:
    """moto 5.2 drops RunInstances' DisableApiTermination (ModifyInstanceAttribute keeps it,
    and TerminateInstances then refuses, as AWS does)."""
    import contextvars

    from moto.ec2.models import instances as models
    from moto.ec2.responses import instances as responses

    original_init = models.Instance.__init__
    if getattr(original_init, "_maha_shim", False):
        return
    asked: contextvars.ContextVar[bool] = contextvars.ContextVar("asked", default=False)
    original_run = responses.InstanceResponse.run_instances

    def run_instances(self: Any) -> Any:
        token = asked.set(bool(self._get_bool_param("DisableApiTermination", False)))
        try:
            return original_run(self)
        finally:
            asked.reset(token)

    def instance_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.disable_api_termination = self.disable_api_termination or asked.get()

    instance_init._maha_shim = True  # type: ignore[attr-defined]
    models.Instance.__init__ = instance_init  # type: ignore[method-assign]
    responses.InstanceResponse.run_instances = run_instances  # type: ignore[method-assign]


def moto_shims() -> None:
    """moto 5.2 lacks DeleteKeyGroup, drops an origin's OriginAccessControlId and
    RunInstances' DisableApiTermination, and weighs a bucket policy without its
    conditions; AWS does all four."""
    from moto.cloudfront import models, responses
    from moto.core.responses import EmptyResult

    tls_only_bucket_policies()
    termination_protection_at_launch()

    if not hasattr(models.CloudFrontBackend, "delete_key_group"):

        def delete_key_group(self: Any, group_id: str) -> None:
            self.key_groups.pop(group_id, None)

        def delete_key_group_response(self: Any) -> Any:
            self.backend.delete_key_group(self._get_param("Id"))
            return EmptyResult()

        models.CloudFrontBackend.delete_key_group = delete_key_group  # type: ignore[attr-defined]
        responses.CloudFrontResponse.delete_key_group = delete_key_group_response  # type: ignore[attr-defined]

    original = models.Origin.__init__
    if getattr(original, "_maha_shim", False):
        return

    def origin_init(self: Any, origin: dict[str, Any]) -> None:
        original(self, origin)
        self.origin_access_control_id = origin.get("OriginAccessControlId", "")

    origin_init._maha_shim = True  # type: ignore[attr-defined]
    models.Origin.__init__ = origin_init  # type: ignore[method-assign]


def instances_boot() -> Callable[[str, str], None]:
    """New instances start ``pending`` (moto makes them ``running`` at once); the returned
    callable marks one ``running`` when the reconciler made and booted its host."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import Instance, InstanceState

    original = Instance.__init__

    def pending_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._state = InstanceState("pending", 0)

    Instance.__init__ = pending_init  # type: ignore[method-assign]

    def ready(region: str, instance_id: str) -> None:
        instance = ec2_backends[DEFAULT_ACCOUNT_ID][region].get_instance(instance_id)
        if instance._state.name == "pending":
            instance._state = InstanceState("running", 16)

    return ready


def s3_for_hosts(port: int, stop: threading.Event) -> None:
    """moto's API where the hosts reach this machine (``host.docker.internal``, the Docker
    bridge's gateway, as for the package cache): the sim's S3 from inside its VPC, as a
    VPC endpoint makes S3 reachable from private subnets. Retried until Docker answers."""
    import docker

    from mahaops.local.hosts import _gateway
    from mahaops.sim.alb import forward

    while not stop.is_set():
        try:
            bridge = _gateway(docker.from_env().networks.get("bridge").attrs)
            forward((bridge, port), ("127.0.0.1", port))
            _log(f"moto for the hosts on {bridge}:{port}")
            return
        except Exception as exc:
            _log(f"moto for the hosts: {type(exc).__name__}: {exc}; trying again")
            stop.wait(5)


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mahaops.sim.daemon")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--regions", required=True)
    parser.add_argument("--interval", type=float, default=2.0)
    args = parser.parse_args(argv)

    # Read when moto's EC2 models are imported: set before the first moto import.
    os.environ["MOTO_AMIS_PATH"] = str(AMIS)
    os.environ["MOTO_EC2_LOAD_DEFAULT_AMIS"] = "false"
    for name in ("werkzeug", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)  # no line per request

    from moto.server import ThreadedMotoServer

    from mahaops.sim.hosts import Reconciler

    moto_shims()
    ready = instances_boot()
    from mahaops.sim import sim_home
    from mahaops.sim.alb import LoadBalancers

    balancers = LoadBalancers(args.regions.split(","), sim_home(), _log)
    balancers.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=args.port, verbose=False)
    server.start()
    _log(f"moto on 127.0.0.1:{args.port} (token {args.token}, regions {args.regions})")

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    reconciler = Reconciler(
        f"http://127.0.0.1:{args.port}",
        args.regions.split(","),
        args.token,
        log=_log,
        on_ready=ready,
    )
    threading.Thread(target=balancers.run, args=(stop,), daemon=True).start()
    threading.Thread(target=s3_for_hosts, args=(args.port, stop), daemon=True).start()
    reconciler.run(stop, args.interval)
    server.stop()
    _log("stopped: the AWS state this server held is gone")
    return 0


if __name__ == "__main__":
    sys.exit(main())
