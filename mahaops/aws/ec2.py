"""EC2: the Debian 12 image, the SSH key pair, and the instances of each role.

Instances are named ``maha-<env>-<role>-<n>`` and found by their tags, so a
second run finds them instead of launching more. Every instance gets an
encrypted gp3 root volume and requires IMDSv2 tokens. A new Debian release
does not replace running instances; it is used for the next ones launched.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mahaops.aws import shape
from mahaops.aws.iam import profile_for
from mahaops.aws.plan import PENDING, Context, ProvisionError, pending, tags_of
from mahaops.settings import SettingsError
from mahaops.settings.aws import EC2_ROLES, AwsEnvironment

LIVE_STATES = ["pending", "running", "stopping", "stopped"]


# -- the image ---------------------------------------------------------------------------------


def find_debian_ami(ctx: Context) -> tuple[str, str]:
    """(image id, root device name): the pinned AMI, else Debian's SSM parameter, else newest."""
    ec2, settings = ctx.clients.ec2, ctx.settings
    image_id = ctx.spec.ami_id or _ami_from_ssm(ctx)
    if image_id:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    else:
        images = ec2.describe_images(
            Owners=[settings.aws_ami_owner],
            Filters=[
                {"Name": "name", "Values": [settings.aws_ami_name_pattern]},
                {"Name": "architecture", "Values": ["x86_64"]},
                {"Name": "state", "Values": ["available"]},
            ],
        )["Images"]
        images.sort(key=lambda i: i.get("CreationDate", ""), reverse=True)
    if not images:
        raise ProvisionError(
            f"no Debian 12 image in {ctx.clients.region}: neither {settings.aws_ami_ssm_parameter} "
            f"nor images of owner {settings.aws_ami_owner} named {settings.aws_ami_name_pattern}; "
            "pin one with ami_id"
        )
    image = images[0]
    ctx.step(f"image {image['ImageId']} ({image.get('Name', '?')})")
    return str(image["ImageId"]), str(image.get("RootDeviceName") or "/dev/xvda")


def _ami_from_ssm(ctx: Context) -> str | None:
    try:
        parameter = ctx.clients.ssm.get_parameter(Name=ctx.settings.aws_ami_ssm_parameter)
    except ClientError as exc:
        if exc.response["Error"]["Code"] in ("ParameterNotFound", "AccessDeniedException"):
            return None  # fall back to describe_images
        raise
    return str(parameter["Parameter"]["Value"])


# -- the key pair ------------------------------------------------------------------------------


def read_public_key(env: str, spec: AwsEnvironment) -> str:
    """The SSH public key text: ``ssh_public_key`` is a file path or the key itself."""
    value = spec.ssh_public_key.strip()
    if value.startswith(("ssh-", "ecdsa-")):
        return value
    path = Path(value).expanduser()
    if not path.is_file():
        raise SettingsError(
            "group_data/aws.py", "aws_environments", f"{env}.ssh_public_key: no file {path}"
        )
    return path.read_text().strip()


def _key_body(key: str) -> str:
    """ "type base64" without the comment, which AWS does not keep."""
    return " ".join(key.split()[:2])


def ensure_key_pair(ctx: Context, public_key: str) -> str:
    ec2, name = ctx.clients.ec2, ctx.name()
    found = ec2.describe_key_pairs(
        Filters=[{"Name": "key-name", "Values": [name]}], IncludePublicKey=True
    )["KeyPairs"]
    if found:
        current = found[0].get("PublicKey")
        if current is None or _key_body(current) == _key_body(public_key):
            ctx.plan.record("Key pair", name, "no change", found[0].get("KeyFingerprint", ""))
            return name
        ctx.plan.record("Key pair", name, "replace", "ssh_public_key changed; new instances only")
        if ctx.dry:
            return name
        ec2.delete_key_pair(KeyName=name)
    else:
        ctx.plan.record("Key pair", name, "create", "imported from ssh_public_key")
        if ctx.dry:
            return name
    ec2.import_key_pair(
        KeyName=name,
        PublicKeyMaterial=public_key.encode(),
        TagSpecifications=[{"ResourceType": "key-pair", "Tags": ctx.tags("platform", name)}],
    )
    return name


# -- the instances -----------------------------------------------------------------------------


