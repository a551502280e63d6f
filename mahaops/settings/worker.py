"""Settings of the campaign workers (systemd unit maha-worker)."""

from __future__ import annotations

from pydantic import Field

from mahaops.settings.models import Settings, group_settings


@group_settings("workers")
class WorkerSettings(Settings):
    worker_concurrency: int = Field(2, ge=1, le=64)  # campaigns worked on at once per host
    worker_stop_grace_ms: int = Field(5000, ge=0, le=600000)  # on SIGTERM, time to finish jobs
    worker_stop_margin_sec: int = Field(10, ge=1, le=300)  # systemd waits grace + this, then kills
    worker_lease_ms: int = Field(15000, ge=1000)  # a dead worker's job returns after about this
    worker_batch_size: int = Field(500, ge=1, le=10000)  # recipients per delivery batch
    worker_batch_delay_ms: int = Field(100, ge=0)  # simulated mail-provider latency per batch
