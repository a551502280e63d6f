"""Adding, removing and replacing instances of an AWS environment (and of the ``sim``, which
runs the AWS code unchanged), peers included.

The order is local.py's (``Lifecycle``: base, admission at the servers it uses, its role,
the peers after, the health gate; out of service, peers without it, then it goes); what
differs is how a host comes and goes:

- a new instance is launched by provisioning's own ``_launch`` (tags, security group,
  instance profile, IMDSv2, encrypted root) into the network and security groups
  provisioning made, and is tagged ``Joining`` until it is in service;
- an app server is in service once it is registered in the app target group and
  ``describe_target_health`` says healthy; it leaves through ``ec2.drain`` (deregistered,
  the deregistration delay waited out);
- a host goes by ``terminate_instances``;
- the new count is kept (``mahaops/aws/shape.py``), so ``invoke provision`` keeps it.

db hosts are not scaled or removed here (their data volume and termination protection
are provisioning's). ``replace`` moves a db host's EBS data volume to its successor
(``create_on_data``: the old instance stopped, the volume detached, the new instance
launched in the volume's zone and given it, as provisioning attaches a kept volume); the
old instance goes only after the clients have moved, its termination protection lifted
by this command alone.
"""

from __future__ import annotations

import base64
import contextlib
import io
import ipaddress
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from rich.console import Console

from mahaops.aws import ec2 as aws_ec2
from mahaops.aws import elb as aws_elb
from mahaops.aws import network, security, shape
from mahaops.aws.config import load_environment
from mahaops.aws.inventory import hosts as inventory_hosts
from mahaops.aws.plan import Context, context_of, pending, tags_of
from mahaops.fleet.lock import STATE_DIR
from mahaops.fleet.ssh import as_root, role_of, run_one
from mahaops.hosts import HostSpec
from mahaops.lifecycle import plan as planning
from mahaops.lifecycle.local import SSH_PROBE_S, Lifecycle, LifecycleError, Outcome, Row
from mahaops.roles import role
from mahaops.settings import DEFAULT_GROUP_DATA, GroupData
from mahaops.settings.aws import REQUIRED_ROLES
from mahaops.settings.local import check_shape

JOINING_TAG = "Joining"  # on an instance launched or started until it is in service
SSH_READY_S = 300.0  # a launched instance's sshd answers within this (the sim: at once)
IN_SERVICE_S = 300.0  # a new app server's target turns healthy within this
STATE_PIECE = 60_000  # base64 characters per command copying the lock and audit log


class AwsHost:
    """An instance as the inventory gives it, with what ``Lifecycle`` reads of a host."""

    def __init__(self, spec: HostSpec) -> None:
        self._spec = spec
        self.name = spec.name
        self.role = role_of(spec)
        self.private_address = str(spec.data.get("private_address") or "")
        self.instance_id = str(spec.data.get("instance_id") or "")

    def spec(self) -> HostSpec:
        return self._spec


