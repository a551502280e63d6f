"""Worker role: the campaign worker (systemd unit maha-worker) from the same releases as
the app servers. On SIGTERM a worker finishes or hands back the jobs in hand, so systemd
waits longer than the worker's grace before it kills."""

from __future__ import annotations

import math

from pyinfra.api import deploy

from deploys._common import unit
from deploys.app import app_user_and_directories, nodejs, release_steps, shared_environment
from mahaops.context import settings
from mahaops.settings.app import NodejsSettings, ReleaseSettings
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
        restart_when=[env, service],
    )
