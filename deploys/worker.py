"""Worker role: the campaign worker (systemd unit maha-worker) from the same releases as
the app servers. On SIGTERM a worker finishes or hands back the jobs in hand, so systemd
waits longer than the worker's grace before it kills."""

from __future__ import annotations

import math
from typing import Any

from pyinfra.api import deploy

from deploys._common import template, unit
from deploys.app import app_user_and_directories, nodejs, release_steps, shared_environment
from mahaops import masking
from mahaops.context import addresses, settings
from mahaops.secrets import current
from mahaops.settings.app import NodejsSettings, ReleaseSettings
from mahaops.settings.mail import MailClientSettings
from mahaops.settings.worker import WorkerSettings

# A crash loop shows within this: the worker's process must live this long.
STEADY_SECONDS = 3


@deploy("Worker")
def worker() -> None:
    r, w = settings(ReleaseSettings), settings(WorkerSettings)

    # -- runtime, user, environment ----------------------------------------------------------
    nodejs(settings(NodejsSettings))
    app_user_and_directories(r)
    env = shared_environment(r)
    mail_env = template(
        "Mail environment (SMTP server, its password)",
        "worker/mail.env.j2",
        f"{r.app_root}/shared/mail.env",
        mode="600",
        user=r.app_user,
        group=r.app_user,
        **r.model_dump(),
        **mail_vars(w),
    )
    timeout = math.ceil(w.worker_stop_grace_ms / 1000) + w.worker_stop_margin_sec
    service = unit(
        "Unit maha-worker",
        "worker/maha-worker.service.j2",
        "/etc/systemd/system/maha-worker.service",
        reload_name="Reload systemd for maha-worker",
        **r.model_dump(),
        **w.model_dump(),
        worker_timeout_stop_sec=timeout,
    )

    # -- the release: healthy when the same process still runs a few seconds later -----------
    pid = "systemctl show -p MainPID --value maha-worker"
    steady = (
        f'{{ p=$({pid}); sleep {STEADY_SECONDS}; [ "$p" != 0 ] && '
        f'systemctl is-active --quiet maha-worker && [ "$({pid})" = "$p" ]; }}'
    )
    release_steps(
        r,
        service="maha-worker",
        check=steady,
        retries=3,
        interval=1.0,
        restart_when=[env, mail_env, service],
    )


def mail_vars(w: WorkerSettings) -> dict[str, Any]:
    """Where the worker sends campaign mail: ``worker_smtp_host``, else the inventory's first
    mail server (``worker_mail_sink``), else nowhere (simulated); the SMTP password only
    where a user name is set, and only from the secrets store: it is never generated."""
    sink = next(iter(addresses("mail_servers")), "")
    password = ""
    if w.worker_smtp_user:
        stored = current().get("smtp_password")
        if not stored:
            raise ValueError(
                "worker_smtp_user is set but the secret smtp_password is missing: store the "
                "SMTP password (SES: the SMTP credentials' password) before deploying workers"
            )
        password = masking.register(stored)
    return {
        **w.model_dump(),
        "worker_mail_sink": sink,
        "worker_smtp_address": w.worker_smtp_host or sink,
        "worker_smtp_port_effective": w.worker_smtp_port
        or settings(MailClientSettings).mail_smtp_port,
        "worker_smtp_password": password,
    }
