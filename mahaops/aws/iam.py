"""IAM: instance roles that grant exactly what each host needs.

App servers and workers get ``maha-<env>-app``: read, write and delete objects
in the uploads bucket, nothing else. db hosts get ``maha-<env>-db``: put and list
in the backup bucket, nothing else (no read, no delete). With ``access="ssm"``
every host also gets the Session Manager core policy (cache and log hosts through
``maha-<env>-node``); otherwise those hosts get no role at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from botocore.exceptions import ClientError

from mahaops.aws.plan import Context, ProvisionError
from mahaops.aws.s3 import bucket_name

SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
TRUST_EC2 = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "ec2.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}


@dataclass(frozen=True)
class InstanceRole:
    name: str
    role_tag: str  # the Role tag: which hosts wear it
    inline: dict[str, dict[str, Any]]  # policy name -> document
    managed: tuple[str, ...]  # AWS managed policy ARNs


def uploads_policy(bucket: str) -> dict[str, Any]:
    """The app's S3 access: objects of the uploads bucket only; no bucket-level changes."""
    arn = f"arn:aws:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "UploadObjects",
                "Effect": "Allow",
                "Action": [
                    "s3:GetObject",
                    "s3:PutObject",
                    "s3:DeleteObject",
                    "s3:AbortMultipartUpload",
                ],
                "Resource": f"{arn}/*",
            },
            {"Sid": "ListUploads", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": arn},
        ],
    }


def backups_policy(bucket: str) -> dict[str, Any]:
    """The db hosts' S3 access: put dumps into the backup bucket and list it; no read, no
    delete (a stolen db host cannot erase the history; the bucket's lifecycle expires it)."""
    arn = f"arn:aws:s3:::{bucket}"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "PutBackups",
                "Effect": "Allow",
                "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
                "Resource": f"{arn}/*",
            },
            {"Sid": "ListBackups", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": arn},
        ],
    }


def no_secrets_policy(project: str, account: str) -> dict[str, Any]:
    """No host reads the platform's secrets from SSM: deploys render them from the operator's
    machine. Session Manager's core policy allows ``ssm:GetParameter*`` on every parameter;
    this explicit deny wins over it, so a compromised host cannot read the others' secrets."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "NoPlatformSecrets",
                "Effect": "Deny",
                "Action": [
                    "ssm:GetParameter",
                    "ssm:GetParameters",
                    "ssm:GetParametersByPath",
                    "ssm:GetParameterHistory",
                ],
                "Resource": f"arn:aws:ssm:*:{account}:parameter/{project}/*",
            }
        ],
    }


def instance_roles(ctx: Context) -> list[InstanceRole]:
    ssm = (SSM_CORE,) if ctx.spec.access == "ssm" else ()
    deny = {"no-secrets": no_secrets_policy(ctx.project, ctx.clients.account_id)}
    roles = [
        InstanceRole(
            ctx.name("app"),
            "app",
            {"uploads": uploads_policy(bucket_name(ctx, "uploads")), **deny},
            ssm,
        ),
        InstanceRole(
            ctx.name("db"),
            "db",
            {"backups": backups_policy(bucket_name(ctx, "backups")), **deny},
            ssm,
        ),
    ]
    if ssm:
        roles.append(InstanceRole(ctx.name("node"), "node", dict(deny), ssm))
    return roles


def profile_for(ctx: Context, role: str) -> str | None:
    """The instance profile an EC2 role's hosts wear, if any."""
    if role in ("app", "worker"):
        return ctx.name("app")
    if role == "db":
        return ctx.name("db")
    return ctx.name("node") if ctx.spec.access == "ssm" else None


def ensure_iam(ctx: Context) -> None:
    ctx.step("IAM roles and instance profiles")
    for spec in instance_roles(ctx):
        _ensure_role(ctx, spec)
        _ensure_profile(ctx, spec)


def _get(call: Any, **kwargs: Any) -> dict[str, Any] | None:
    try:
        return dict(call(**kwargs))
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "NoSuchEntity":
            return None
        raise


def _document(raw: Any) -> Any:
    return json.loads(unquote(raw)) if isinstance(raw, str) else raw


