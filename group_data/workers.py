"""Workers: the campaign worker (maha-worker), from the same releases as the app servers.
Defaults and their meaning: mahaops/settings/worker.py and mahaops/settings/app.py."""

app_keep_releases = 5
worker_concurrency = 2  # campaigns in hand at once per host
worker_stop_grace_ms = 5000  # SIGTERM: finish or hand back jobs within this; systemd waits more
