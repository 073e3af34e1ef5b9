from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import tests.support.job_handlers  # noqa: F401  (registers the test handlers)
from yuntu.jobs.worker import Worker
from yuntu.kit.db import Database
from yuntu.kit.pubsub import PubSub


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(db_url)
    database.bus = PubSub()
    yield database
    await database.dispose()


@pytest.fixture
async def make_worker(db: Database) -> AsyncIterator:
    workers: list[Worker] = []

    async def factory(**options) -> Worker:
        options.setdefault("lease_seconds", 1.5)
        options.setdefault("poll_interval", 0.05)
        options.setdefault("reap_interval", 0.2)
        options.setdefault("shutdown_timeout", 2.0)
        options.setdefault("run_cron", False)
        options.setdefault("concurrency", 4)
        worker = Worker(db, bus=db.bus, **options)
        await worker.start()
        workers.append(worker)
        return worker

    yield factory
    for worker in workers:
        await worker.stop()


@pytest.fixture
async def app_user(db: Database) -> int:
    from yuntu.identity.service import create_user

    async with db.transaction() as session:
        user = await create_user(
            session, username="jobowner", email=None, phone=None, password=None
        )
        return user.id