def existing_instances(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    """The environment's live instances by Name, oldest first."""
    filters = [*ctx.filters(), {"Name": "instance-state-name", "Values": LIVE_STATES}]
    pages = ctx.clients.ec2.get_paginator("describe_instances").paginate(Filters=filters)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                if not ctx.owns(instance.get("Tags")):
                    continue
                by_name.setdefault(tags_of(instance).get("Name", ""), []).append(instance)
    for group in by_name.values():
        group.sort(key=lambda i: str(i["LaunchTime"]))
    return by_name


def ensure_instances(ctx: Context, key_name: str) -> None:
    ctx.step("EC2 instances")
    existing = existing_instances(ctx)
    volumes = data_volumes(ctx)
    image: list[tuple[str, str]] = []  # looked up once, only if something is launched
    launched: list[str] = []
    counts = shape.counts(ctx)
    # A db instance lost (terminated by hand) comes back under the name its kept data
    # volume carries, so the volume is found again (even after `invoke replace` made db-2).
    kept = [n.removesuffix(DATA_SUFFIX) for n, v in volumes.items() if v["State"] == "available"]
    for role in EC2_ROLES:
        wanted = wanted_names(ctx, role, counts[role], existing, kept if role == "db" else ())
        ids = []
        for index, name in enumerate(wanted):
            found = existing.pop(name, [])
            for duplicate in found[1:]:
                _terminate(ctx, duplicate, name, "duplicate of the oldest")
            if found:
                ids.append(_converge(ctx, role, name, found[0]))
                continue
            if not image:
                image.append(find_debian_ami(ctx))
            zone = (
                volumes[data_volume_name(name)]["AvailabilityZone"]
                if (role == "db" and data_volume_name(name) in volumes)
                else None
            )
            instance_id = _launch(ctx, role, name, index, key_name, image[0], zone)
            ids.append(instance_id)
            launched.append(instance_id)
        ctx.ids[f"instances:{role}"] = ids
        ctx.ids[f"names:{role}"] = wanted
    for name, extra in sorted(existing.items()):
        for instance in extra:
            _terminate(ctx, instance, name or instance["InstanceId"], "not in the description")
    if launched and not ctx.dry:
        ctx.step(f"waiting for {len(launched)} instance(s) to run")
        ctx.clients.ec2.get_waiter("instance_running").wait(InstanceIds=launched)
    ensure_data_volumes(ctx, volumes)


def wanted_names(
    ctx: Context,
    role: str,
    count: int,
    existing: dict[str, list[dict[str, Any]]],
    kept: Iterable[str] = (),
) -> list[str]:
    """The ``count`` instance names of ``role``: those that exist, lowest-numbered first (a
    host that ``invoke replace`` made as app-3 stays app-3), then those of ``kept`` (names
    whose data volume waits for an instance), then the lowest free numbers."""
    prefix = ctx.name(role) + "-"

    def numbered(names: Iterable[str]) -> list[tuple[int, str]]:
        return sorted(
            (int(n.removeprefix(prefix)), n)
            for n in names
            if n.startswith(prefix) and n.removeprefix(prefix).isdigit()
        )

    found = numbered(existing)
    waiting = [(i, n) for i, n in numbered(kept) if n not in existing]
    wanted = [name for _, name in (found + waiting)[:count]]
    taken = {index for index, _ in found + waiting}
    index = 1
    while len(wanted) < count:
        if index not in taken:
            wanted.append(ctx.name(role, str(index)))
        index += 1
    return sorted(wanted, key=lambda n: int(n.removeprefix(prefix)))


def _launch(
    ctx: Context,
    role: str,
    name: str,
    index: int,
    key_name: str,
    image: tuple[str, str],
    zone: str | None = None,
) -> str:
    spec = ctx.spec.role(role)
    where = f", in {zone} beside its kept data volume" if zone else ""
    ctx.plan.record(
        "EC2 instance", name, "create", f"{spec.instance_type}, {spec.disk_gb} GB{where}"
    )
    if ctx.dry:
        return PENDING
    public = ctx.spec.access == "public"
    subnets = ctx.ids["subnets:public" if public else "subnets:private"]
    if zone is not None:  # an EBS volume attaches only to an instance of its own zone
        described = ctx.clients.ec2.describe_subnets(SubnetIds=list(subnets))["Subnets"]
        subnets = [sub["SubnetId"] for sub in described if sub["AvailabilityZone"] == zone]
        if not subnets:
            raise ProvisionError(f"{name}: no subnet in {zone}, where its data volume is")
    kwargs: dict[str, Any] = {
        "ImageId": image[0],
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "KeyName": key_name,
        # A retried request reuses the token, so a lost response never launches a twin.
        "ClientToken": f"{name}-{uuid.uuid4().hex[:12]}",
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "SubnetId": subnets[index % len(subnets)],
                "Groups": [ctx.ids[f"sg:{role}"]],
                "AssociatePublicIpAddress": public,
            }
        ],
        "BlockDeviceMappings": [
            {
                "DeviceName": image[1],
                "Ebs": {
                    "VolumeSize": spec.disk_gb,
                    "VolumeType": "gp3",
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": ctx.tags(role, name)}
            for kind in ("instance", "volume", "network-interface")
        ],
    }
    if ctx.spec.access == "ssm":
        kwargs["UserData"] = ssm_agent_user_data(ctx.spec)  # boto3 encodes it
    if role == "db":  # its data must not go with a stray terminate call
        kwargs["DisableApiTermination"] = True
    if profile := profile_for(ctx, role):
        kwargs["IamInstanceProfile"] = {"Name": profile}
    # A profile made a moment ago is retried by the session (eventual_retry_delay).
    response = ctx.clients.ec2.run_instances(**kwargs)
    return str(response["Instances"][0]["InstanceId"])


def _converge(ctx: Context, role: str, name: str, instance: dict[str, Any]) -> str:
    instance_id = str(instance["InstanceId"])
    if instance.get("State", {}).get("Name") in ("stopping", "stopped"):
        ctx.ids.setdefault("stopped", set()).add(instance_id)  # never a target while stopped
    want = ctx.spec.role(role).instance_type
    have = instance["InstanceType"]
    _converge_root_volume(ctx, role, name, instance)
    if role == "db":
        _converge_termination_protection(ctx, name, instance_id)
    _converge_profile(ctx, role, name, instance)
    if have == want:
        ctx.plan.record("EC2 instance", name, "no change", instance_id)
        return instance_id
    ctx.plan.record("EC2 instance", name, "update", f"{have} → {want} (stop, resize, start)")
    if not ctx.dry:
        if role == "db":
            _confirm(ctx, f"stop db host {name} ({instance_id}) to resize it to {want}")
        drain(ctx, instance_id)  # an app server stops taking requests before it stops
        _resize(ctx, instance_id, want)
        ctx.ids.get("stopped", set()).discard(instance_id)  # started again: a target again
    return instance_id


def drain(ctx: Context, instance_id: str) -> None:
    """Take an instance out of the app target group and wait until the ALB has let its
    connections finish (the deregistration delay): only then may it stop or go. An
    instance that is no target (not an app server) returns at once."""
    elb = ctx.clients.elbv2
    try:
        groups = elb.describe_target_groups(Names=[ctx.name("app")])["TargetGroups"]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "TargetGroupNotFound":
            return
        raise
    arn = groups[0]["TargetGroupArn"]
    health = elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    if instance_id not in {d["Target"]["Id"] for d in health}:
        return
    ctx.step(f"draining {instance_id} from the load balancer")
    target = [{"Id": instance_id}]
    elb.deregister_targets(TargetGroupArn=arn, Targets=target)
    delay = 5
    attempts = (ctx.spec.deregistration_delay + 120) // delay  # the delay, and some slack
    elb.get_waiter("target_deregistered").wait(
        TargetGroupArn=arn, Targets=target, WaiterConfig={"Delay": delay, "MaxAttempts": attempts}
    )


def _confirm(ctx: Context, what: str) -> None:
    """A db host stopping or going away stops the platform: only with the operator's yes."""
    if not ctx.confirm(what):
        raise ProvisionError(f"not confirmed: {what} (run again and answer yes, or --yes)")


def _converge_profile(ctx: Context, role: str, name: str, instance: dict[str, Any]) -> None:
    """An instance launched before its role had a profile (db hosts before backups went to
    S3) gets it now: instance profiles can be associated with a running instance."""
    profile = profile_for(ctx, role)
    if profile is None or instance.get("IamInstanceProfile") or pending(instance["InstanceId"]):
        return
    ctx.plan.record("EC2 instance", name, "update", f"instance profile {profile}")
    if not ctx.dry:
        ctx.clients.ec2.associate_iam_instance_profile(
            IamInstanceProfile={"Name": profile}, InstanceId=instance["InstanceId"]
        )


def _converge_termination_protection(ctx: Context, name: str, instance_id: str) -> None:
    if pending(instance_id):
        return
    answer = ctx.clients.ec2.describe_instance_attribute(
        InstanceId=instance_id, Attribute="disableApiTermination"
    )
    if answer["DisableApiTermination"]["Value"]:
        return
    ctx.plan.record("EC2 instance", name, "update", "termination protection on")
    if not ctx.dry:
        ctx.clients.ec2.modify_instance_attribute(
            InstanceId=instance_id, DisableApiTermination={"Value": True}
        )


# -- db hosts' data volumes ---------------------------------------------------------------------

DATA_DEVICE = "/dev/sdf"
"""Where a db host's data volume is attached (on Nitro types the kernel names it
``/dev/nvme1n1``; the db role finds it by its volume id, ``/dev/disk/by-id``)."""


DATA_SUFFIX = "-data"


def data_volume_name(instance_name: str) -> str:
    return f"{instance_name}{DATA_SUFFIX}"


def data_volumes(ctx: Context) -> dict[str, dict[str, Any]]:
    """The environment's db data volumes by Name, whatever their state."""
    pages = ctx.clients.ec2.get_paginator("describe_volumes").paginate(
        Filters=ctx.filters(Role="db", Purpose="data")
    )
    return {
        tags_of(volume).get("Name", volume["VolumeId"]): volume
        for page in pages
        for volume in page["Volumes"]
        if ctx.owns(volume.get("Tags")) and volume["State"] not in ("deleting", "deleted")
    }


def ensure_data_volumes(ctx: Context, volumes: dict[str, dict[str, Any]]) -> None:
    """Each db host's data on its own encrypted volume, kept when the instance goes: found
    again by its Name and attached to the instance that replaces it."""
    ec2 = ctx.clients.ec2
    for name, instance_id in zip(
        ctx.ids.get("names:db", []), ctx.ids.get("instances:db", []), strict=True
    ):
        volume_name = data_volume_name(name)
        volume = volumes.get(volume_name)
        if volume is not None and any(
            a["InstanceId"] == instance_id for a in volume.get("Attachments", [])
        ):
            ctx.plan.record("EBS data volume", volume_name, "no change", volume["VolumeId"])
            continue
        if volume is not None and volume["State"] != "available":
            holder = ", ".join(a["InstanceId"] for a in volume.get("Attachments", []))
            raise ProvisionError(
                f"{volume_name} ({volume['VolumeId']}) is attached to {holder}, not {name}"
            )
        if volume is None:
            size = ctx.spec.db_data_gb
            ctx.plan.record("EBS data volume", volume_name, "create", f"{size} GB, encrypted")
        else:
            ctx.plan.record(
                "EBS data volume", volume_name, "update", f"{volume['VolumeId']}: kept, attach"
            )
        if ctx.dry or pending(instance_id):
            continue
        if volume is None:
            zone = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0][
                "Instances"
            ][0]["Placement"]["AvailabilityZone"]
            tags = [*ctx.tags("db", volume_name), {"Key": "Purpose", "Value": "data"}]
            created = ec2.create_volume(
                AvailabilityZone=zone,
                Size=ctx.spec.db_data_gb,
                VolumeType="gp3",
                Encrypted=True,
                TagSpecifications=[{"ResourceType": "volume", "Tags": tags}],
            )
            volume_id = created["VolumeId"]
            ec2.get_waiter("volume_available").wait(VolumeIds=[volume_id])
        else:
            volume_id = volume["VolumeId"]
        # Attached later, not at launch: DeleteOnTermination stays false.
        ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device=DATA_DEVICE)
        ec2.get_waiter("volume_in_use").wait(VolumeIds=[volume_id])


