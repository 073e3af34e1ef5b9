"""Scheduled drive maintenance: purge trash older than `trash_retention_days` (daily) and
delete blobs that stayed unreferenced longer than `blob_gc_grace_hours` (hourly).

Both work in small transactions (one batch each) so a long run never holds locks for long and
a crash loses at most one batch; both are idempotent, as the job engine's at-least-once
delivery requires."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from yuntu.drive import trash
from yuntu.drive.service import settings_of
from yuntu.jobs.context import JobContext
from yuntu.jobs.cron import schedule
from yuntu.jobs.registry import handler
from yuntu.storage import blobs

TRASH_BATCH = 100
GC_BATCH = 500


@handler("drive.purge_trash", timeout_seconds=3600, max_attempts=3)
async def purge_trash(ctx: JobContext) -> dict[str, Any]:
    """Purge trash roots trashed before now - retention (payload `retention_days` overrides
    the setting). Folders an unfinished upload still targets are left for a later run."""
    total = trash.Purged()
    cutoff: datetime | None = None
    while True:
        async with ctx.session() as session:
            if cutoff is None:
                days = ctx.job.payload.get("retention_days")
                if days is None:
                    days = settings_of(session).trash_retention_days
                cutoff = datetime.now(UTC) - timedelta(days=float(days))
            batch = await trash.purge_roots(
                session,
                None,
                cutoff,
                None,
                limit=TRASH_BATCH,
                exclude=set(total.skipped_ids),
            )
        total.add(batch)
        if batch.files == 0 and batch.folders == 0 and batch.skipped == 0:
            break
        await ctx.checkpoint()
    result = {"files": total.files, "folders": total.folders, "skipped": total.skipped}
    await ctx.log(
        "info",
        f"purged {total.files} files and {total.folders} folders from the trash"
        + (f"; {total.skipped} kept (uploads in progress)" if total.skipped else ""),
    )
    return result


@handler("drive.gc_blobs", timeout_seconds=3600, max_attempts=3)
async def gc_blobs(ctx: JobContext) -> dict[str, Any]:
    """Delete blobs unreferenced for longer than the grace period, a batch per transaction."""
    deleted = 0
    while True:
        async with ctx.session() as session:
            hours = ctx.job.payload.get("grace_hours")
            if hours is None:
                hours = settings_of(session).blob_gc_grace_hours
            count = await blobs.collect_garbage(
                session, timedelta(hours=float(hours)), limit=GC_BATCH
            )
        deleted += count
        if count < GC_BATCH:
            break
        await ctx.checkpoint()
    await ctx.log("info", f"deleted {deleted} unreferenced blobs")
    return {"deleted": deleted}


schedule("drive.purge_trash", "23 4 * * *", "drive.purge_trash")
schedule("drive.gc_blobs", "41 * * * *", "drive.gc_blobs")
