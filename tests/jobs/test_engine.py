"""The job engine in one process, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from yuntu.jobs import cron, service
from yuntu.jobs.context import JobContext
from yuntu.jobs.registry import LeaseLost
from yuntu.jobs.states import TRANSITIONS, can_move, sources_of
from yuntu.kit.errors import AppError
from yuntu.models.jobs import CronRun, Job, JobLog, JobStatus

pytestmark = pytest.mark.anyio


async def enqueue(db, kind, payload=None, **options):
    async with db.transaction() as session:
        job = await service.enqueue(session, kind, payload or {}, **options)
        return job.id


async def load(db, job_id) -> Job:
    async with db.sessionmaker() as session:
        return await session.get_one(Job, job_id)


async def wait_for(db, job_id, statuses, timeout=10.0) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = await load(db, job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck in {job.status} ({job.last_error})")
        await asyncio.sleep(0.05)


async def logs(db, job_id) -> list[str]:
    async with db.sessionmaker() as session:
        rows = await session.scalars(
            select(JobLog.message).where(JobLog.job_id == job_id).order_by(JobLog.id)
        )
        return list(rows)


def test_transition_table():
    assert can_move("queued", "running") and can_move("running", "succeeded")
    assert can_move("paused", "queued") and can_move("failed", "queued")
    assert not can_move("succeeded", "queued") and not can_move("queued", "succeeded")
    assert not can_move("paused", "running")
    assert set(sources_of(JobStatus.CANCELLED)) == {"queued", "running", "paused"}
    assert set(TRANSITIONS) == set(JobStatus)


async def test_enqueue_is_atomic_with_the_callers_transaction(db):
    with pytest.raises(RuntimeError):
        async with db.transaction() as session:
            await service.enqueue(session, "test.noop")
            raise RuntimeError("the caller failed after enqueuing")
    async with db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 0
    await enqueue(db, "test.noop")
    async with db.sessionmaker() as session:
        assert await session.scalar(select(func.count()).select_from(Job)) == 1


async def test_unique_key_makes_one_unfinished_job(db, make_worker):
    first = await enqueue(db, "test.noop", unique_key="report:7")
    second = await enqueue(db, "test.noop", unique_key="report:7")
    assert first == second
    await make_worker()
    await wait_for(db, first, {"succeeded"})
    third = await enqueue(db, "test.noop", unique_key="report:7")
    assert third != first  # the first finished, so the key is free again


async def test_noop_succeeds_with_result_and_events(db, make_worker):
    subscription = db.bus.subscribe("user:42")
    job_id = await enqueue(db, "test.noop", owner_user_id=None)
    owned = await enqueue(db, "test.steps", {"steps": 2, "step_seconds": 0.01})
    async with db.transaction() as session:
        await session.execute(update(Job).where(Job.id == owned).values(owner_user_id=None))
    await make_worker()
    job = await wait_for(db, job_id, {"succeeded"})
    assert job.result == {"ok": True} and job.progress == 100 and job.attempts == 1
    assert job.finished_at and job.started_at and job.lease_expires_at is None
    await wait_for(db, owned, {"succeeded"})
    assert subscription.queue.empty()  # ownerless jobs announce to nobody
    subscription.close()


async def test_owner_receives_status_progress_and_log_events(db, make_worker, app_user):
    subscription = db.bus.subscribe(f"user:{app_user}")
    job_id = await enqueue(
        db, "test.steps", {"steps": 2, "step_seconds": 0.01}, owner_user_id=app_user
    )
    await make_worker()
    await wait_for(db, job_id, {"succeeded"})
    await asyncio.sleep(0.05)
    received = []
    while not subscription.queue.empty():
        received.append(subscription.queue.get_nowait()[0])
    kinds = [event["type"] for event in received]
    assert "task.progress" in kinds and "task.log" in kinds
    statuses = [e["data"]["status"] for e in received if e["type"] == "task.status"]
    assert statuses[0] == "running" and statuses[-1] == "succeeded"
    assert all(e["data"]["job_id"] == str(job_id) for e in received)
    subscription.close()


async def test_failures_retry_with_backoff_then_fail(db, make_worker):
    job_id = await enqueue(db, "test.fail")
    await make_worker()
    job = await wait_for(db, job_id, {"failed"})
    assert job.attempts == 3 and "handler exploded" in job.last_error
    messages = await logs(db, job_id)
    assert len([m for m in messages if "handler exploded" in m]) == 3


async def test_permanent_error_fails_at_once(db, make_worker):
    job_id = await enqueue(db, "test.permanent")
    await make_worker()
    job = await wait_for(db, job_id, {"failed"})
    assert job.attempts == 1 and "cannot succeed" in job.last_error


async def test_timeout_is_retried_then_failed(db, make_worker):
    job_id = await enqueue(db, "test.hang")
    await make_worker()
    job = await wait_for(db, job_id, {"failed"}, timeout=15)
    assert job.attempts == 2 and "timed out after 1 s" in job.last_error


async def test_unknown_kind_fails_clearly(db, make_worker):
    job_id = await enqueue(db, "no.such.kind")
    await make_worker()
    job = await wait_for(db, job_id, {"failed"})
    assert "no handler registered" in job.last_error


async def test_cancel_pause_and_resume_a_running_job(db, make_worker):
    await make_worker()
    job_id = await enqueue(db, "test.steps", {"steps": 40, "step_seconds": 0.05})
    await wait_for(db, job_id, {"running"})
    while (await load(db, job_id)).progress < 5:  # some work done, whatever the machine's load
        await asyncio.sleep(0.02)
    async with db.transaction() as session:
        await service.pause(session, await service.get(session, job_id))
    paused = await wait_for(db, job_id, {"paused"})
    kept = paused.progress
    assert 0 < kept < 100 and paused.attempts == 0  # the pause gave its attempt back
    await asyncio.sleep(0.3)
    assert (await load(db, job_id)).progress == kept  # nothing runs while paused
    async with db.transaction() as session:
        await service.resume(session, await service.get(session, job_id))
    done = await wait_for(db, job_id, {"succeeded"})
    assert done.progress == 100

    other = await enqueue(db, "test.steps", {"steps": 100, "step_seconds": 0.05})
    await wait_for(db, other, {"running"})
    async with db.transaction() as session:
        await service.cancel(session, await service.get(session, other))
    cancelled = await wait_for(db, other, {"cancelled"})
    assert cancelled.finished_at is not None and cancelled.progress < 100


async def test_cancel_stops_a_handler_that_never_checkpoints(db, make_worker):
    await make_worker()
    job_id = await enqueue(db, "test.stubborn")
    await wait_for(db, job_id, {"running"})
    async with db.transaction() as session:
        await service.cancel(session, await service.get(session, job_id))
    await wait_for(db, job_id, {"cancelled"}, timeout=5)


async def test_queued_jobs_pause_resume_cancel_and_refuse_nonsense(db):
    job_id = await enqueue(db, "test.noop", run_at=datetime.now(UTC) + timedelta(hours=1))
    async with db.transaction() as session:
        job = await service.pause(session, await service.get(session, job_id))
        assert job.status == "paused"
        job = await service.resume(session, job)
        assert job.status == "queued"
        job = await service.cancel(session, job)
        assert job.status == "cancelled"
    async with db.transaction() as session:
        job = await service.get(session, job_id)
        with pytest.raises(AppError):
            await service.pause(session, job)
        with pytest.raises(AppError):
            await service.resume(session, job)
        job = await service.retry(session, job)
        assert job.status == "queued" and job.attempts == 0


async def test_fencing_a_worker_that_lost_its_lease(db, make_worker):
    from tests.support import job_handlers  # noqa: F401

    first = await make_worker(concurrency=1)
    await first.stop()  # use it only to claim by hand
    job_id = await enqueue(db, "test.noop")
    [claimed] = await first.claim(1)
    ctx = JobContext(first, claimed)
    await ctx.progress(10, "first attempt")
    # the lease runs out (worker paused by the OS, say) and another worker takes the job
    async with db.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    async with db.transaction() as session:
        await service.requeue_expired_leases(session, datetime.now(UTC))
    async with db.transaction() as session:
        await session.execute(update(Job).where(Job.id == job_id).values(run_at=datetime.now(UTC)))
    second = await make_worker(concurrency=1)
    job = await wait_for(db, job_id, {"succeeded"})
    assert job.attempts == 2 and job.worker_id == second.id
    # the first worker wakes up: every write it tries is refused and changes nothing
    with pytest.raises(LeaseLost):
        await ctx.progress(50, "stale")
    with pytest.raises(LeaseLost):
        await ctx.log("info", "stale")
    assert not await first._finish(ctx, {"status": JobStatus.FAILED})
    job = await load(db, job_id)
    assert job.status == "succeeded" and job.progress == 100
    assert "stale" not in await logs(db, job_id)


async def test_expired_lease_out_of_attempts_fails(db, make_worker):
    worker = await make_worker(concurrency=1)
    await worker.stop()
    job_id = await enqueue(db, "test.noop", max_attempts=1)
    await worker.claim(1)
    async with db.transaction() as session:
        await session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await service.requeue_expired_leases(session, datetime.now(UTC))
    job = await load(db, job_id)
    assert job.status == "failed" and "lease expired" in job.last_error


async def test_graceful_shutdown_hands_back_a_running_job(db, make_worker):
    worker = await make_worker(shutdown_timeout=0.2)
    job_id = await enqueue(db, "test.stubborn")
    await wait_for(db, job_id, {"running"})
    await worker.stop()
    job = await load(db, job_id)
    assert job.status == "queued" and job.attempts == 0 and job.worker_id is None
    assert "handed back at worker shutdown" in await logs(db, job_id)


async def test_cron_slot_runs_once_however_many_ticks(db):
    entry = cron.schedule("test.hourly", "0 * * * *", "test.noop")
    try:
        now = datetime.now(UTC).replace(minute=0, second=5, microsecond=0)
        results = await asyncio.gather(
            *[cron.tick(db, now, timedelta(minutes=5)) for _ in range(3)]
        )
        created = [job for batch in results for job in batch if job.kind == "test.noop"]
        assert len(created) == 1
        async with db.sessionmaker() as session:
            slots = (
                await session.scalars(select(CronRun.slot).where(CronRun.schedule == entry.name))
            ).all()
        assert slots == [now.replace(second=0)]
        late = now + timedelta(minutes=30)
        assert [
            j for j in await cron.tick(db, late, timedelta(minutes=5)) if j.kind == "test.noop"
        ] == []
    finally:
        cron.unregister(entry.name)
