"""The AWS inventory: hosts from EC2 tags, in the same groups as the local inventory.

Each running instance tagged ``Project``/``Environment`` becomes a host named
by its ``Name`` tag, in the group of its ``Role`` tag. How pyinfra reaches it
follows the environment's ``access``: its public address, a jump through
``bastion``, or SSH tunnelled over SSM Session Manager (no open port at all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from mahaops.aws.config import Environment, load_environment
from mahaops.aws.ec2 import DATA_DEVICE, read_public_key, require_ssm_agent
from mahaops.aws.s3 import named_bucket
from mahaops.aws.session import CLIENT_CONFIG, make_session
from mahaops.hosts import HostSpec
from mahaops.roles import ROLE_BY_NAME
from mahaops.secrets import env_dir
from mahaops.settings import DEFAULT_GROUP_DATA
from mahaops.sim import SIM_PROFILE


def hosts(
    env: str, session: boto3.Session | None = None, group_data: Path = DEFAULT_GROUP_DATA
) -> list[HostSpec]:
    """The environment's running instances as pyinfra hosts, sorted by name."""
    loaded = load_environment(env, group_data)
    spec = loaded.spec
    require_ssm_agent(env, spec)  # no agent on the hosts, no SSM session to reach them
    session = session or make_session(spec.region, spec.profile)
    ec2: Any = session.client("ec2", config=CLIENT_CONFIG)
    filters = [
        {"Name": "tag:Project", "Values": [loaded.project]},
        {"Name": "tag:Environment", "Values": [env]},
        {"Name": "instance-state-name", "Values": ["running"]},
    ]
    instances = [
        instance
        for page in ec2.get_paginator("describe_instances").paginate(Filters=filters)
        for reservation in page["Reservations"]
        for instance in reservation["Instances"]
    ]
    config = _ssh_config(loaded) if spec.access != "public" else None
    operator_key = read_public_key(env, spec)
    result = [_host(loaded, instance, config, operator_key) for instance in instances]
    found = sorted((h for h in result if h is not None), key=lambda h: h.name)
    if any("app_servers" in h.groups for h in found):
        # The ALB's nodes sit in its subnets: nginx takes the client address from
        # X-Forwarded-For only when the request comes from there.
        for h in found:
            if "app_servers" in h.groups:
                h.data["nginx_real_ip_from"] = _load_balancer_subnets(session, loaded)
    releasing = [h for h in found if {"app_servers", "workers"} & set(h.groups)]
    cdn_keys = [k for k in ("app_asset_base_url", "app_uploads_cdn_url") if k not in spec.settings]
    if releasing and cdn_keys:
        # Pages load /static/ from CloudFront, which the release filled (release/assets.py);
        # downloads of uploads are CloudFront URLs signed with the environment's key.
        origin = _cdn_origin(session, loaded)
        for h in releasing:
            for key in cdn_keys:
                h.data[key] = origin
    account = ""
    if releasing or any("db_servers" in h.groups for h in found):
        account = session.client("sts", config=CLIENT_CONFIG).get_caller_identity()["Account"]
    for h in releasing:
        # Users' uploads: the environment's private bucket, presigned by the instance role.
        h.data.setdefault(
            "storage_uploads_bucket", named_bucket(loaded.project, env, "uploads", account)
        )
        h.data.setdefault("storage_region", spec.region)
    if releasing and spec.profile == SIM_PROFILE:
        for h in releasing:
            h.data["sim_s3"] = _sim_s3()
    if any("db_servers" in h.groups for h in found):
        bucket = named_bucket(loaded.project, env, "backups", account)
        for h in found:
            if "db_servers" in h.groups:
                # Dumps go to the backup bucket with the db host's own role (put and list
                # only); the bucket's lifecycle expires them, the host never deletes.
                h.data["postgresql_backup_s3_bucket"] = bucket
    return found


def _sim_s3() -> dict[str, str]:
    """The sim's S3 (moto's server): app servers reach it at ``host.docker.internal`` (the
    daemon forwards it there), browsers on this machine at 127.0.0.1; the stand-in's dummy
    credentials, as no instance role signs there."""
    from mahaops.sim.server import DUMMY_KEY, read_state

    state = read_state()
    if state is None:
        return {}
    return {
        "internal": f"http://host.docker.internal:{state.port}",
        "public": state.endpoint,
        "access_key_id": DUMMY_KEY,
        "secret_access_key": DUMMY_KEY,
    }


