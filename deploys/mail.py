"""Mail role: an SMTP sink that keeps every message it is sent, for the local platform and
tests, where no mail provider is reachable (on AWS the workers send to SES instead).

It is aiosmtpd, from Debian (``python3-aiosmtpd``), run by its own command line with its
Maildir handler: each message one file, written before the sink answers 250, with the
envelope in ``X-MailFrom`` / ``X-RcptTo``. The firewall admits the workers only.
``maha-mail`` reads the Maildir for operators and tests (count, recipients, duplicates).
"""

from __future__ import annotations

from pyinfra.api import deploy
from pyinfra.operations import server, systemd

from deploys._common import restart, template, unit
from mahaops.context import settings
from mahaops.settings.mail import MailClientSettings, MailSinkSettings
from operations import apt

SERVICE = "maha-mail"
USER = "maha-mail"
MAILDIR = "/var/lib/maha-mail/Maildir"  # under the unit's StateDirectory


@deploy("Mail sink")
def mail() -> None:
    s = settings(MailSinkSettings)
    tvars = {
        **s.model_dump(),
        "mail_smtp_port": settings(MailClientSettings).mail_smtp_port,
        "mail_user": USER,
        "mail_maildir": MAILDIR,
    }
    apt.packages(
        name="Install aiosmtpd (Debian's SMTP server library)",
        packages=["python3-aiosmtpd"],
        update=True,
        cache_time=3600,
        no_recommends=True,
    )
    server.user(
        name=f"Sink user {USER} (no login)",
        user=USER,
        system=True,
        shell="/usr/sbin/nologin",
        home="/var/lib/maha-mail",
        ensure_home=False,  # systemd's StateDirectory makes it, the user's, 0750
        create_home=False,
    )
    template(
        "maha-mail: what the sink received (count, recipients, duplicates)",
        "mail/maha-mail.py.j2",
        "/usr/local/bin/maha-mail",
        mode="755",
        **tvars,
    )
    service = unit(
        "Unit maha-mail (aiosmtpd, sandboxed)",
        "mail/maha-mail.service.j2",
        f"/etc/systemd/system/{SERVICE}.service",
        reload_name="Reload systemd for maha-mail",
        **tvars,
    )
    systemd.service(name="Run the mail sink", service=SERVICE, running=True, enabled=True)
    restart("Restart the mail sink for its new unit", SERVICE, when=[service])
