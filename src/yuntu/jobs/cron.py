"""Scheduled jobs: a cron registry that every worker evaluates. Each due slot is inserted under
a unique (schedule, slot) key, so any number of workers create exactly one run per slot."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.jobs import service
from yuntu.kit.db import insert_ignoring_conflicts
from yuntu.kit.errors import AppError, E
from yuntu.kit.logging import get_logger
from yuntu.models.jobs import CronRun, Job

log = get_logger("yuntu.cron")


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    cron: str
    kind: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None

    def latest_slot(self, now: datetime) -> datetime:
        """The most recent slot at or before `now` (UTC)."""
        return croniter(self.cron, now + timedelta(microseconds=1)).get_prev(datetime)


_SCHEDULES: dict[str, Schedule] = {}
_skipped_logged: set[tuple[str, datetime]] = set()


def schedule(
    name: str, cron: str, kind: str, payload: dict[str, Any] | None = None, queue: str | None = None
) -> Schedule:
    if not croniter.is_valid(cron):
        raise ValueError(f"invalid cron expression for {name}: {cron!r}")
    entry = Schedule(name=name, cron=cron, kind=kind, payload=payload or {}, queue=queue)
    _SCHEDULES[name] = entry
    return entry


def schedules() -> dict[str, Schedule]:
    return dict(_SCHEDULES)


def unregister(name: str) -> None:
    _SCHEDULES.pop(name, None)


async def claim_slot(session: AsyncSession, entry: Schedule, slot: datetime) -> Job | None:
    """Insert the (schedule, slot) row and enqueue its job, in one transaction. Returns None
    when another worker already took this slot."""
    values = {"schedule": entry.name, "slot": slot}
    statement = insert_ignoring_conflicts(session.bind.dialect.name, CronRun).values(**values)
    result = await session.execute(statement.returning(CronRun.id))
    run_id = result.scalar()
    if run_id is None:
        return None
    job = await service.enqueue(
        session,
        entry.kind,
        {**entry.payload, "slot": slot.isoformat()},
        queue=entry.queue,
        unique_key=f"cron:{entry.name}:{slot.isoformat()}",
    )
    run = await session.get(CronRun, run_id)
    if run is not None:
        run.job_id = job.id
    return job


async def tick(db: Any, now: datetime, max_lateness: timedelta) -> list[Job]:
    """Evaluate every schedule once: claim its latest slot unless that slot is too old."""
    created = []
    for entry in schedules().values():
        slot = entry.latest_slot(now)
        if now - slot > max_lateness:
            # Missed while no worker ran: skipped (logged once per process); the next runs.
            if (entry.name, slot) not in _skipped_logged:
                _skipped_logged.add((entry.name, slot))
                log.warning(
                    "cron_slot_skipped",
                    schedule=entry.name,
                    slot=slot.isoformat(),
                    late_seconds=int((now - slot).total_seconds()),
                )
            continue
        async with db.transaction() as session:
            job = await claim_slot(session, entry, slot)
        if job is not None:
            created.append(job)
            log.info("cron_slot", schedule=entry.name, slot=slot.isoformat(), job_id=str(job.id))
    return created


async def run_now(session: AsyncSession, name: str, now: datetime) -> Job:
    """`yuntu jobs run-schedule NAME`: one run outside the schedule."""
    entry = _SCHEDULES.get(name)
    if entry is None:
        raise AppError(E.NOT_FOUND, message=f"no schedule named {name}")
    return await service.enqueue(
        session,
        entry.kind,
        {**entry.payload, "manual": True},
        queue=entry.queue,
        unique_key=f"cron:{entry.name}:manual:{now.isoformat()}",
    )
