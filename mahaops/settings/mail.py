"""Settings of the mail role: an SMTP sink (aiosmtpd) that stores and counts what it gets.

The sink stands in for a mail provider on the local platform and in tests: workers send
campaign mail to it exactly as they send it to SES on AWS. Its port is a client setting
too (workers connect to it, the firewall opens it to them), so it may be set in ``all.py``
or an overlay as well as in ``mail_servers.py``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mahaops.settings.models import Settings, group_settings


@group_settings("all", "local", "aws", "workers", "mail_servers")
class MailClientSettings(Settings):
    """What the sink's clients need too."""

    mail_smtp_port: int = Field(25, ge=1, le=65535)  # the sink listens here; workers send here


@group_settings("mail_servers")
class MailSinkSettings(Settings):
    # Larger messages are refused with 552 (SMTP SIZE): a runaway campaign cannot fill the disk
    # with one message.
    mail_max_message_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=100 * 1024 * 1024)
    mail_smtputf8: bool = True  # accept UTF-8 addresses (SMTPUTF8), as SES does
    mail_loglevel: Literal["warning", "info", "debug"] = "warning"  # info: one line per session
