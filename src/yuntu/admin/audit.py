"""Recording administrative actions in the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import like_literal
from yuntu.models.audit import AuditEntry


async def record(
    session: AsyncSession,
    *,
    actor_user_id: int | None,
    action: str,
    target_type: str,
    target_id: object,
    ip: str | None,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    actor_api_key_id: int | None = None,
) -> None:
    session.add(
        AuditEntry(
            actor_user_id=actor_user_id,
            actor_api_key_id=actor_api_key_id,
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            before=before,
            after=after,
            ip=ip,
        )
    )
    await session.flush()


def list_statement(
    *,
    action: str | None,
    actor_user_id: int | None,
    actor_api_key_id: int | None,
    target_type: str | None,
    target_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> Select[tuple[AuditEntry]]:
    """Newest first. `action` ending in `.` matches every action of that family (`package.`)."""
    stmt = select(AuditEntry)
    if action:
        if action.endswith("."):
            stmt = stmt.where(AuditEntry.action.like(like_literal(action) + "%", escape="\\"))
        else:
            stmt = stmt.where(AuditEntry.action == action)
    if actor_user_id is not None:
        stmt = stmt.where(AuditEntry.actor_user_id == actor_user_id)
    if actor_api_key_id is not None:
        stmt = stmt.where(AuditEntry.actor_api_key_id == actor_api_key_id)
    if target_type:
        stmt = stmt.where(AuditEntry.target_type == target_type)
    if target_id:
        stmt = stmt.where(AuditEntry.target_id == target_id)
    if since:
        stmt = stmt.where(AuditEntry.created_at >= since)
    if until:
        stmt = stmt.where(AuditEntry.created_at < until)
    return stmt.order_by(AuditEntry.created_at.desc(), AuditEntry.id.desc())
