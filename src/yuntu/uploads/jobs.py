"""Scheduled upload housekeeping: abandoned multipart uploads expire after the idle limit."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from yuntu.drive.service import settings_of
from yuntu.jobs.context import JobContext
from yuntu.jobs.cron import schedule
from yuntu.jobs.registry import handler
from yuntu.uploads.transfer import expire_idle_uploads


@handler("uploads.expire_idle", timeout_seconds=600, max_attempts=3)
async def expire_idle(ctx: JobContext) -> dict[str, Any]:
    async with ctx.session() as session:
        hours = settings_of(session).upload_idle_expiry_hours
    total = 0
    while True:
        expired = await expire_idle_uploads(ctx.db, timedelta(hours=hours))
        total += expired
        if expired == 0:
            break
        await ctx.checkpoint()
    await ctx.log("info", f"expired {total} idle multipart uploads")
    return {"expired": total}


schedule("uploads.expire_idle", "*/15 * * * *", "uploads.expire_idle")