def _root_volume_id(instance: dict[str, Any]) -> str | None:
    root = instance.get("RootDeviceName")
    for mapping in instance.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == root and "Ebs" in mapping:
            return str(mapping["Ebs"]["VolumeId"])
    return None


def _converge_root_volume(ctx: Context, role: str, name: str, instance: dict[str, Any]) -> None:
    """Grow the root volume to ``disk_gb`` online; EBS volumes never shrink."""
    volume_id = _root_volume_id(instance)
    if volume_id is None or pending(str(instance["InstanceId"])):
        return
    want = ctx.spec.role(role).disk_gb
    have = int(ctx.clients.ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Size"])
    if have == want:
        ctx.plan.record("EBS root volume", name, "no change", f"{have} GB")
    elif have > want:
        ctx.plan.record(
            "EBS root volume", name, "no change", f"{have} GB kept: EBS cannot shrink to {want} GB"
        )
    else:
        # Online: the instance keeps running. Debian's cloud-init grows the partition and
        # file system at boot (growpart, resizefs), or now with `growpart` + `resize2fs`.
        ctx.plan.record("EBS root volume", name, "update", f"{have} GB → {want} GB, online")
        if not ctx.dry:
            ctx.clients.ec2.modify_volume(VolumeId=volume_id, Size=want)


def _resize(ctx: Context, instance_id: str, instance_type: str) -> None:
    ec2 = ctx.clients.ec2
    ctx.step(f"resizing {instance_id} to {instance_type}")
    ec2.stop_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_stopped").wait(InstanceIds=[instance_id])
    ec2.modify_instance_attribute(InstanceId=instance_id, InstanceType={"Value": instance_type})
    ec2.start_instances(InstanceIds=[instance_id])
    ec2.get_waiter("instance_running").wait(InstanceIds=[instance_id])


def _terminate(ctx: Context, instance: dict[str, Any], name: str, why: str) -> None:
    instance_id = instance["InstanceId"]
    db = tags_of(instance).get("Role") == "db"
    kept = " (its data volume is kept)" if db else ""
    ctx.plan.record("EC2 instance", name, "delete", f"{instance_id}: {why}{kept}")
    if ctx.dry or pending(instance_id):
        return
    if db:
        _confirm(ctx, f"terminate db host {name} ({instance_id}): {why}")
        ctx.clients.ec2.modify_instance_attribute(
            InstanceId=instance_id, DisableApiTermination={"Value": False}
        )
    drain(ctx, instance_id)  # an app server's open requests finish first
    ctx.clients.ec2.terminate_instances(InstanceIds=[instance_id])


# -- the SSM agent (access="ssm") ---------------------------------------------------------------


def require_ssm_agent(env: str, spec: AwsEnvironment) -> None:
    """access="ssm" works only with an agent on the host: Debian's images ship none, so it is
    installed from UserData, and only a pinned, checksummed package is installed."""
    if spec.access != "ssm":
        return
    if not (spec.ssm_agent_version and spec.ssm_agent_sha256):
        raise SettingsError(
            "group_data/aws.py",
            "aws_environments",
            f'{env}.access: "ssm" needs the SSM agent, which Debian\'s images do not ship; set'
            " ssm_agent_version and ssm_agent_sha256 (of the regional debian_amd64 package)"
            ' so new instances install it, or use access="bastion"',
        )
    if not re.fullmatch(r"[0-9a-f]{64}", spec.ssm_agent_sha256):
        raise SettingsError(
            "group_data/aws.py",
            "aws_environments",
            f"{env}.ssm_agent_sha256: expected 64 lower-case hex digits",
        )
    if not re.fullmatch(r"\d+(\.\d+){2,3}", spec.ssm_agent_version):
        raise SettingsError(
            "group_data/aws.py", "aws_environments", f"{env}.ssm_agent_version: e.g. 3.3.1142.0"
        )


def ssm_agent_user_data(spec: AwsEnvironment) -> str:
    """The first-boot script installing the pinned SSM agent, checked before dpkg sees it."""
    region = spec.region
    url = (
        f"https://s3.{region}.amazonaws.com/amazon-ssm-{region}/{spec.ssm_agent_version}"
        "/debian_amd64/amazon-ssm-agent.deb"
    )
    return (
        "#!/bin/sh\n"
        "# Installs the AWS SSM agent (Debian's images ship none), checksum first.\n"
        "set -eu\n"
        "deb=$(mktemp --suffix=.deb)\n"
        f"python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1],"
        f' sys.argv[2])\' {url} "$deb"\n'
        f'echo "{spec.ssm_agent_sha256}  $deb" | sha256sum -c -\n'
        'dpkg -i "$deb"\n'
        'rm -f "$deb"\n'
        "systemctl enable --now amazon-ssm-agent\n"
    )