def _cdn_origin(session: boto3.Session, loaded: Environment) -> str:
    """``https://`` and the distribution's alias or name; "" before it exists."""
    if loaded.spec.cdn_domain:
        return f"https://{loaded.spec.cdn_domain}"
    cf: Any = session.client("cloudfront", config=CLIENT_CONFIG)
    wanted = {"Project": loaded.project, "Environment": loaded.name}
    for page in cf.get_paginator("list_distributions").paginate():
        for summary in (page.get("DistributionList") or {}).get("Items") or []:
            if summary.get("Comment") != f"{loaded.project}-{loaded.name}":
                continue
            items = cf.list_tags_for_resource(Resource=summary["ARN"])["Tags"].get("Items") or []
            if wanted.items() <= {t["Key"]: t["Value"] for t in items}.items():
                return f"https://{summary['DomainName']}"
    return ""


def _load_balancer_subnets(session: boto3.Session, loaded: Environment) -> list[str]:
    """The CIDR blocks of the subnets the environment's ALB is in ([] before it exists)."""
    elb: Any = session.client("elbv2", config=CLIENT_CONFIG)
    ec2: Any = session.client("ec2", config=CLIENT_CONFIG)
    try:
        (lb,) = elb.describe_load_balancers(Names=[f"{loaded.project}-{loaded.name}"])[
            "LoadBalancers"
        ]
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "LoadBalancerNotFound":
            return []
        raise
    ids = [zone["SubnetId"] for zone in lb["AvailabilityZones"]]
    subnets = ec2.describe_subnets(SubnetIds=ids)["Subnets"]
    return sorted(subnet["CidrBlock"] for subnet in subnets)


def _host(
    loaded: Environment, instance: dict[str, Any], config: Path | None, operator_key: str
) -> HostSpec | None:
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    role = ROLE_BY_NAME.get(tags.get("Role", ""))
    if role is None or role.name == "base":
        return None  # not a platform role (nothing of ours, but tagged alike)
    spec = loaded.spec
    private = instance.get("PrivateIpAddress")
    data: dict[str, Any] = {
        **spec.settings,  # the environment's own settings, under what the inventory knows
        "private_address": private,
        # The image's user (``admin``) until the base role handed the host over to the
        # deploy user and tagged it so (HANDOVER_TAG): sshd admits only the deploy user then.
        "ssh_user": tags.get(HANDOVER_TAG) or spec.ssh_user,
        "base_deploy_user_keys": [operator_key],
        "instance_id": instance["InstanceId"],
        "aws_env": loaded.name,
        "role": role.name,
    }
    for mapping in instance.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == DATA_DEVICE and "Ebs" in mapping:
            data["ebs_data_volume_id"] = mapping["Ebs"]["VolumeId"]  # the db role mounts it
    if spec.ssh_private_key:
        data["ssh_key"] = str(Path(spec.ssh_private_key).expanduser())
    if spec.access == "public":
        data["ssh_hostname"] = instance.get("PublicIpAddress") or private
    elif spec.access == "bastion":
        data["ssh_hostname"] = private
    else:
        data["ssh_hostname"] = instance["InstanceId"]  # the SSM ProxyCommand targets the id
    if config is not None:
        data["ssh_config_file"] = str(config)
    name = tags.get("Name", instance["InstanceId"])
    return HostSpec(name=name, groups=("aws", role.group), data=data)


HANDOVER_TAG = "DeployUser"
"""Instance tag naming the user deploys log in as, set once the base role handed over."""


def record_handover(
    env: str,
    instance_id: str,
    user: str,
    session: boto3.Session | None = None,
    group_data: Path = DEFAULT_GROUP_DATA,
) -> None:
    """Tag ``instance_id`` as handed over to ``user``: the next inventory logs in as them.

    Called by the base role (on the operator's machine) after sshd, with its new
    configuration, admitted ``user`` with the operator's key.
    """
    loaded = load_environment(env, group_data)
    session = session or make_session(loaded.spec.region, loaded.spec.profile)
    ec2: Any = session.client("ec2", config=CLIENT_CONFIG)
    ec2.create_tags(Resources=[instance_id], Tags=[{"Key": HANDOVER_TAG, "Value": user}])


def ssh_config_text(loaded: Environment) -> str:
    """ssh_config entries routing pyinfra's connections through the bastion or SSM."""
    spec = loaded.spec
    if spec.access == "bastion":
        return f"Host 10.* 172.* 192.168.*\n    ProxyJump {spec.bastion}\n"
    profile = f" --profile {spec.profile}" if spec.profile else ""
    return (
        "Host i-* mi-*\n"
        "    ProxyCommand aws ssm start-session --target %h"
        " --document-name AWS-StartSSHSession --parameters portNumber=%p"
        f" --region {spec.region}{profile}\n"
    )


def _ssh_config(loaded: Environment) -> Path:
    path = env_dir(loaded.name) / "ssh_config"
    text = ssh_config_text(loaded)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
        path.chmod(0o600)
    return path
