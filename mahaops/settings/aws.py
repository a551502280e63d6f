"""Settings of AWS environments (group_data/aws.py): one typed description per environment.

``aws_environments`` maps an environment name to its description: region and
zones, network, instances per role, domain and certificates, SSH access. The
types reject a bad value (an unknown instance type, a malformed CIDR, a
missing region, no app server) before any AWS API is called.
"""

from __future__ import annotations

import difflib
import functools
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, field_validator, model_validator

from mahaops.settings.base import Cidr
from mahaops.settings.models import Record, Settings, group_settings

EC2_ROLES: tuple[str, ...] = ("app", "db", "cache", "log", "worker")
"""Roles that run on EC2; on AWS the ``lb`` role is the Application Load Balancer itself."""
REQUIRED_ROLES: tuple[str, ...] = ("app", "db", "cache")
"""Roles the platform cannot run without: at least one instance each."""

Ec2Role = Literal["app", "db", "cache", "log", "worker"]

_REGION = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d+$")
_ENV_NAME = re.compile(r"^[a-z][a-z0-9-]{0,14}$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_ZONE_ID = re.compile(r"^[A-Z0-9]{1,32}$")
_ACM_ARN = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")


@functools.cache
def known_instance_types() -> frozenset[str]:
    """Every EC2 instance type botocore knows, read from its bundled model (no API call)."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("ec2")
    shape: Any = model.shape_for("InstanceType")  # a StringShape; stubs type it as Shape
    return frozenset(shape.enum)


def _instance_type(value: str) -> str:
    if value not in known_instance_types():
        close = difflib.get_close_matches(value, sorted(known_instance_types()), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown EC2 instance type {value!r}{hint}")
    return value


def _region(value: str) -> str:
    if not _REGION.match(value):
        raise ValueError(f"{value!r} is not an AWS region (e.g. eu-west-1)")
    return value


def _env_name(value: str) -> str:
    if not _ENV_NAME.match(value):
        raise ValueError(f"{value!r}: environment names are 1-15 of a-z, 0-9, '-'")
    return value


def _domain(value: str) -> str:
    if not _DOMAIN.match(value):
        raise ValueError(f"{value!r} is not a lower-case DNS name (e.g. maha.example.org)")
    return value


def _acm_arn(value: str) -> str:
    if not _ACM_ARN.match(value):
        raise ValueError(f"{value!r} is not an ACM certificate ARN")
    return value


def _zone_id(value: str) -> str:
    if not _ZONE_ID.match(value):
        raise ValueError(f"{value!r} is not a Route 53 hosted zone id (e.g. Z0123456789ABC)")
    return value


InstanceType = Annotated[str, AfterValidator(_instance_type)]
Region = Annotated[str, AfterValidator(_region)]
EnvName = Annotated[str, AfterValidator(_env_name)]
Domain = Annotated[str, AfterValidator(_domain)]
CertificateArn = Annotated[str, AfterValidator(_acm_arn)]
ZoneId = Annotated[str, AfterValidator(_zone_id)]


class AwsRole(Record):
    """How many instances of a role, of which type, with which disk."""

    count: int = Field(1, ge=0, le=50)  # 0 leaves an optional role (log, worker) out
    instance_type: InstanceType = "t3.small"  # any type botocore knows
    disk_gb: int = Field(20, ge=8, le=16384)  # encrypted gp3 root volume


_ROLE_DEFAULTS: dict[str, dict[str, Any]] = {
    "app": {"instance_type": "t3.small"},
    "db": {"instance_type": "t3.medium", "disk_gb": 50},
    "cache": {"instance_type": "t3.small"},
    "log": {"instance_type": "t3.small", "disk_gb": 50},
    "worker": {"instance_type": "t3.small"},
}


class AwsEnvironment(Record):
    """One AWS environment: everything ``invoke provision --env NAME`` converges to."""

    model_config = ConfigDict(validate_default=True)

    # -- where ------------------------------------------------------------------------------
    region: Region  # required: no silent default region
    availability_zones: list[str] = []  # two zones; empty = the region's "a" and "b"
    profile: str | None = None  # AWS profile; None = AWS_PROFILE / the default chain
    protected: bool = False  # teardown refuses; the ALB gets deletion protection

    # -- network ----------------------------------------------------------------------------
    vpc_id: str | None = None  # an existing VPC to use instead of creating one
    public_subnet_ids: list[str] = []  # with vpc_id: two public subnets (ALB, NAT)
    private_subnet_ids: list[str] = []  # with vpc_id: two private subnets (instances)
    vpc_cidr: Cidr = "10.20.0.0/16"  # a new VPC's range; split into four /20 subnets
    nat_gateway: bool = True  # outbound internet (apt) for private hosts; none when all public
    admin_cidrs: list[Cidr] = []  # sources allowed to SSH; [] = no SSH from outside

    # -- instances --------------------------------------------------------------------------
    roles: dict[Ec2Role, AwsRole] = {}  # per role; unlisted roles take the defaults
    ami_id: str | None = None  # pin an AMI; None = newest Debian 12 at provision time
    # PostgreSQL's data and dumps: an encrypted gp3 volume per db host, kept when the
    # instance is terminated and attached again to the one that replaces it
    db_data_gb: int = Field(50, ge=1, le=16384)

    # -- SSH access -------------------------------------------------------------------------
    ssh_public_key: str  # a public key file (~ allowed) or the key text, imported to EC2
    ssh_private_key: str | None = None  # the matching private key file, for pyinfra
    ssh_user: str = "admin"  # Debian cloud images' initial user
    access: Literal["public", "bastion", "ssm"] = "public"  # how pyinfra reaches hosts
    bastion: str | None = None  # with access="bastion": "user@host[:port]" to jump through
    # access="ssm": Debian's images ship no SSM agent; UserData installs this version of
    # the regional package, refused unless its SHA-256 matches (both required for "ssm")
    ssm_agent_version: str | None = None  # e.g. "3.3.1142.0"
    ssm_agent_sha256: str | None = None  # of debian_amd64/amazon-ssm-agent.deb, that version

    # -- web --------------------------------------------------------------------------------
    domain: Domain | None = None  # name served by the ALB over HTTPS; None = plain HTTP
    certificate_arn: CertificateArn | None = None  # regional ACM cert; None = requested
    cdn_domain: Domain | None = None  # CloudFront alias (e.g. cdn.example.org)
    cdn_certificate_arn: CertificateArn | None = None  # us-east-1 cert; None = requested
    # A public Route 53 zone holding domain and cdn_domain: ACM's validation records and
    # aliases to the ALB and the distribution are made there. None = the records are
    # printed and pointing the names is the operator's.
    hosted_zone_id: ZoneId | None = None
    app_port: int = Field(80, ge=1, le=65535)  # nginx on the app servers
    health_check_path: str = "/health"  # the target group's health check
    alb_idle_timeout: int = Field(3600, ge=1, le=4000)  # seconds; long for WebSockets
    deregistration_delay: int = Field(30, ge=0, le=3600)  # seconds to drain a leaving target
    uploads_noncurrent_days: int = Field(30, ge=1)  # keep replaced/deleted uploads this long
    backup_retention_days: int = Field(35, ge=1)  # the backup bucket expires dumps this old

    # -- role settings ----------------------------------------------------------------------
    # Settings for this environment's hosts, over group_data (e.g. {"nodejs_major": 18}):
    # what differs between environments of one kind. Checked like group_data's own.
    settings: dict[str, Any] = {}

    @field_validator("settings")
    @classmethod
    def _known_settings(cls, value: dict[str, Any]) -> dict[str, Any]:
        from mahaops.settings import SettingsError, all_models, check_values

        try:
            check_values("settings", value, all_models())
        except SettingsError as exc:
            raise ValueError(f"settings.{exc.key}: {exc.message}") from None
        return value

    @field_validator("roles", mode="before")
    @classmethod
    def _fill_roles(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        merged: dict[str, Any] = {}
        for name, defaults in _ROLE_DEFAULTS.items():
            given = value.get(name, {})
            merged[name] = {**defaults, **given} if isinstance(given, dict) else given
        merged.update({k: v for k, v in value.items() if k not in merged})
        return merged

    @field_validator("roles")
    @classmethod
    def _required_roles(cls, value: dict[str, AwsRole]) -> dict[str, AwsRole]:
        for name in REQUIRED_ROLES:
            if value[name].count < 1:
                raise ValueError(f"roles.{name}.count must be at least 1 (the platform needs it)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AwsEnvironment:
        zones = self.availability_zones
        if len(zones) not in (0, 2) or any(not z.startswith(self.region) for z in zones):
            raise ValueError(f"availability_zones: give two zones of {self.region}")
        if self.vpc_id and (len(self.public_subnet_ids) != 2 or len(self.private_subnet_ids) != 2):
            raise ValueError("vpc_id: an existing VPC needs two public_subnet_ids and two private")
        # A domain without an ARN gets an ACM certificate requested (mahaops/aws/acm.py).
        if self.certificate_arn and not self.domain:
            raise ValueError("certificate_arn: a certificate needs the domain it covers")
        if self.cdn_certificate_arn and not self.cdn_domain:
            raise ValueError("cdn_certificate_arn: a certificate needs the cdn_domain it covers")
        if self.hosted_zone_id and not (self.domain or self.cdn_domain):
            raise ValueError("hosted_zone_id: give the domain or cdn_domain it should hold")
        if self.cdn_certificate_arn and ":us-east-1:" not in self.cdn_certificate_arn:
            raise ValueError("cdn_certificate_arn: CloudFront needs a certificate in us-east-1")
        if self.profile == "maha-sim" and (self.access != "public" or self.vpc_id):
            raise ValueError(
                'access: the sim stand-in (profile "maha-sim") makes its own VPC and reaches'
                ' hosts at their public addresses: access="public", no vpc_id'
            )
        if self.access != "public" and not self.nat_gateway and not self.vpc_id:
            raise ValueError(
                f'nat_gateway: hosts are private with access="{self.access}", and without a'
                " NAT gateway they have no route out (packages, SSM): set nat_gateway = True"
            )
        if self.access == "bastion" and not self.bastion:
            raise ValueError('bastion: access="bastion" needs bastion="user@host"')
        return self

    @property
    def zones(self) -> tuple[str, str]:
        if self.availability_zones:
            return (self.availability_zones[0], self.availability_zones[1])
        return (f"{self.region}a", f"{self.region}b")

    def role(self, name: str) -> AwsRole:
        return self.roles[name]  # type: ignore[index]


@group_settings("aws")
class AwsSettings(Settings):
    aws_environments: dict[EnvName, AwsEnvironment] = {}  # environment name -> description
    aws_ami_ssm_parameter: str = "/aws/service/debian/release/12/latest/amd64"  # Debian's own
    aws_ami_owner: str = "136693071363"  # Debian's AWS account, for the describe_images fallback
    aws_ami_name_pattern: str = "debian-12-amd64-*"  # newest matching image wins
