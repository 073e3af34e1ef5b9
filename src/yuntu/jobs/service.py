"""Job operations inside the caller's transaction: enqueue, inspect, cancel, pause, resume,
retry. Nothing here commits; a job exists if and only if the caller's transaction commits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.jobs import events, registry
from yuntu.jobs.backoff import retry_delay
from yuntu.jobs.states import ensure_can_move
from yuntu.kit.db import database_of, on_commit
from yuntu.kit.errors import AppError, E
from yuntu.models.jobs import UNFINISHED, Job, JobLog, JobStatus

NOTIFY_CHANNEL = "yuntu_jobs"


def now_utc() -> datetime:
    return datetime.now(UTC)


async def announce_in(session: AsyncSession, queue: str) -> None:
    """Wake workers once the transaction commits: NOTIFY on PostgreSQL (delivered at commit,
    to every process), and the in-process waker for embedded workers."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :queue)"), {"channel": NOTIFY_CHANNEL, "queue": queue}
        )
    waker = database_of(session).job_waker
    if waker is not None:
        on_commit(session, lambda: waker.notify(queue))


async def enqueue(
    session: AsyncSession,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int = 0,
    run_at: datetime | None = None,
    unique_key: str | None = None,
    owner_user_id: int | None = None,
    group_id: int | None = None,
    parent_id: int | None = None,
    max_attempts: int | None = None,
    timeout_seconds: int | None = None,
) -> Job:
    """Write the job row in the caller's transaction. With `unique_key`, an unfinished job with
    that key is returned instead of a second one."""
    spec = registry.get(kind)
    if unique_key is not None:
        existing = await _unfinished_by_key(session, unique_key)
        if existing is not None:
            return existing
    job = Job(
        kind=kind,
        queue=queue or (spec.queue if spec else "default"),
        payload=payload or {},
        priority=priority,
        run_at=run_at or now_utc(),
        unique_key=unique_key,
        owner_user_id=owner_user_id,
        group_id=group_id,
        parent_id=parent_id,
        max_attempts=max_attempts or (spec.max_attempts if spec else 5),
        timeout_seconds=timeout_seconds or (spec.timeout_seconds if spec else 300),
    )
    if unique_key is None:
        session.add(job)
        await session.flush()
    else:
        try:
            async with session.begin_nested():
                session.add(job)
        except IntegrityError:  # a concurrent enqueue with the same key won
            existing = await _unfinished_by_key(session, unique_key)
            if existing is None:
                raise
            return existing
    await announce_in(session, job.queue)
    return job


async def _unfinished_by_key(session: AsyncSession, unique_key: str) -> Job | None:
    return await session.scalar(
        select(Job).where(Job.unique_key == unique_key, Job.status.in_(UNFINISHED))
    )


def visible_jobs(owner_user_id: int | None = None) -> Select[tuple[Job]]:
    stmt = select(Job)
    if owner_user_id is not None:
        stmt = stmt.where(Job.owner_user_id == owner_user_id)
    return stmt


async def get(session: AsyncSession, job_id: int, owner_user_id: int | None = None) -> Job:
    """Another user's job answers 404, exactly like a missing one."""
    job = await session.scalar(visible_jobs(owner_user_id).where(Job.id == job_id))
    if job is None:
        raise AppError(E.NOT_FOUND)
    return job


def list_statement(
    *,
    status: str | None = None,
    kind: str | None = None,
    queue: str | None = None,
    owner_user_id: int | None = None,
    group_id: int | None = None,
) -> Select[tuple[Job]]:
    stmt = visible_jobs(owner_user_id)
    if status:
        stmt = stmt.where(Job.status == status)
    if kind:
        stmt = stmt.where(Job.kind == kind)
    if queue:
        stmt = stmt.where(Job.queue == queue)
    if group_id:
        stmt = stmt.where(Job.group_id == group_id)
    return stmt.order_by(Job.created_at.desc(), Job.id.desc())


def logs_statement(job_id: int, attempt: int | None = None) -> Select[tuple[JobLog]]:
    stmt = select(JobLog).where(JobLog.job_id == job_id)
    if attempt is not None:
        stmt = stmt.where(JobLog.attempt == attempt)
    return stmt.order_by(JobLog.id)