class AwsLifecycle(Lifecycle):
    """One command's work on AWS environment ``env`` (``dry``: AWS is only read)."""

    kind = "aws"

    def __init__(
        self,
        env: str,
        say: Callable[[str], None] = print,
        capture: bool = False,
        dry: bool = False,
        session: boto3.Session | None = None,
        group_data: Path = DEFAULT_GROUP_DATA,
    ) -> None:
        self.env = env
        self.say = say
        self.capture = capture
        self.group_data = GroupData(group_data)
        self.outcome = Outcome()
        self.group_data_path = group_data
        self.loaded = load_environment(env, group_data)
        self.session = session
        quiet = Console(file=io.StringIO())  # provisioning's steps are not this command's
        self.ctx: Context = context_of(self.loaded, session, dry=dry, console=quiet)
        self._launch_with: tuple[str, tuple[str, str]] | None = None

    # -- names and counts -------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        return self.ctx.name() + "-"  # maha-<env>-

    def host_name(self, name: str) -> str:
        return name.removeprefix(self.prefix)  # maha-sim-app-1 and app-1 alike

    def named(self, changes: planning.Changes) -> planning.Changes:
        def full(names: list[str]) -> list[str]:
            return [self.ctx.name(n) for n in names]

        return planning.Changes(
            changes.role,
            create=full(changes.create),
            restart=full(changes.restart),
            remove=full(changes.remove),
            lost=full(changes.lost),
        )

    def persist(self, role_name: str, count: int) -> None:
        where = shape.path(self.ctx.project, self.env, role_name)
        if self.ctx.dry:
            self.outcome.rows.append(
                Row(where, role_name, "would keep the count", "", f"{count}: provision reads it")
            )
            return
        shape.set_desired_count(self.ctx.clients.ssm, self.ctx.project, self.env, role_name, count)
        self.outcome.rows.append(
            Row(where, role_name, "count kept", "", f"{count}: invoke provision keeps it")
        )

    # -- what exists ------------------------------------------------------------------------------

    def _instances(self) -> dict[str, dict[str, Any]]:
        """Live instances of the environment by Name (the oldest of duplicates)."""
        return {n: found[0] for n, found in aws_ec2.existing_instances(self.ctx).items() if found}

    def existing(self) -> list[planning.Existing]:
        found = []
        for name, instance in self._instances().items():
            role_name = tags_of(instance).get("Role", "")
            short = self.host_name(name)
            if not name.startswith(self.prefix) or not short.startswith(f"{role_name}-"):
                continue  # not one of ours by name: provisioning's business
            running = instance["State"]["Name"] == "running"
            found.append(planning.Existing(short, role_name, running))
        return found

    def hosts(self) -> list[AwsHost]:  # type: ignore[override]
        found = inventory_hosts(self.env, session=self.session, group_data=self.group_data_path)
        return [AwsHost(spec) for spec in found]

    def data_of(self, role_name: str) -> dict[str, Any]:
        return self.group_data.merged(("aws", role(role_name).group), self.loaded.spec.settings)

    def check(self, changes: planning.Changes) -> None:
        if changes.role == "db" and (changes.create or changes.remove):
            raise LifecycleError(
                f"{self.env}: db hosts are not scaled, removed or replaced by these commands on"
                " AWS (their data volume and termination protection are provisioning's)"
            )
        after = planning.shape_after(changes, self.existing())
        for needed in REQUIRED_ROLES:
            if after.get(needed, 0) < 1:
                raise ValueError(f"{needed}: the platform needs at least one {needed} host")
        check_shape(after)

    def _instance_id(self, name: str) -> str:
        instance = self._instances().get(name)
        if instance is None:
            raise LifecycleError(f"no instance {name} in {self.env}")
        return str(instance["InstanceId"])

    def _spec_of(self, name: str) -> HostSpec | None:
        return next((h.spec() for h in self.hosts() if h.name == name), None)

    # -- on the hosts -----------------------------------------------------------------------------

    def _exec(self, name: str, command: str) -> tuple[int, str]:
        spec = self._spec_of(name)
        if spec is None:
            return 255, f"{name} is not running"
        outcome = run_one(spec, as_root(command), timeout=600)
        code = 255 if outcome.exited is None else outcome.exited
        return code, outcome.stdout + outcome.stderr + outcome.error

    def _mark(self, name: str, joining: bool) -> None:
        """The joining mark is a tag: seen in the console, and readable with the host down."""
        self._tag_joining(self._instance_id(name), joining)

    def _tag_joining(self, instance_id: str, joining: bool) -> None:
        ec2 = self.ctx.clients.ec2
        if joining:
            ec2.create_tags(Resources=[instance_id], Tags=[{"Key": JOINING_TAG, "Value": "yes"}])
        else:
            ec2.delete_tags(Resources=[instance_id], Tags=[{"Key": JOINING_TAG}])

    def joining(self, role_name: str) -> list[str]:
        return sorted(
            name
            for name, instance in self._instances().items()
            if tags_of(instance).get("Role") == role_name
            and JOINING_TAG in tags_of(instance)
            and instance["State"]["Name"] == "running"
        )

    def reachable(self, name: str) -> bool:
        instance = self._instances().get(name)
        if instance is None or instance["State"]["Name"] != "running":
            return False
        spec = self._spec_of(name)
        return spec is not None and run_one(spec, "true", timeout=SSH_PROBE_S).ok

    # -- adding -----------------------------------------------------------------------------------

    def _prepare(self) -> tuple[str, tuple[str, str]]:
        """(key pair, image) for launching, and the network's and security groups' ids as
        provisioning made them, read by a dry run of its steps: this command never changes
        them (that is ``invoke provision``'s), and refuses an environment not provisioned."""
        if self._launch_with is not None:
            return self._launch_with
        spec = self.loaded.spec
        # The probe's session refuses mutating calls; a session given (moto, in tests) is
        # shared with this command's own, so the probe gets a new one beside it.
        fresh = boto3.Session(region_name=spec.region) if self.session is not None else None
        probe = context_of(self.loaded, fresh, dry=True, console=Console(file=io.StringIO()))
        network.ensure_network(probe)
        openings = security.declared_openings(self.loaded, self.group_data_path)
        security.ensure_security_groups(probe, openings)
        if any(pending(v) for v in probe.ids.values()):
            raise LifecycleError(
                f"{self.env} is not provisioned: `invoke provision --env {self.env}`"
            )
        drift = [f"{c.kind} {c.name}" for c in probe.plan if c.action != "no change"]
        if drift:
            self.say(f"note: provision would change {', '.join(drift)} (not done by this command)")
        self.ctx.ids.update(probe.ids)
        image = aws_ec2.find_debian_ami(self.ctx)
        self._launch_with = (self.ctx.name(), image)
        return self._launch_with

    def _bring_up(self, changes: planning.Changes) -> None:
        ec2 = self.ctx.clients.ec2
        started: list[str] = []
        for name in changes.restart:
            self.say(f"Starting {name} again")
            instance_id = self._instance_id(name)
            ec2.start_instances(InstanceIds=[instance_id])
            started.append(instance_id)
        if changes.create:
            key_name, image = self._prepare()
            for name in changes.create:
                self.say(f"Launching {name}")
                index = planning.index_of(self.host_name(name))
                instance_id = aws_ec2._launch(
                    self.ctx, changes.role, name, index - 1, key_name, image
                )
                self._tag_joining(instance_id, True)  # its id is known: no lookup by name
                started.append(instance_id)
        if not started:
            return
        self.say(f"Waiting for {len(started)} instance(s) to run")
        ec2.get_waiter("instance_running").wait(
            InstanceIds=started, WaiterConfig={"Delay": 5, "MaxAttempts": 120}
        )
        for name in [*changes.create, *changes.restart]:
            spec = self._wait_for_ssh(name)
            if name in changes.create:
                address = str(spec.data.get("private_address") or "")
                self.outcome.rows.append(Row(name, changes.role, "launched", address))
            else:
                self._mark(name, True)
                self._repair_dpkg(name)

    def _wait_for_ssh(self, name: str) -> HostSpec:
        deadline = time.monotonic() + SSH_READY_S
        while True:
            spec = self._spec_of(name)
            if spec is not None and run_one(spec, "true", timeout=10).ok:
                return spec
            if time.monotonic() > deadline:
                raise LifecycleError(f"{name}: no SSH after {SSH_READY_S:.0f} s")
            time.sleep(3)

    def _target_group(self) -> str:
        groups = self.ctx.clients.elbv2.describe_target_groups(Names=[self.ctx.name("app")])
        return str(groups["TargetGroups"][0]["TargetGroupArn"])

    def gate(self, role_name: str, names: Sequence[str], timeout: float = IN_SERVICE_S) -> None:
        """A new app server is in service once the target group says it is healthy (the
        load balancer's own health checks through its port)."""
        if role_name not in planning.SERVING_ROLES:
            return
        elbv2, arn = self.ctx.clients.elbv2, self._target_group()
        ids = [self._instance_id(n) for n in names]
        self.say(f"Registering {', '.join(names)} in {self.ctx.name('app')}")
        elbv2.register_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in ids])
        mark = time.monotonic()
        try:
            aws_elb.wait_healthy(elbv2, arn, instance_ids=ids, timeout=timeout, interval=3)
        except Exception as exc:
            elbv2.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": i} for i in ids])
            raise LifecycleError(f"{', '.join(names)} never turned healthy: {exc}") from exc
        self.outcome.timings["in service"] = time.monotonic() - mark
        self.say(f"{', '.join(names)} healthy in the target group: in service")

    def _plan_add(
        self,
        changes: planning.Changes,
        before: Sequence[planning.Peer],
        after: Sequence[planning.Peer],
    ) -> list[str]:
        """Dry run: the peers' deploys planned with the new instances in the inventory, at
        addresses EC2 will choose at launch (the subnet's first free ones stand in)."""
        self._prepare()
        planned = []
        current = self.hosts()
        # A sibling's inventory data (any host's without one), with the new address.
        like = next((h for h in current if h.role == changes.role), None) or current[0]
        for name in changes.create:
            address = self._predicted_address(planning.index_of(self.host_name(name)) - 1)
            data = {
                **like.spec().data,
                "private_address": address,
                "ssh_hostname": address,
                "instance_id": "(known after launch)",
                "role": changes.role,
            }
            planned.append(HostSpec(name, ("aws", role(changes.role).group), data))
            self.outcome.rows.append(
                Row(name, changes.role, "would be launched", address, "address predicted")
            )
            if changes.role in planning.SERVING_ROLES:
                self.outcome.rows.append(
                    Row(self.ctx.name("app"), "", "would register", "", f"{name}, health-gated")
                )
        for name in changes.restart:
            self.outcome.rows.append(Row(name, changes.role, "would be started again"))
        names = self.converge_peers(
            "Planning peers", changes.role, [*before, *after], dry=True, extra=planned
        )
        for name in names:
            self.outcome.rows.append(Row(name, "", "would be re-converged", "", "diffs above"))
        return [s.name for s in planned]

    def _predicted_address(self, index: int) -> str:
        tier = "subnets:public" if self.loaded.spec.access == "public" else "subnets:private"
        subnets = self.ctx.ids[tier]
        subnet_id = subnets[index % len(subnets)]
        described = self.ctx.clients.ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"][0]
        used = {h.private_address for h in self.hosts()}
        # AWS keeps a subnet's first four addresses.
        for address in list(ipaddress.ip_network(described["CidrBlock"]).hosts())[3:]:
            if str(address) not in used:
                return str(address)
        return ""

    # -- replacing the db host (takeover.py) -------------------------------------------------------

    def read_state(self, name: str) -> bytes | None:
        spec = self._spec_of(name)
        if spec is None:
            return None
        script = f"[ -d {STATE_DIR} ] && tar -C /var/lib -cf - maha | base64 -w0"
        outcome = run_one(spec, as_root(script), timeout=120)
        return base64.b64decode(outcome.stdout) if outcome.ok and outcome.stdout else None

    def write_state(self, name: str, archive: bytes) -> None:
        spec = self._wait_for_ssh(name)
        encoded = base64.b64encode(archive).decode()
        staged = "/root/maha-state.tar.b64"
        # In pieces: one command line carries at most 128 KiB, an audit log may not fit.
        pieces = [encoded[i : i + STATE_PIECE] for i in range(0, len(encoded), STATE_PIECE)]
        for index, piece in enumerate(pieces or [""]):
            redirect = ">" if index == 0 else ">>"
            outcome = run_one(spec, as_root(f"printf %s {piece} {redirect} {staged}"), timeout=60)
            if not outcome.ok:
                raise LifecycleError(f"{name}: could not copy the deploy lock: {outcome.stderr}")
        script = f"base64 -d {staged} | tar -C /var/lib -xf - && rm -f {staged}"
        outcome = run_one(spec, as_root(script), timeout=60)
        if not outcome.ok:
            raise LifecycleError(f"{name}: could not unpack the deploy lock: {outcome.stderr}")

    def create_on_data(self, role_name: str, old: str, new: str) -> str:
        """Instance ``new`` on ``old``'s EBS data volume: ``old`` stopped (its termination
        protection allows that), the volume detached, renamed for ``new``, and attached to
        ``new``, launched in the volume's zone."""
        if role_name != "db":
            raise LifecycleError(f"{role_name} hosts keep no data volume on AWS")
        ec2 = self.ctx.clients.ec2
        key_name, image = self._prepare()  # before anything stops: a refusal changes nothing
        volume = self._data_volume(old)
        instance = self._instances().get(old)
        old_id = instance["InstanceId"] if instance is not None else None
        if old_id is not None:
            self.say(f"Stopping instance {old}")
            ec2.stop_instances(InstanceIds=[old_id])
            ec2.get_waiter("instance_stopped").wait(
                InstanceIds=[old_id], WaiterConfig={"Delay": 5, "MaxAttempts": 120}
            )
        volume_id = volume["VolumeId"]
        for attachment in volume.get("Attachments", []):
            self.say(f"Detaching its data volume {volume_id}")
            ec2.detach_volume(
                VolumeId=volume_id,
                InstanceId=attachment["InstanceId"],
                Device=attachment["Device"],
            )
            ec2.get_waiter("volume_available").wait(
                VolumeIds=[volume_id], WaiterConfig={"Delay": 3, "MaxAttempts": 100}
            )
        name_tag = [{"Key": "Name", "Value": aws_ec2.data_volume_name(new)}]
        ec2.create_tags(Resources=[volume_id], Tags=name_tag)  # provisioning finds it by name
        self.say(f"Launching {new} in {volume['AvailabilityZone']}, beside the volume")
        index = planning.index_of(self.host_name(new))
        instance_id = aws_ec2._launch(
            self.ctx, role_name, new, index - 1, key_name, image, volume["AvailabilityZone"]
        )
        self._tag_joining(instance_id, True)
        ec2.get_waiter("instance_running").wait(
            InstanceIds=[instance_id], WaiterConfig={"Delay": 5, "MaxAttempts": 120}
        )
        # As provisioning does: attached after launch, so DeleteOnTermination stays false.
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=aws_ec2.DATA_DEVICE)
        ec2.get_waiter("volume_in_use").wait(VolumeIds=[volume_id])
        spec = self._wait_for_ssh(new)
        self._tag_joining(instance_id, False)
        return str(spec.data.get("private_address") or "")

    def _data_volume(self, name: str) -> dict[str, Any]:
        volumes = aws_ec2.data_volumes(self.ctx)
        volume = volumes.get(aws_ec2.data_volume_name(name))
        if volume is None:
            raise LifecycleError(
                f"{name} has no data volume ({aws_ec2.data_volume_name(name)}): nothing to "
                "move to a new host"
            )
        return volume

    def discard_replaced(self, old: str) -> None:
        """The old db instance goes (its protection lifted here, by the operator's command);
        its data volume is the new one's."""
        instance = self._instances().get(old)
        if instance is None:
            return
        self.ctx.clients.ec2.modify_instance_attribute(
            InstanceId=instance["InstanceId"], DisableApiTermination={"Value": False}
        )
        self._discard(old)

    # -- removing ---------------------------------------------------------------------------------

    def take_out(self, name: str, role_name: str) -> str:
        if role_name == "app":
            self.say(f"Draining {name} from {self.ctx.name('app')}")
            mark = time.monotonic()
            aws_ec2.drain(self.ctx, self._instance_id(name))
            self.outcome.timings["drain"] = time.monotonic() - mark
            self._exec(name, "timeout 60 systemctl stop maha-web nginx")
            return "deregistered, its connections drained"
        if role_name == "worker":
            return super().take_out(name, role_name)
        return "stopped with its instance"

    def _drain_plan(self, role_name: str) -> str:  # type: ignore[override]
        if role_name == "app":
            delay = self.loaded.spec.deregistration_delay
            return f"deregistered from {self.ctx.name('app')} ({delay} s delay), then terminated"
        return Lifecycle._drain_plan(role_name)

    def _discard(self, name: str) -> str:
        instance = self._instances().get(name)
        if instance is None:
            return ""  # gone already: removing is done
        self.say(f"Terminating {name}")
        ec2 = self.ctx.clients.ec2
        if tags_of(instance).get("Role") == "app":  # a lost app server may still be a target
            with contextlib.suppress(ClientError):
                target = [{"Id": instance["InstanceId"]}]
                self.ctx.clients.elbv2.deregister_targets(
                    TargetGroupArn=self._target_group(), Targets=target
                )
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
        return str(instance.get("PrivateIpAddress") or "")
