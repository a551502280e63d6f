"""Settings of the campaign workers (systemd unit maha-worker)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from mahaops.settings.models import Settings, group_settings


@group_settings("workers")
class WorkerSettings(Settings):
    worker_concurrency: int = Field(2, ge=1, le=64)  # campaigns worked on at once per host
    worker_stop_grace_ms: int = Field(5000, ge=0, le=600000)  # on SIGTERM, time to finish jobs
    worker_stop_margin_sec: int = Field(10, ge=1, le=300)  # systemd waits grace + this, then kills
    worker_lease_ms: int = Field(15000, ge=1000)  # a dead worker's job returns after about this
    worker_batch_size: int = Field(500, ge=1, le=10000)  # recipients per delivery batch
    worker_batch_delay_ms: int = Field(100, ge=0)  # simulated mail-provider latency per batch

    # -- campaign mail over SMTP (app/src/mailer.js; app/README.md "Mail") ------------------
    # "": the inventory's first mail server (the local sink); no host at all: simulated sending.
    # AWS: SES's SMTP endpoint, e.g. email-smtp.eu-west-1.amazonaws.com, with "starttls" on 587.
    worker_smtp_host: str = ""
    worker_smtp_port: int | None = Field(None, ge=1, le=65535)  # None: mail_smtp_port (25)
    worker_smtp_security: Literal["none", "starttls", "tls"] = "none"  # tls: implicit (465)
    # SES's SMTP user name; its password is the secret smtp_password, which the operator
    # stores (SSM /maha/<env>/smtp_password): it is never generated, and a missing one fails.
    worker_smtp_user: str = ""
    worker_mail_from: str = "Maha <campaigns@maha.test>"  # SES: a verified identity
    worker_mail_rate_per_campaign: int = Field(0, ge=0, le=100000)  # messages/s; 0: no limit
    worker_mail_connections: int = Field(4, ge=1, le=50)  # pooled SMTP connections per worker
    worker_mail_max_tries: int = Field(5, ge=1, le=50)  # per message, for 4xx and lost connections
    # Refusals for good (5xx) in a row, none accepted between, that fail the campaign: the
    # sender is refused (an unverified SES identity), so sending on would only burn quota
    worker_mail_refused_in_a_row: int = Field(50, ge=1, le=100000)

    @field_validator("worker_mail_from", "worker_smtp_host", "worker_smtp_user")
    @classmethod
    def _env_file_safe(cls, value: str) -> str:
        # Written to an EnvironmentFile as KEY="value": no quote, backslash or $ to escape.
        if re.search(r'["\\$`]', value):
            raise ValueError("may not hold a quote, backslash, $ or backtick")
        return value