async def _status_event(session: AsyncSession, job: Job) -> None:
    bus = database_of(session).bus
    event = events.message(
        "task.status",
        job.id,
        job.kind,
        status=job.status,
        progress=job.progress,
        message=job.progress_message,
    )
    on_commit(session, lambda: events.publish_soon(bus, job.owner_user_id, event))


async def cancel(session: AsyncSession, job: Job) -> Job:
    """Queued or paused: cancelled now. Running: the worker is asked to stop at its next
    checkpoint (or is interrupted), and the job ends cancelled."""
    await session.refresh(job, with_for_update=session.bind.dialect.name == "postgresql")
    if job.status == JobStatus.RUNNING:
        job.cancel_requested = True
        job.pause_requested = False
    else:
        ensure_can_move(job.status, JobStatus.CANCELLED)
        job.status = JobStatus.CANCELLED
        job.finished_at = now_utc()
        await _status_event(session, job)
    await session.flush()
    return job


async def pause(session: AsyncSession, job: Job) -> Job:
    """Queued: paused now. Running: paused at the handler's next checkpoint, progress kept."""
    await session.refresh(job, with_for_update=session.bind.dialect.name == "postgresql")
    if job.status == JobStatus.RUNNING:
        job.pause_requested = True
    else:
        ensure_can_move(job.status, JobStatus.PAUSED)
        job.status = JobStatus.PAUSED
        await _status_event(session, job)
    await session.flush()
    return job


async def resume(session: AsyncSession, job: Job) -> Job:
    await session.refresh(job, with_for_update=session.bind.dialect.name == "postgresql")
    if job.status == JobStatus.RUNNING and job.pause_requested:
        job.pause_requested = False  # asked to pause, changed its mind before the checkpoint
    else:
        ensure_can_move(job.status, JobStatus.QUEUED)
        if job.status != JobStatus.PAUSED:
            raise AppError(E.CONFLICT, message=f"a {job.status} job cannot be resumed")
        job.status = JobStatus.QUEUED
        job.run_at = now_utc()
        await _status_event(session, job)
        await announce_in(session, job.queue)
    await session.flush()
    return job


async def retry(session: AsyncSession, job: Job) -> Job:
    """An operator's retry of a failed or cancelled job: a fresh set of attempts."""
    await session.refresh(job, with_for_update=session.bind.dialect.name == "postgresql")
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise AppError(E.CONFLICT, message=f"a {job.status} job cannot be retried")
    if job.unique_key and await _unfinished_by_key(session, job.unique_key):
        raise AppError(E.CONFLICT, message="another unfinished job holds this unique key")
    job.status = JobStatus.QUEUED
    job.attempts = 0
    job.run_at = now_utc()
    job.cancel_requested = job.pause_requested = False
    job.finished_at = None
    job.last_error = None
    await _status_event(session, job)
    await announce_in(session, job.queue)
    await session.flush()
    return job


async def requeue_expired_leases(session: AsyncSession, now: datetime) -> list[Job]:
    """Running jobs whose worker stopped renewing its lease (killed, partitioned): retried, or
    failed when out of attempts. Safe to run from every worker at once."""
    expired = (
        await session.scalars(
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now)
            .limit(500)
            .with_for_update(skip_locked=True)
        )
    ).all()
    for job in expired:
        result = await session.execute(
            update(Job)
            .where(
                Job.id == job.id,
                Job.status == JobStatus.RUNNING,
                Job.attempts == job.attempts,
                Job.lease_expires_at < now,
            )
            .values(**lease_expiry_values(job, now))
            .execution_options(synchronize_session=False)
        )
        if result.rowcount:  # type: ignore[attr-defined]
            session.add(
                JobLog(
                    job_id=job.id,
                    attempt=job.attempts,
                    level="warning",
                    message=f"lease expired (worker {job.worker_id} stopped)",
                )
            )
    await session.flush()
    return list(expired)


def lease_expiry_values(job: Job, now: datetime) -> dict[str, Any]:
    if job.attempts >= job.max_attempts:
        return {
            "status": JobStatus.FAILED,
            "finished_at": now,
            "lease_expires_at": None,
            "last_error": "lease expired: the worker stopped (out of attempts)",
        }
    spec = registry.get(job.kind)
    delay = retry_delay(job.attempts, spec)
    return {
        "status": JobStatus.QUEUED,
        "lease_expires_at": None,
        "worker_id": None,
        "run_at": now + timedelta(seconds=delay),
        "last_error": "lease expired: the worker stopped",
    }
