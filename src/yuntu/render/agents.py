"""Render agents as administrators and `yuntu serve` see them: creation with a token shown once,
listing, disable/enable (dispatch only), token rotation, revocation, the agent's own
registration, and the embedded local agent.

A revoked agent's token stops authenticating at once and its running frames go back to
waiting (not counted against them, like an expired lease). Issuing a new token to a revoked
agent brings it back; disable and enable never touch a revoked one.

The embedded agent is the row named `local` with no creator: administrators cannot create an
agent of that name, so the row is never confused with theirs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.admin import audit
from yuntu.kit.db import database_of
from yuntu.kit.errors import AppError, E
from yuntu.kit.logging import get_logger
from yuntu.models.render import AgentStatus, FrameTask, RenderAgent
from yuntu.render import progress
from yuntu.render.agent_auth import generate_token
from yuntu.render.frame_states import move_frames
from yuntu.render.states import FrameStatus as F

log = get_logger("yuntu.render.agents")

LOCAL_NAME = "local"
MAX_SLOTS = 64
MAX_RENDERERS = 32
# "blender", or "maya/arnold" for one renderer of a program (see scheduling._runs)
_RENDERER = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}(/[a-z0-9][a-z0-9_.-]{0,31})?")


def normalize_renderers(values: Iterable[str]) -> list[str]:
    """Lower-cased, stripped, deduplicated in order; ValueError for a malformed name."""
    names: list[str] = []
    for value in values:
        name = value.strip().lower()
        if not _RENDERER.fullmatch(name):
            raise ValueError(
                f"invalid renderer name {value[:80]!r}: a program (blender) or program/renderer "
                "(maya/arnold), each a letter or digit then up to 31 of a-z, 0-9, '_', '.', '-'"
            )
        if name not in names:
            names.append(name)
    if len(names) > MAX_RENDERERS:
        raise ValueError(f"at most {MAX_RENDERERS} renderers")
    return names


def is_online(agent: RenderAgent, lease_seconds: int, now: datetime | None = None) -> bool:
    """Heard from within one lease: an agent silent longer has lost its frames anyway."""
    if agent.status == AgentStatus.REVOKED or agent.last_heartbeat_at is None:
        return False
    now = now or datetime.now(UTC)
    return now - agent.last_heartbeat_at <= timedelta(seconds=lease_seconds)


# -- administrators ----------------------------------------------------------------------------
async def create(
    session: AsyncSession, *, name: str, actor_id: int, ip: str | None
) -> tuple[RenderAgent, str]:
    """(agent, token): the token exists only in this return value."""
    if name.casefold() == LOCAL_NAME:
        raise AppError(E.NAME_CONFLICT, message="the name 'local' is the embedded agent's")
    token, digest, prefix = generate_token()
    agent = RenderAgent(
        name=name,
        token_hash=digest,
        token_prefix=prefix,
        status=AgentStatus.ACTIVE,
        renderers=[],
        slots=1,
        created_by=actor_id,
    )
    session.add(agent)
    await session.flush()
    await _audit(session, agent, "create", actor_id, ip, after={"name": name, "prefix": prefix})
    return agent, token


def list_statement(status: AgentStatus | None = None) -> Select[Any]:
    statement = select(RenderAgent).order_by(RenderAgent.created_at, RenderAgent.id)
    if status is not None:
        statement = statement.where(RenderAgent.status == str(status))
    return statement


async def get(session: AsyncSession, agent_id: int) -> RenderAgent:
    agent = await session.get(RenderAgent, agent_id, populate_existing=True)
    if agent is None:
        raise AppError(E.NOT_FOUND)
    return agent


async def running_frames(
    session: AsyncSession, agent_ids: Sequence[int]
) -> dict[int, list[FrameTask]]:
    """The frames each agent runs now, in claim order."""
    result: dict[int, list[FrameTask]] = {agent_id: [] for agent_id in agent_ids}
    if not agent_ids:
        return result
    rows = await session.scalars(
        select(FrameTask)
        .where(FrameTask.agent_id.in_(list(agent_ids)), FrameTask.status == str(F.RUNNING))
        .order_by(FrameTask.started_at, FrameTask.id)
    )
    for frame in rows:
        result[frame.agent_id].append(frame)  # type: ignore[index]
    return result


async def set_dispatch(
    session: AsyncSession, agent_id: int, *, enabled: bool, actor_id: int, ip: str | None
) -> RenderAgent:
    """Enable or disable dispatch to an agent. Idempotent (a no-op is not audited); 409 for a
    revoked agent (issue it a new token instead)."""
    agent = await _locked(session, agent_id)
    target = AgentStatus.ACTIVE if enabled else AgentStatus.DISABLED
    if agent.status == target:
        return agent
    if agent.status == AgentStatus.REVOKED:
        raise AppError(
            E.INVALID_STATE, message="the agent is revoked: issue it a new token to restore it"
        )
    before = agent.status
    agent.status = target
    await session.flush()
    await _audit(
        session,
        agent,
        "enable" if enabled else "disable",
        actor_id,
        ip,
        before={"status": str(before)},
        after={"status": str(target)},
    )
    return agent


async def issue_token(
    session: AsyncSession, agent_id: int, *, actor_id: int, ip: str | None
) -> tuple[RenderAgent, str]:
    """A new token; the old one stops working. A revoked agent becomes active again."""
    agent = await _locked(session, agent_id)
    before = {"prefix": agent.token_prefix, "status": str(agent.status)}
    token = _replace_token(agent)
    await session.flush()
    after = {"prefix": agent.token_prefix, "status": str(agent.status)}
    await _audit(session, agent, "token", actor_id, ip, before=before, after=after)
    return agent, token


async def revoke(
    session: AsyncSession, agent_id: int, *, actor_id: int, ip: str | None
) -> RenderAgent:
    """The token stops working and the agent's running frames go back to waiting. Revoking a
    revoked agent only sends back frames it still held (none, normally) and is not audited
    again."""
    agent = await get(session, agent_id)
    # Frames (then their tasks) before the agent's row: the lock order of claim and finish,
    # which touch the agent last.
    requeued = await requeue_agent_frames(session, agent.id, "the agent was revoked")
    if agent.status == AgentStatus.REVOKED:
        return agent
    before = agent.status
    agent = await _locked(session, agent_id)
    agent.status = AgentStatus.REVOKED
    await session.flush()
    await _audit(
        session,
        agent,
        "revoke",
        actor_id,
        ip,
        before={"status": str(before)},
        after={"status": str(AgentStatus.REVOKED), "frames_requeued": requeued},
    )
    return agent


async def requeue_agent_frames(session: AsyncSession, agent_id: int, reason: str) -> int:
    """Send every frame `agent_id` runs back to waiting (not the frames' failure)."""
    picked: dict[int, list[int]] = {}
    rows = await session.execute(
        select(FrameTask.id, FrameTask.task_id).where(
            FrameTask.agent_id == agent_id, FrameTask.status == str(F.RUNNING)
        )
    )
    for frame_id, task_id in rows.all():
        picked.setdefault(task_id, []).append(frame_id)
    bus = database_of(session).bus
    total = 0
    for task_id in sorted(picked):  # tasks in id order: see frame_states' lock order
        moved = await move_frames(
            session,
            task_id,
            picked[task_id],
            F.RUNNING,
            F.WAITING,
            values={"last_error": reason},
            where=[FrameTask.agent_id == agent_id],
        )
        if moved.frame_ids:
            total += len(moved.frame_ids)
            await progress.frames_moved(session, task_id, moved, bus=bus)
    return total


# -- the agent itself --------------------------------------------------------------------------
async def register(
    session: AsyncSession,
    agent: RenderAgent,
    *,
    hostname: str | None,
    renderers: Sequence[str],
    slots: int,
    version: str | None,
    now: datetime | None = None,
) -> RenderAgent:
    """What the agent runs now; its status does not change. `renderers` must already be
    normalized (normalize_renderers)."""
    if not 1 <= slots <= MAX_SLOTS:
        raise AppError(
            E.VALIDATION_ERROR,
            details=[{"field": "body.slots", "message": f"1 to {MAX_SLOTS}"}],
        )
    now = now or datetime.now(UTC)
    await session.execute(
        update(RenderAgent)
        .where(RenderAgent.id == agent.id)
        .values(
            hostname=hostname,
            renderers=list(renderers),
            slots=slots,
            last_heartbeat_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    # No column holds the version yet: the log keeps it.
    log.info(
        "render_agent_registered",
        agent_id=str(agent.id),
        hostname=hostname,
        renderers=list(renderers),
        slots=slots,
        version=version,
    )
    return await get(session, agent.id)


async def ensure_local_agent(
    session: AsyncSession, renderers: Sequence[str], slots: int
) -> tuple[RenderAgent, str]:
    """The embedded agent of `yuntu serve`: created once, with a fresh token on every call
    (the previous process's token stops working). A revoked local agent comes back, like any
    agent given a new token; a disabled one stays disabled."""
    try:
        names = normalize_renderers(renderers)
    except ValueError as exc:
        raise AppError(E.VALIDATION_ERROR, message=str(exc)) from None
    slots = max(1, min(slots, MAX_SLOTS))
    agent = await session.scalar(
        select(RenderAgent)
        .where(RenderAgent.name == LOCAL_NAME, RenderAgent.created_by.is_(None))
        .order_by(RenderAgent.id)
        .limit(1)
    )
    if agent is None:
        token, digest, prefix = generate_token()
        agent = RenderAgent(
            name=LOCAL_NAME,
            token_hash=digest,
            token_prefix=prefix,
            status=AgentStatus.ACTIVE,
            renderers=names,
            slots=slots,
        )
        session.add(agent)
    else:
        token = _replace_token(agent)
        agent.renderers = names
        agent.slots = slots
    await session.flush()
    return agent, token


# -- helpers -----------------------------------------------------------------------------------
async def _locked(session: AsyncSession, agent_id: int) -> RenderAgent:
    agent = await session.get(RenderAgent, agent_id, with_for_update=True, populate_existing=True)
    if agent is None:
        raise AppError(E.NOT_FOUND)
    return agent


def _replace_token(agent: RenderAgent) -> str:
    token, digest, prefix = generate_token()
    agent.token_hash = digest
    agent.token_prefix = prefix
    if agent.status == AgentStatus.REVOKED:
        agent.status = AgentStatus.ACTIVE
    return token


async def _audit(
    session: AsyncSession,
    agent: RenderAgent,
    action: str,
    actor_id: int,
    ip: str | None,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    await audit.record(
        session,
        actor_user_id=actor_id,
        action=f"render_agent.{action}",
        target_type="render_agent",
        target_id=agent.id,
        ip=ip,
        before=before,
        after=after,
    )
