"""What a handler receives: its job, the database, progress, logs and cooperative checkpoints.
Every write is fenced by (job id, attempt, worker): a worker that lost its lease writes nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from yuntu.jobs import events
from yuntu.jobs.registry import JobCancelled, JobPaused, LeaseLost
from yuntu.kit.db import Database
from yuntu.models.jobs import Job, JobLog, JobStatus

if TYPE_CHECKING:
    from yuntu.jobs.worker import Worker

LEVELS = frozenset({"debug", "info", "warning", "error"})
_FLAG_REFRESH_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    id: int
    kind: str
    queue: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_seconds: int
    owner_user_id: int | None
    progress: int


class JobContext:
    def __init__(self, worker: Worker, job: ClaimedJob) -> None:
        self.job = job
        self.worker = worker
        self.db: Database = worker.db
        self.cancel_requested = False
        self.pause_requested = False
        self.interrupt_reason: str | None = None
        self._flags_read_at = time.monotonic()

    def fence(self) -> tuple[Any, ...]:
        return (
            Job.id == self.job.id,
            Job.attempts == self.job.attempt,
            Job.worker_id == self.worker.id,
            Job.status == JobStatus.RUNNING,
        )

    def session(self) -> Any:
        """A transaction for the handler's own work (commits when the block ends)."""
        return self.db.transaction()

    async def progress(self, percent: int, message: str | None = None) -> None:
        percent = max(0, min(100, int(percent)))
        message = message[:500] if message else None
        async with self.db.transaction() as session:
            result = await session.execute(
                update(Job)
                .where(*self.fence())
                .values(progress=percent, progress_message=message)
                .execution_options(synchronize_session=False)
            )
            if not result.rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(self.job.id)
        await events.publish(
            self.worker.bus,
            self.job.owner_user_id,
            events.message(
                "task.progress", self.job.id, self.job.kind, progress=percent, message=message
            ),
        )

    async def log(self, level: str, message: str) -> None:
        level = level if level in LEVELS else "info"
        message = message[:10_000]
        async with self.db.transaction() as session:
            owned = await session.execute(
                update(Job)
                .where(*self.fence())
                .values(updated_at=Job.updated_at)
                .execution_options(synchronize_session=False)
            )
            if not owned.rowcount:  # type: ignore[attr-defined]
                raise LeaseLost(self.job.id)
            session.add(
                JobLog(job_id=self.job.id, attempt=self.job.attempt, level=level, message=message)
            )
        await events.publish(
            self.worker.bus,
            self.job.owner_user_id,
            events.message("task.log", self.job.id, self.job.kind, level=level, message=message),
        )

    def set_flags(self, cancel: bool, pause: bool) -> None:
        self.cancel_requested, self.pause_requested = cancel, pause
        self._flags_read_at = time.monotonic()

    async def checkpoint(self) -> None:
        """Raise when the job was cancelled or paused (or this worker lost it); handlers call
        this between units of work so they stop cooperatively."""
        if self.interrupt_reason == "lease_lost":
            raise LeaseLost(self.job.id)
        if time.monotonic() - self._flags_read_at > _FLAG_REFRESH_SECONDS:
            async with self.db.read_sessionmaker() as session:
                row = (
                    await session.execute(
                        select(Job.cancel_requested, Job.pause_requested).where(*self.fence())
                    )
                ).first()
            if row is None:
                raise LeaseLost(self.job.id)
            self.set_flags(bool(row[0]), bool(row[1]))
        if self.cancel_requested:
            raise JobCancelled(self.job.id)
        if self.pause_requested:
            raise JobPaused(self.job.id)
