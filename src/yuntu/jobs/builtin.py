"""Jobs and schedules the engine itself needs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete

from yuntu.jobs.context import JobContext
from yuntu.jobs.cron import schedule
from yuntu.jobs.registry import handler
from yuntu.models.jobs import CronRun, Job, JobStatus

FINISHED_RETENTION_DAYS = 30


@handler("jobs.prune", timeout_seconds=600, max_attempts=3)
async def prune_finished_jobs(ctx: JobContext) -> dict[str, Any]:
    """Delete finished jobs (and their logs) and cron bookkeeping older than the retention."""
    days = int(ctx.job.payload.get("retention_days", FINISHED_RETENTION_DAYS))
    cutoff = datetime.now(UTC) - timedelta(days=days)
    async with ctx.session() as session:
        jobs = await session.execute(
            delete(Job).where(
                Job.status.in_((JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)),
                Job.finished_at < cutoff,
            )
        )
        runs = await session.execute(delete(CronRun).where(CronRun.slot < cutoff))
    deleted = {"jobs": jobs.rowcount, "cron_runs": runs.rowcount}  # type: ignore[attr-defined]
    await ctx.log("info", f"pruned {deleted['jobs']} jobs and {deleted['cron_runs']} cron runs")
    return deleted


schedule("jobs.prune", "17 3 * * *", "jobs.prune")
