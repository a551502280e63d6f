"""Settings of the platform's internal TLS: how long the servers' certificates from the
environment's own CA last, and when a run issues new ones (``mahaops/tls.py``)."""

from __future__ import annotations

from pydantic import Field, ValidationInfo, field_validator

from mahaops.settings.models import Settings, group_settings


@group_settings("all", "local", "aws", "db_servers", "cache_servers")
class TlsSettings(Settings):
    tls_cert_days: int = Field(365, ge=2, le=825)  # a server certificate's lifetime
    # A run issues a new certificate (and key) once the host's expires within this many days:
    # run a deploy at least this often, or a certificate can lapse and clients refuse it.
    tls_cert_renew_days: int = Field(30, ge=1)

    @field_validator("tls_cert_renew_days")
    @classmethod
    def _before_expiry(cls, value: int, info: ValidationInfo) -> int:
        days = info.data.get("tls_cert_days")
        if days is not None and value >= days:
            raise ValueError(f"must be below tls_cert_days ({days}): every run would renew")
        return value
