"""The ledger's scheduled jobs, run through the real job engine: weekly rewards, hold and order
expiry, idempotency-record pruning; their schedules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select

from tests.conftest import make_settings
from tests.ledger.conftest import make_user
from tests.ledger.test_rewards import point_balances, reward_count, seed_subscribers
from tests.ledger.test_transfers import credit
from yuntu.jobs import cron, service
from yuntu.jobs.runtime import build_worker
from yuntu.jobs.worker import Worker
from yuntu.kit.db import Database, utcnow
from yuntu.kit.pubsub import PubSub
from yuntu.ledger import accounts, holds, orders, rewards
from yuntu.ledger import jobs as ledger_jobs
from yuntu.models.idempotency import IdempotencyRecord
from yuntu.models.jobs import Job
from yuntu.models.ledger import Asset, HoldStatus, Order, OrderKind, OrderStatus

pytestmark = pytest.mark.anyio

RunJob = Callable[..., Awaitable[Job]]


@pytest.fixture
async def jobs_db(ledger_db: Database, tmp_path: Path) -> Database:
    ledger_db.settings = make_settings(
        tmp_path,
        ledger_db.url,
        weekly_reward_points=5,
        weekly_reward_batch=2,
        idempotency_retention_hours=24,
    )
    ledger_db.bus = PubSub()
    return ledger_db


@pytest.fixture
async def run_job(jobs_db: Database) -> AsyncIterator[RunJob]:
    """Enqueue a job (or take one already enqueued) and let a real worker run it to the end."""
    worker = Worker(
        jobs_db,
        bus=jobs_db.bus,
        poll_interval=0.05,
        lease_seconds=5,
        shutdown_timeout=2.0,
        run_cron=False,
    )
    await worker.start()

    async def run(
        kind: str | None = None, payload: dict[str, Any] | None = None, *, job_id: int | None = None
    ) -> Job:
        if job_id is None:
            assert kind is not None
            async with jobs_db.transaction() as session:
                job_id = (await service.enqueue(session, kind, payload or {})).id
        deadline = time.monotonic() + 20
        while True:
            async with jobs_db.sessionmaker() as session:
                job = await session.get_one(Job, job_id)
            if job.status in ("succeeded", "failed"):
                return job
            assert time.monotonic() < deadline, f"job stuck in {job.status}: {job.last_error}"
            await asyncio.sleep(0.05)

    yield run
    await worker.stop()


def test_schedules(tmp_path: Path) -> None:
    registered = cron.schedules()
    assert registered["ledger.expire_holds"].cron == "*/5 * * * *"
    assert registered["ledger.expire_orders"].cron == "*/5 * * * *"
    assert registered["ledger.prune_idempotency"].cron.split()[1:] == ["*"] * 4  # hourly
    before = registered.get(ledger_jobs.WEEKLY_REWARDS)
    try:
        db = Database("sqlite+aiosqlite://")
        build_worker(db, None, make_settings(tmp_path, db.url, weekly_reward_cron="5 0 * * 1"))
        weekly = cron.schedules()[ledger_jobs.WEEKLY_REWARDS]
        assert (weekly.cron, weekly.kind) == ("5 0 * * 1", "ledger.weekly_rewards")
        build_worker(db, None, make_settings(tmp_path, db.url, weekly_reward_enabled=False))
        assert ledger_jobs.WEEKLY_REWARDS not in cron.schedules()
        with pytest.raises(ValueError, match="invalid cron"):
            ledger_jobs.configure_schedules(
                make_settings(tmp_path, db.url, weekly_reward_cron="every monday")
            )
    finally:
        cron.unregister(ledger_jobs.WEEKLY_REWARDS)
        if before is not None:
            cron.schedule(before.name, before.cron, before.kind, before.payload, before.queue)


async def test_weekly_rewards_job_pays_its_slots_week(jobs_db: Database, run_job: RunJob) -> None:
    now = utcnow()
    week = rewards.iso_week(now)
    users = await seed_subscribers(jobs_db, week, 5)
    ledger_jobs.configure_schedules(jobs_db.settings)
    entry = cron.schedules()[ledger_jobs.WEEKLY_REWARDS]
    async with jobs_db.transaction() as session:  # what a worker's cron tick does on Monday
        claimed = await cron.claim_slot(session, entry, entry.latest_slot(now))
    assert claimed is not None
    job = await run_job(job_id=claimed.id)
    assert job.status == "succeeded", job.last_error
    assert job.result == {
        "week": week,
        "eligible": 5,
        "paid": 5,
        "already_paid": 0,
        "failed": 0,
        "retried": 0,
    }
    assert await point_balances(jobs_db) == dict.fromkeys(users, 5)
    again = await run_job("ledger.weekly_rewards", {"week": week})
    assert again.status == "succeeded" and again.result["already_paid"] == 5
    assert await reward_count(jobs_db) == 5

    bad = await run_job("ledger.weekly_rewards", {"week": "2026-W99"})
    assert bad.status == "failed" and bad.attempts == 1  # a permanent error: not retried
    assert "no such ISO week" in (bad.last_error or "")


async def test_weekly_rewards_job_honours_disabled(jobs_db: Database, run_job: RunJob) -> None:
    jobs_db.settings = jobs_db.settings.model_copy(update={"weekly_reward_enabled": False})
    await seed_subscribers(jobs_db, rewards.iso_week(utcnow()), 2)
    job = await run_job("ledger.weekly_rewards")
    assert job.status == "succeeded" and job.result == {"skipped": "disabled"}
    assert await reward_count(jobs_db) == 0


async def test_expire_holds_job_releases_expired_holds_only(
    jobs_db: Database, run_job: RunJob
) -> None:
    alice = await make_user(jobs_db, "alice")
    await credit(jobs_db, alice, 100, "seed", Asset.POINTS)
    async with jobs_db.transaction() as session:
        stale = await holds.place(
            session,
            key="stale",
            user_id=alice,
            asset=Asset.POINTS,
            amount=30,
            expires_in=timedelta(seconds=-1),
        )
        live = await holds.place(
            session,
            key="live",
            user_id=alice,
            asset=Asset.POINTS,
            amount=20,
            expires_in=timedelta(hours=1),
        )
        await holds.capture(session, stale.id, 10, key="stale-capture")
    job = await run_job("ledger.expire_holds")
    assert job.status == "succeeded" and job.result == {"expired": 1, "failed": 0}
    async with jobs_db.read_sessionmaker() as session:
        closed = await holds.get(session, stale.id)
        still = await holds.get(session, live.id)
        assert (closed.status, closed.captured, closed.released) == (HoldStatus.EXPIRED, 10, 20)
        assert closed.closed_at is not None and still.status == HoldStatus.PENDING
        assert await accounts.balance_of(session, alice, Asset.POINTS) == (70, 20)
    again = await run_job("ledger.expire_holds")
    assert again.result == {"expired": 0, "failed": 0}


async def test_expire_orders_job(jobs_db: Database, run_job: RunJob) -> None:
    alice = await make_user(jobs_db, "alice")
    made: dict[str, int] = {}
    async with jobs_db.transaction() as session:
        for name, expires_in in (
            ("stale", timedelta(minutes=-1)),
            ("fresh", timedelta(minutes=30)),
            ("open", None),
        ):
            order = await orders.create(
                session,
                user_id=alice,
                kind=OrderKind.RECHARGE,
                amount=1000,
                currency="CNY",
                credit_asset=Asset.CNY,
                credit_amount=1000,
                provider="dev_simulated",
                expires_in=expires_in,
            )
            made[name] = order.id
    job = await run_job("ledger.expire_orders")
    assert job.status == "succeeded" and job.result == {"expired": 1}
    async with jobs_db.read_sessionmaker() as session:
        statuses = dict((await session.execute(select(Order.id, Order.status))).all())
    assert statuses == {
        made["stale"]: OrderStatus.EXPIRED,
        made["fresh"]: OrderStatus.PENDING,
        made["open"]: OrderStatus.PENDING,
    }


async def test_prune_idempotency_job(jobs_db: Database, run_job: RunJob) -> None:
    now = utcnow()
    record = {
        "owner": "user:1",
        "method": "POST",
        "path": "/api/v1/order/create",
        "request_hash": "0" * 64,
        "status_code": 200,
        "response_body": "{}",
    }
    async with jobs_db.transaction() as session:
        await session.execute(
            insert(IdempotencyRecord),
            [
                {**record, "key": "old", "created_at": now - timedelta(hours=25)},
                {**record, "key": "recent", "created_at": now - timedelta(hours=23)},
            ],
        )
    job = await run_job("ledger.prune_idempotency")
    assert job.status == "succeeded" and job.result == {"deleted": 1}
    async with jobs_db.read_sessionmaker() as session:
        assert list(await session.scalars(select(IdempotencyRecord.key))) == ["recent"]
