"""Admin operations on users. Every change is audited."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.admin import audit
from yuntu.identity.service import now_utc, revoke_user_sessions
from yuntu.kit.errors import AppError, E
from yuntu.models.identity import User, UserStatus


def search_statement(q: str | None, status: str | None, role: str | None) -> Select[tuple[User]]:
    stmt = select(User)
    if q:
        pattern = (
            "%" + q.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        )
        stmt = stmt.where(
            or_(
                User.username_key.like(pattern, escape="\\"),
                User.email_key.like(pattern, escape="\\"),
                User.phone.like(pattern, escape="\\"),
                User.nickname.like(pattern, escape="\\"),
            )
        )
    if status:
        stmt = stmt.where(User.status == status)
    if role:
        stmt = stmt.where(User.role == role)
    return stmt.order_by(User.created_at.desc(), User.id.desc())


async def get_user(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise AppError(E.NOT_FOUND)
    return user


async def set_status(
    session: AsyncSession,
    actor: User,
    user_id: int,
    status: Literal["active", "suspended"],
    ip: str,
    reason: str | None,
) -> User:
    user = await get_user(session, user_id)
    if user.id == actor.id:
        raise AppError(E.CONFLICT, message="administrators cannot change their own status")
    if user.status == UserStatus.DELETED:
        raise AppError(E.CONFLICT, message="deleted accounts cannot change status")
    before = user.status
    user.status = status
    user.updated_at = now_utc()
    if status == UserStatus.SUSPENDED:
        await revoke_user_sessions(session, user.id, "suspended")
    await audit.record(
        session,
        actor_user_id=actor.id,
        action=f"user.{status}",
        target_type="user",
        target_id=user.id,
        ip=ip,
        before={"status": before},
        after={"status": status, "reason": reason},
    )
    return user


async def set_role(session: AsyncSession, actor: User, user_id: int, role: str, ip: str) -> User:
    user = await get_user(session, user_id)
    if user.id == actor.id:
        raise AppError(E.CONFLICT, message="administrators cannot change their own role")
    before = user.role
    user.role = role
    user.updated_at = now_utc()
    await audit.record(
        session,
        actor_user_id=actor.id,
        action="user.role",
        target_type="user",
        target_id=user.id,
        ip=ip,
        before={"role": before},
        after={"role": role},
    )
    return user
