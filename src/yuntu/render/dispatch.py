"""The agent-facing side of dispatch (docs/render-agents.md): claims with their assignments,
heartbeats, log lines and finishing, each followed by `progress` (billing and live events) in
the same transaction.

Every call of an attempt is fenced by (frame, agent, attempt): an attempt that no longer holds
its frame answers 409 INVALID_STATE and writes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import downloads
from yuntu.kit.db import Database, bulk_insert, database_of, on_commit
from yuntu.kit.ids import new_id
from yuntu.models.drive import Blob
from yuntu.models.render import AgentStatus, FrameTask, RenderAgent, RenderLog, RenderTask
from yuntu.render import billing, events, progress, scheduling
from yuntu.render.frame_states import Moved
from yuntu.render.scheduling import Finished, Report
from yuntu.settings import Settings

SWEEP_LIMIT = 100  # expired leases one claim sends back before claiming
MAX_LINE = 4000  # characters kept of one log line
MAX_LINES = 500  # log lines per call
MAX_ERROR = 4000
LEVELS = frozenset({"debug", "info", "warning", "error"})
_LEVEL_ALIASES = {"warn": "warning", "err": "error", "fatal": "error", "critical": "error"}
# C0 controls but tab (and newline in multi-line text), and DEL: PostgreSQL refuses NUL, and
# terminal escapes garble a log viewer.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_CONTROL_TEXT = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_LOGS = cast(Table, RenderLog.__table__)


def settings_of(db: Database) -> Settings:
    if db.settings is None:
        return Settings(_env_file=None)  # type: ignore[call-arg]
    return cast(Settings, db.settings)


def clean_line(text: str, limit: int = MAX_LINE, *, multiline: bool = False) -> str:
    """Storable text: no control characters, no lone surrogates, at most `limit` chars."""
    text = (_CONTROL_TEXT if multiline else _CONTROL).sub(" ", text[:limit])
    return text.encode("utf-8", "replace").decode("utf-8")


def _level(value: str) -> str:
    level = value.strip().lower()
    level = _LEVEL_ALIASES.get(level, level)
    return level if level in LEVELS else "info"


# -- lease expiry ------------------------------------------------------------------------------
async def requeue_expired(
    session: AsyncSession, *, now: datetime | None = None, limit: int = SWEEP_LIMIT
) -> int:
    """Send running frames whose lease expired back to waiting (scheduling.requeue_expired),
    with `progress.frames_moved` for each task."""
    bus = database_of(session).bus

    async def moved(task_id: int, what: Moved) -> None:
        await progress.frames_moved(session, task_id, what, bus=bus)

    return await scheduling.requeue_expired(session, now, limit=limit, on_moved=moved)


# -- claims ------------------------------------------------------------------------------------
async def claim_for_agent(
    db: Database,
    agent_id: int,
    *,
    limit: int,
    renderers: Sequence[str] | None = None,
    base_url: str = "",
    now: datetime | None = None,
    wait: float = 0,
) -> list[dict[str, Any]]:
    """Up to min(`limit`, the agent's slots) assignments, each with a signed scene link.

    A claim that finds fewer frames than it asked for first sends expired leases back to
    waiting and tries again: a busy farm does not pay for the sweep on every claim, and an
    agent that waits for work gets a silent agent's frames at once. The sweep and the claims
    are separate transactions: in one, the two passes would each lock tasks in id order but
    together not, and two agents claiming at once could deadlock on PostgreSQL."""
    deadline = time.monotonic() + wait
    # listening before the first look: work announced in between is not missed
    signal = db.bus.subscribe(events.WORK_CHANNEL) if wait > 0 and db.bus is not None else None
    try:
        while True:
            got = await _claim_or_sweep(db, agent_id, limit, renderers, base_url, now)
            left = deadline - time.monotonic()
            if got is None or got or signal is None or left <= 0:
                return got or []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signal.get(), left)
            now = None  # the next look is at its own time
    finally:
        if signal is not None:
            signal.close()


async def _claim_or_sweep(
    db: Database,
    agent_id: int,
    limit: int,
    renderers: Sequence[str] | None,
    base_url: str,
    now: datetime | None,
) -> list[dict[str, Any]] | None:
    now = now or datetime.now(UTC)
    got = await _claim(db, agent_id, limit, renderers, base_url, now)
    if got is None or len(got) >= limit:
        return got
    async with db.transaction() as session:
        swept = await requeue_expired(session, now=now)
    if swept:
        got += await _claim(db, agent_id, limit - len(got), renderers, base_url, now) or []
    return got


async def _claim(
    db: Database,
    agent_id: int,
    limit: int,
    renderers: Sequence[str] | None,
    base_url: str,
    now: datetime,
) -> list[dict[str, Any]] | None:
    """None when the agent may not claim (disabled, revoked, gone)."""
    settings = settings_of(db)
    async with db.transaction() as session:
        # read again: the agent may have been disabled or revoked since it authenticated
        agent = await session.get(RenderAgent, agent_id, populate_existing=True)
        if agent is None or agent.status != AgentStatus.ACTIVE:
            return None
        bus = db.bus

        async def moved(task_id: int, what: Moved) -> None:
            await progress.frames_moved(session, task_id, what, bus=bus)

        claimed = await scheduling.claim(
            session,
            agent,
            renderers,
            limit=max(0, min(limit, agent.slots)),
            lease_seconds=settings.render_lease_seconds,
            now=now,
            on_moved=moved,
        )
        if not claimed:
            return []
        infos = await _task_infos(session, {frame.task_id for frame in claimed})
    ttl = downloads.link_ttl(db)
    scenes: dict[int, dict[str, Any]] = {}
    for task_id, info in infos.items():
        link = await downloads.sign_blob(
            db, info.blob, info.scene_name, None, ttl=ttl, base_url=base_url
        )
        scenes[task_id] = {
            "url": link.url,
            "name": info.scene_name,
            "size": info.blob.size,
            "sha256": info.blob.sha256,
        }
    return [_assignment(frame, infos[frame.task_id], scenes[frame.task_id]) for frame in claimed]


@dataclass(frozen=True, slots=True)
class _TaskInfo:
    """What an assignment says about its task: none of it changes after creation."""

    name: str
    software: str
    software_version: str | None
    renderer: str
    width: int
    height: int
    camera: str | None
    output_format: str
    scene_name: str
    blob: Blob  # a transient copy: sign_blob reads id and storage_key


_TASK_INFOS: OrderedDict[int, _TaskInfo] = OrderedDict()
_TASK_INFOS_MAX = 4096


async def _task_infos(session: AsyncSession, task_ids: set[int]) -> dict[int, _TaskInfo]:
    """Each task's assignment fields, read once per process: a busy claim path otherwise reads
    the task and its scene blob for every frame."""
    found = {task_id: _TASK_INFOS[task_id] for task_id in task_ids if task_id in _TASK_INFOS}
    missing = task_ids - found.keys()
    if missing:
        rows = await session.execute(
            select(RenderTask, Blob)
            .join(Blob, Blob.id == RenderTask.scene_blob_id)
            .where(RenderTask.id.in_(missing))
        )
        for task, blob in rows.all():
            info = _TaskInfo(
                name=task.name,
                software=task.software,
                software_version=task.software_version,
                renderer=task.renderer,
                width=task.resolution_x,
                height=task.resolution_y,
                camera=task.camera,
                output_format=task.output_format,
                scene_name=task.scene_name,
                blob=Blob(
                    id=blob.id,
                    sha256=blob.sha256,
                    md5=blob.md5,
                    size=blob.size,
                    storage_key=blob.storage_key,
                ),
            )
            found[task.id] = _TASK_INFOS[task.id] = info
            if len(_TASK_INFOS) > _TASK_INFOS_MAX:
                _TASK_INFOS.popitem(last=False)
    return found


def _assignment(frame: FrameTask, task: _TaskInfo, scene: dict[str, Any]) -> dict[str, Any]:
    return {
        "frame_id": frame.id,
        "attempt": frame.attempts,
        "task_id": frame.task_id,
        "task_name": task.name,
        "software": task.software,
        "software_version": task.software_version,
        "renderer": task.renderer,
        "frames": list(frame.frames),
        "width": task.width,
        "height": task.height,
        "camera": task.camera,
        "output_format": task.output_format,
        "scene": scene,
        "lease_expires_at": frame.lease_expires_at,
    }


# -- attempts ----------------------------------------------------------------------------------
async def heartbeat(
    session: AsyncSession,
    agent: RenderAgent,
    running: Mapping[int, int],
    *,
    now: datetime | None = None,
) -> scheduling.Heartbeat:
    """Extend the leases of the attempts (frame id -> attempt) the agent still holds; the
    others are answered `stop`."""
    db = database_of(session)
    lease = settings_of(db).render_lease_seconds
    return await scheduling.heartbeat(session, agent.id, running, lease, now=now)


async def record_log(
    session: AsyncSession,
    agent: RenderAgent,
    frame_id: int,
    attempt: int,
    lines: Sequence[tuple[str, str]],
    *,
    now: datetime | None = None,
) -> bool:
    """Store (level, line) pairs of the attempt and publish them (task.log) once committed.
    Lines are cleaned and cut to MAX_LINE characters; at most MAX_LINES are kept. Returns
    whether the agent should stop the frame (never, today: a lost attempt answers 409)."""
    frame, task = await scheduling.held_frame(session, frame_id, agent.id, attempt)
    now = now or datetime.now(UTC)
    kept = [(_level(level), clean_line(line)) for level, line in lines[:MAX_LINES]]
    if not kept:
        return False
    await bulk_insert(
        session,
        _LOGS,
        [
            {
                "id": new_id(),
                "task_id": task.id,
                "frame_id": frame.id,
                "agent_id": agent.id,
                "attempt": attempt,
                "level": level,
                "line": line,
                "created_at": now,
            }
            for level, line in kept
        ],
    )
    bus = database_of(session).bus
    payload = [{"level": level, "line": line} for level, line in kept]
    user_id, task_id = task.user_id, task.id
    on_commit(session, lambda: events.log(bus, user_id, task_id, frame_id, payload))
    return False


async def finish_frame(
    session: AsyncSession,
    agent: RenderAgent,
    frame_id: int,
    attempt: int,
    report: Report,
    *,
    now: datetime | None = None,
) -> tuple[Finished, int]:
    """End the attempt (scheduling.finish: retries, blocklist, the cost at the rate card),
    then bill and announce it (progress.frame_finished). Returns the outcome and the fen it
    cost."""
    if report.error is not None:
        report = replace(report, error=clean_line(report.error, MAX_ERROR, multiline=True))
    db = database_of(session)
    finished = await scheduling.finish(
        session,
        frame_id,
        agent.id,
        attempt,
        report,
        now=now,
        price=billing.price(settings_of(db)),
    )
    cost = await progress.frame_finished(session, finished.task_id, frame_id, finished, bus=db.bus)
    return finished, cost
