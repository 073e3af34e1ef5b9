"""The worker: claims jobs, runs handlers under a lease with heartbeats, retries with backoff,
requeues jobs of dead workers, evaluates cron, and shuts down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update

from yuntu.jobs import cron, events, registry, service
from yuntu.jobs.backoff import retry_delay
from yuntu.jobs.context import ClaimedJob, JobContext
from yuntu.jobs.registry import JobCancelled, JobPaused, LeaseLost, PermanentError
from yuntu.kit.db import Database
from yuntu.kit.logging import get_logger
from yuntu.kit.pubsub import PubSub
from yuntu.models.jobs import Job, JobLog, JobStatus

log = get_logger("yuntu.worker")


def now_utc() -> datetime:
    return datetime.now(UTC)


class JobWaker:
    """Wakes idle claim loops: set by in-process enqueues after commit and by PostgreSQL
    NOTIFY; the claim loop also polls, so a lost wake-up only costs latency."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def notify(self, _queue: str | None = None) -> None:
        self.event.set()


class Worker:
    def __init__(
        self,
        db: Database,
        *,
        bus: PubSub | None = None,
        queues: list[str] | None = None,
        concurrency: int = 4,
        lease_seconds: float = 30.0,
        poll_interval: float = 1.0,
        reap_interval: float = 5.0,
        shutdown_timeout: float = 30.0,
        cron_interval: float = 1.0,
        cron_max_lateness: float = 300.0,
        run_cron: bool = True,
        worker_id: str | None = None,
    ) -> None:
        self.db = db
        self.bus = bus
        self.queues = queues or ["default"]
        self.concurrency = max(1, concurrency)
        self.lease = timedelta(seconds=lease_seconds)
        self.poll_interval = poll_interval
        self.reap_interval = reap_interval
        self.shutdown_timeout = shutdown_timeout
        self.cron_interval = cron_interval
        self.cron_max_lateness = timedelta(seconds=cron_max_lateness)
        self.run_cron = run_cron
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.waker = JobWaker()
        self.running: dict[int, tuple[asyncio.Task[None], JobContext]] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._pg_listener: Any = None
        self._outcomes: list[tuple[JobContext, dict[str, Any], str | None, Any]] = []
        self._flusher: asyncio.Task[None] | None = None

    # ---- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        if self.db.job_waker is None:
            self.db.job_waker = self.waker
        await self._listen_postgres()
        self._background = [
            asyncio.create_task(self._claim_loop(), name="jobs-claim"),
            asyncio.create_task(self._reap_loop(), name="jobs-reap"),
        ]
        if self.run_cron:
            self._background.append(asyncio.create_task(self._cron_loop(), name="jobs-cron"))
        log.info(
            "worker_started", worker_id=self.id, queues=self.queues, concurrency=self.concurrency
        )

    async def stop(self) -> None:
        """Stop claiming; let running jobs finish within the timeout; hand back the rest."""
        self._stopping.set()
        self.waker.notify()
        self._slot_freed.set()
        # The loops notice _stopping at their next turn; cancelling one in the middle of a query
        # could leave a SQLite connection holding the write lock.
        _, late = await asyncio.wait(self._background, timeout=10)
        for task in late:
            task.cancel()
        for task in self._background:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.running:
            tasks = [task for task, _ in self.running.values()]
            _, pending = await asyncio.wait(tasks, timeout=self.shutdown_timeout)
            if pending:
                for _task, ctx in list(self.running.values()):
                    self._interrupt(ctx, "shutdown")
                await asyncio.wait(pending, timeout=10)
        if self._pg_listener is not None:
            with contextlib.suppress(Exception):
                await self._pg_listener.close()
        if self.db.job_waker is self.waker:
            self.db.job_waker = None
        log.info("worker_stopped", worker_id=self.id)

    async def run_until(self, stop: asyncio.Event) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()

    async def _listen_postgres(self) -> None:
        if self.db.dialect != "postgresql":
            return
        import asyncpg

        dsn = self.db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        try:
            self._pg_listener = await asyncpg.connect(dsn)
            await self._pg_listener.add_listener(
                service.NOTIFY_CHANNEL, lambda *_args: self.waker.notify()
            )
        except Exception as exc:  # polling still works without NOTIFY (e.g. behind PgBouncer)
            log.warning("notify_unavailable", error=type(exc).__name__)
            self._pg_listener = None

    # ---- claiming -------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[ClaimedJob]:
        now = now_utc()
        candidates = (
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED, Job.run_at <= now, Job.queue.in_(self.queues))
            .order_by(Job.priority.desc(), Job.run_at, Job.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        statement = (
            update(Job)
            .where(Job.id.in_(candidates.scalar_subquery()), Job.status == JobStatus.QUEUED)
            .values(
                status=JobStatus.RUNNING,
                attempts=Job.attempts + 1,
                worker_id=self.id,
                lease_expires_at=now + self.lease,
                started_at=func.coalesce(Job.started_at, now),
                updated_at=now,
            )
            .returning(
                Job.id,
                Job.kind,
                Job.queue,
                Job.payload,
                Job.attempts,
                Job.max_attempts,
                Job.timeout_seconds,
                Job.owner_user_id,
                Job.progress,
            )
            .execution_options(synchronize_session=False)
        )
        async with self.db.transaction() as session:
            rows = (await session.execute(statement)).all()
        claimed = [ClaimedJob(*row) for row in rows]
        for job in claimed:
            await self._announce(job, "running", progress=job.progress, attempt=job.attempt)
        return claimed

    async def _announce(self, job: ClaimedJob, status: str, **data: Any) -> None:
        await events.publish(
            self.bus,
            job.owner_user_id,
            events.message("task.status", job.id, job.kind, status=status, **data),
        )

    async def _claim_loop(self) -> None:
        while not self._stopping.is_set():
            free = self.concurrency - len(self.running)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self.waker.event.clear()
            try:
                jobs = await self.claim(free)
            except Exception as exc:  # the database may be briefly unavailable: back off
                log.warning("claim_failed", error=type(exc).__name__)
                await self._pause(self.poll_interval)
                continue
            for job in jobs:
                self._spawn(job)
            if not jobs:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.waker.event.wait(), self.poll_interval)

    def _spawn(self, job: ClaimedJob) -> None:
        ctx = JobContext(self, job)
        task = asyncio.create_task(self._execute(ctx), name=f"job-{job.id}")
        self.running[job.id] = (task, ctx)

        def done(_task: asyncio.Task[None]) -> None:
            self.running.pop(job.id, None)
            self._slot_freed.set()

        task.add_done_callback(done)

    # ---- running one job ------------------------------------------------------------------

    def _interrupt(self, ctx: JobContext, reason: str) -> None:
        if ctx.interrupt_reason is None:
            ctx.interrupt_reason = reason
        handler_task = getattr(ctx, "handler_task", None)
        if handler_task is not None and not handler_task.done():
            handler_task.cancel()

    async def _execute(self, ctx: JobContext) -> None:
        job = ctx.job
        spec = registry.get(job.kind)
        if spec is None:
            await self._finish(ctx, self._failed(f"no handler registered for kind {job.kind!r}"))
            return
        handler_task: asyncio.Task[Any] = asyncio.create_task(spec.fn(ctx))
        ctx.handler_task = handler_task  # type: ignore[attr-defined]
        attempt_over = asyncio.Event()
        heartbeat = asyncio.create_task(self._heartbeat(ctx, attempt_over))
        try:
            done, _ = await asyncio.wait({handler_task}, timeout=job.timeout_seconds)
            if not done:
                self._interrupt(ctx, "timeout")
                with contextlib.suppress(BaseException):
                    await handler_task
        finally:
            attempt_over.set()
            with contextlib.suppress(BaseException):
                await heartbeat
        await self._conclude(ctx, handler_task)

    async def _conclude(self, ctx: JobContext, handler_task: asyncio.Task[Any]) -> None:
        job = ctx.job
        reason = ctx.interrupt_reason
        error = None if handler_task.cancelled() else handler_task.exception()
        if reason == "lease_lost" or isinstance(error, LeaseLost):
            log.warning("lease_lost", job_id=str(job.id), attempt=job.attempt)
            return
        if reason == "shutdown" and not (
            handler_task.done() and error is None and not handler_task.cancelled()
        ):
            await self._finish(
                ctx,
                {
                    "status": JobStatus.QUEUED,
                    "attempts": job.attempt - 1,
                    "worker_id": None,
                    "run_at": now_utc(),
                },
                note="handed back at worker shutdown",
            )
            return
        if reason == "cancel" or isinstance(error, JobCancelled):
            await self._finish(
                ctx, {"status": JobStatus.CANCELLED, "finished_at": now_utc()}, note="cancelled"
            )
            return
        if isinstance(error, JobPaused):
            # A pause is not a failed attempt: the attempt is given back, progress is kept.
            await self._finish(
                ctx,
                {
                    "status": JobStatus.PAUSED,
                    "attempts": job.attempt - 1,
                    "worker_id": None,
                    "pause_requested": False,
                },
                note="paused",
            )
            return
        if reason == "timeout":
            await self._finish(
                ctx,
                self._retry_or_fail(ctx, f"timed out after {job.timeout_seconds} s"),
                note="timed out",
            )
            return
        if error is None and not handler_task.cancelled():
            result = handler_task.result()
            await self._finish(
                ctx,
                {
                    "status": JobStatus.SUCCEEDED,
                    "finished_at": now_utc(),
                    "progress": 100,
                    "result": result if isinstance(result, dict) else None,
                },
            )
            return
        message = f"{type(error).__name__}: {error}"[:2000] if error else "interrupted"
        if isinstance(error, PermanentError):
            await self._finish(ctx, self._failed(message), note=message)
        else:
            await self._finish(ctx, self._retry_or_fail(ctx, message), note=message)

    @staticmethod
    def _failed(message: str) -> dict[str, Any]:
        return {"status": JobStatus.FAILED, "finished_at": now_utc(), "last_error": message}

    def _retry_or_fail(self, ctx: JobContext, message: str) -> dict[str, Any]:
        job = ctx.job
        if job.attempt >= job.max_attempts:
            return self._failed(message)
        delay = retry_delay(job.attempt, registry.get(job.kind))
        return {
            "status": JobStatus.QUEUED,
            "run_at": now_utc() + timedelta(seconds=delay),
            "worker_id": None,
            "last_error": message,
        }

    async def _finish(
        self, ctx: JobContext, values: dict[str, Any], note: str | None = None
    ) -> bool:
        """Record an attempt's outcome (fenced). Outcomes are written in batches: one
        transaction, hence one commit, for every outcome that is ready at the same time."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._outcomes.append((ctx, values, note, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_outcomes())
        return await future

    async def _flush_outcomes(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            try:
                written = await self._write_outcomes(batch)
            except Exception as exc:
                for *_rest, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (ctx, values, _note, future), ok in zip(batch, written, strict=True):
                if ok:
                    await self._announce(
                        ctx.job,
                        str(values["status"]),
                        progress=values.get("progress"),
                        error=values.get("last_error"),
                    )
                future.set_result(ok)

    async def _write_outcomes(
        self, batch: list[tuple[JobContext, dict[str, Any], str | None, Any]]
    ) -> list[bool]:
        written = []
        requeued: set[str] = set()
        async with self.db.transaction() as session:
            for ctx, values, note, _future in batch:
                job = ctx.job
                result = await session.execute(
                    update(Job)
                    .where(*ctx.fence())
                    .values(**values, lease_expires_at=None, updated_at=now_utc())
                    .execution_options(synchronize_session=False)
                )
                if not result.rowcount:  # type: ignore[attr-defined]
                    log.warning("lease_lost_at_finish", job_id=str(job.id), attempt=job.attempt)
                    written.append(False)
                    continue
                written.append(True)
                if note:
                    quiet = (JobStatus.PAUSED, JobStatus.CANCELLED, JobStatus.QUEUED)
                    session.add(
                        JobLog(
                            job_id=job.id,
                            attempt=job.attempt,
                            level="info" if values["status"] in quiet else "error",
                            message=note[:10_000],
                        )
                    )
                if values["status"] == JobStatus.QUEUED:
                    requeued.add(job.queue)
            for queue in requeued:
                await service.announce_in(session, queue)
        return written

    async def _heartbeat(self, ctx: JobContext, attempt_over: asyncio.Event) -> None:
        interval = self.lease.total_seconds() / 3
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(attempt_over.wait(), interval)
            if attempt_over.is_set():
                return
            try:
                async with self.db.transaction() as session:
                    row = (
                        await session.execute(
                            update(Job)
                            .where(*ctx.fence())
                            .values(lease_expires_at=now_utc() + self.lease)
                            .returning(Job.cancel_requested, Job.pause_requested)
                            .execution_options(synchronize_session=False)
                        )
                    ).first()
            except Exception as exc:  # keep trying until the lease really runs out
                log.warning("heartbeat_failed", job_id=str(ctx.job.id), error=type(exc).__name__)
                continue
            if row is None:
                self._interrupt(ctx, "lease_lost")
                return
            was_cancelled = ctx.cancel_requested
            ctx.set_flags(bool(row[0]), bool(row[1]))
            if ctx.cancel_requested and was_cancelled:
                # Asked at the previous beat and still running: stop it without cooperation.
                self._interrupt(ctx, "cancel")
                return

    # ---- housekeeping ---------------------------------------------------------------------

    async def _reap_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                async with self.db.transaction() as session:
                    await service.requeue_expired_leases(session, now_utc())
            except Exception as exc:
                log.warning("reap_failed", error=type(exc).__name__)
            await self._pause(self.reap_interval)

    async def _cron_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                await cron.tick(self.db, now_utc(), self.cron_max_lateness)
            except Exception as exc:
                log.warning("cron_failed", error=type(exc).__name__)
            await self._pause(self.cron_interval)

    async def _pause(self, seconds: float) -> None:
        """Sleep, waking early when the worker stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