def _ensure_role(ctx: Context, spec: InstanceRole) -> None:
    iam = ctx.clients.iam
    found = _get(iam.get_role, RoleName=spec.name)
    if found is None:
        ctx.plan.record("IAM role", spec.name, "create", ", ".join([*spec.inline, *spec.managed]))
        if ctx.dry:
            return
        iam.create_role(
            RoleName=spec.name,
            AssumeRolePolicyDocument=json.dumps(TRUST_EC2),
            Description=f"EC2 hosts of {ctx.project} {ctx.env} ({spec.role_tag})",
            Tags=ctx.tags(spec.role_tag, spec.name),
        )
        changes = [*spec.inline, *spec.managed]
    else:
        if not ctx.owns(found["Role"].get("Tags")):
            raise ProvisionError(f"IAM role {spec.name} exists but is not tagged for {ctx.env}")
        changes = _role_drift(ctx, spec)
        ctx.plan.record(
            "IAM role", spec.name, "update" if changes else "no change", ", ".join(changes)
        )
        if ctx.dry or not changes:
            return
    _apply_policies(ctx, spec)


def _role_drift(ctx: Context, spec: InstanceRole) -> list[str]:
    iam = ctx.clients.iam
    have_inline = set(iam.list_role_policies(RoleName=spec.name)["PolicyNames"])
    changes = [f"remove policy {p}" for p in sorted(have_inline - set(spec.inline))]
    for policy, document in spec.inline.items():
        current = _get(iam.get_role_policy, RoleName=spec.name, PolicyName=policy)
        if current is None or _document(current["PolicyDocument"]) != document:
            changes.append(f"policy {policy}")
    attached = iam.list_attached_role_policies(RoleName=spec.name)["AttachedPolicies"]
    have_managed = {p["PolicyArn"] for p in attached}
    changes += [f"attach {arn}" for arn in sorted(set(spec.managed) - have_managed)]
    changes += [f"detach {arn}" for arn in sorted(have_managed - set(spec.managed))]
    return changes


def _apply_policies(ctx: Context, spec: InstanceRole) -> None:
    iam = ctx.clients.iam
    have_inline = set(iam.list_role_policies(RoleName=spec.name)["PolicyNames"])
    for policy in have_inline - set(spec.inline):
        iam.delete_role_policy(RoleName=spec.name, PolicyName=policy)
    for policy, document in spec.inline.items():
        current = _get(iam.get_role_policy, RoleName=spec.name, PolicyName=policy)
        if current is None or _document(current["PolicyDocument"]) != document:
            iam.put_role_policy(
                RoleName=spec.name, PolicyName=policy, PolicyDocument=json.dumps(document)
            )
    attached = iam.list_attached_role_policies(RoleName=spec.name)["AttachedPolicies"]
    have_managed = {p["PolicyArn"] for p in attached}
    for arn in set(spec.managed) - have_managed:
        iam.attach_role_policy(RoleName=spec.name, PolicyArn=arn)
    for arn in have_managed - set(spec.managed):
        iam.detach_role_policy(RoleName=spec.name, PolicyArn=arn)


def _ensure_profile(ctx: Context, spec: InstanceRole) -> None:
    iam = ctx.clients.iam
    found = _get(iam.get_instance_profile, InstanceProfileName=spec.name)
    if found is None:
        ctx.plan.record("Instance profile", spec.name, "create", f"role {spec.name}")
        if ctx.dry:
            return
        iam.create_instance_profile(
            InstanceProfileName=spec.name, Tags=ctx.tags(spec.role_tag, spec.name)
        )
        iam.add_role_to_instance_profile(InstanceProfileName=spec.name, RoleName=spec.name)
        return
    roles = [r["RoleName"] for r in found["InstanceProfile"].get("Roles", [])]
    if roles == [spec.name]:
        ctx.plan.record("Instance profile", spec.name, "no change", f"role {spec.name}")
        return
    ctx.plan.record("Instance profile", spec.name, "update", f"role {spec.name}")
    if ctx.dry:
        return
    for other in roles:
        iam.remove_role_from_instance_profile(InstanceProfileName=spec.name, RoleName=other)
    iam.add_role_to_instance_profile(InstanceProfileName=spec.name, RoleName=spec.name)
