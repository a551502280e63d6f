"""Desired instance counts set by ``invoke scale``, kept where ``invoke provision`` reads them.

group_data/aws.py gives each role's ``count``; ``invoke scale --env E --role R --count N``
changes the hosts at once and must not be undone by the next ``invoke provision`` (which
terminates instances beyond the count). So the new count is kept in the environment's own
account, an SSM String parameter ``/<project>/<env>/shape/<role>`` tagged like everything
else, and overrides the file's count; provision's plan shows the override, and teardown
removes it with the environment's other parameters. Deleting the parameter hands the
count back to the file.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from mahaops.aws.plan import Context


def path(project: str, env: str, role: str = "") -> str:
    return f"/{project}/{env}/shape/{role}"


def desired_counts(ssm: Any, project: str, env: str) -> dict[str, int]:
    """Role -> count set by ``invoke scale`` (roles it never scaled are absent)."""
    prefix = path(project, env)
    pages = ssm.get_paginator("get_parameters_by_path").paginate(Path=prefix, Recursive=False)
    found: dict[str, int] = {}
    for page in pages:
        for parameter in page["Parameters"]:
            role = parameter["Name"].removeprefix(prefix)
            if parameter["Value"].isdigit():
                found[role] = int(parameter["Value"])
    return found


def set_desired_count(ssm: Any, project: str, env: str, role: str, count: int) -> None:
    name = path(project, env, role)
    tags = {"Project": project, "Environment": env, "Role": role, "Name": name}
    try:  # SSM takes tags only on creation, and never together with Overwrite
        ssm.put_parameter(
            Name=name,
            Value=str(count),
            Type="String",
            Description=f"instances of {role}: set by invoke scale, read by invoke provision",
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
        )
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ParameterAlreadyExists":
            raise
        ssm.put_parameter(Name=name, Value=str(count), Type="String", Overwrite=True)


def counts(ctx: Context) -> dict[str, int]:
    """Each EC2 role's count for provisioning: ``invoke scale``'s, else group_data's.
    An override is shown in the plan, so the file's differing count surprises no one."""
    from mahaops.settings.aws import EC2_ROLES

    try:
        overrides = desired_counts(ctx.clients.ssm, ctx.project, ctx.env)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "AccessDeniedException":
            raise
        overrides = {}
    result = {}
    for role in EC2_ROLES:
        described = ctx.spec.role(role).count
        count = overrides.get(role, described)
        result[role] = count
        if role in overrides:
            ctx.plan.record(
                "Desired count",
                path(ctx.project, ctx.env, role),
                "no change",
                f"{count} {role} instance(s), set by invoke scale"
                + (f" (group_data/aws.py says {described})" if described != count else ""),
            )
    return result
