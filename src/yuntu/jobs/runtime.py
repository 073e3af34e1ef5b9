"""Building workers from settings, for `yuntu serve` (embedded) and `yuntu worker`."""

from __future__ import annotations

import importlib

from yuntu.drive import archive as drive_archive  # noqa: F401  (the upload-task archive job)
from yuntu.drive import jobs as drive_jobs  # noqa: F401  (trash purge, blob GC)
from yuntu.jobs import builtin  # noqa: F401  (registers the engine's own handlers and schedules)
from yuntu.jobs.worker import Worker
from yuntu.kit.db import Database
from yuntu.kit.pubsub import PubSub
from yuntu.ledger import jobs as ledger_jobs  # holds, orders, rewards
from yuntu.packages import processing as package_processing  # noqa: F401  (packages.process)
from yuntu.render import jobs as render_jobs  # noqa: F401  (lease expiry)
from yuntu.settings import Settings
from yuntu.uploads import jobs as upload_jobs  # noqa: F401  (upload housekeeping)


def load_plugins(settings: Settings) -> None:
    """Import the configured plugin modules: their @handler and schedule() calls register."""
    for module in settings.plugins:
        importlib.import_module(module)


def build_worker(
    db: Database,
    bus: PubSub | None,
    settings: Settings,
    queues: list[str] | None = None,
    concurrency: int | None = None,
) -> Worker:
    load_plugins(settings)
    ledger_jobs.configure_schedules(settings)
    return Worker(
        db,
        bus=bus,
        queues=queues,
        concurrency=concurrency if concurrency is not None else settings.workers,
        lease_seconds=settings.worker_lease_seconds,
        poll_interval=settings.worker_poll_interval_seconds,
        shutdown_timeout=settings.worker_shutdown_timeout_seconds,
        cron_max_lateness=settings.cron_max_lateness_seconds,
    )
