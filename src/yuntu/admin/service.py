"""Admin operations on users. Every change is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.admin import audit
from yuntu.identity import apikeys
from yuntu.identity.service import now_utc, revoke_user_sessions
from yuntu.kit.db import like_literal
from yuntu.kit.errors import AppError, E
from yuntu.models.identity import ApiKey, User, UserStatus


def _contains(value: str) -> str:
    """A LIKE pattern matching `value` anywhere, with the wildcards in it taken literally."""
    return "%" + like_literal(value) + "%"


def search_statement(q: str | None, status: str | None, role: str | None) -> Select[tuple[User]]:
    stmt = select(User)
    if q:
        # username_key and email_key hold case-folded keys; the nickname is matched
        # case-insensitively with lower() on both sides (PostgreSQL's LIKE is case-sensitive).
        folded, lowered = _contains(q.casefold()), _contains(q.lower())
        stmt = stmt.where(
            or_(
                User.username_key.like(folded, escape="\\"),
                User.email_key.like(folded, escape="\\"),
                User.phone.like(_contains(q), escape="\\"),
                func.lower(User.nickname).like(lowered, escape="\\"),
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


async def set_grants(
    session: AsyncSession, actor: User, user_id: int, grants: list[str], ip: str
) -> User:
    """The scopes a non-admin user holds (e.g. `packages:admin` for a release manager)."""
    user = await get_user(session, user_id)
    before = list(user.grants or [])
    user.grants = sorted(set(grants))
    user.updated_at = now_utc()
    await audit.record(
        session,
        actor_user_id=actor.id,
        action="user.grants",
        target_type="user",
        target_id=user.id,
        ip=ip,
        before={"grants": before},
        after={"grants": user.grants},
    )
    return user


async def create_api_key(
    session: AsyncSession,
    actor: User,
    *,
    name: str,
    scopes: list[str],
    expires_at: datetime | None,
    ip: str,
) -> tuple[ApiKey, str]:
    """(key, secret). The secret exists only in this return value; the audit log gets the
    prefix."""
    key, secret = await apikeys.create(
        session, name=name, scopes=scopes, created_by=actor.id, expires_at=expires_at
    )
    await audit.record(
        session,
        actor_user_id=actor.id,
        action="api_key.create",
        target_type="api_key",
        target_id=key.id,
        ip=ip,
        after={"name": key.name, "scopes": key.scopes, "prefix": key.prefix},
    )
    return key, secret


async def revoke_api_key(session: AsyncSession, actor: User, key_id: int, ip: str) -> ApiKey:
    """Idempotent: revoking a revoked key changes nothing and is not audited again."""
    key = await apikeys.get(session, key_id)
    if key.revoked_at is not None:
        return key
    await apikeys.revoke(session, key)
    await audit.record(
        session,
        actor_user_id=actor.id,
        action="api_key.revoke",
        target_type="api_key",
        target_id=key.id,
        ip=ip,
        before={"revoked_at": None},
        after={"revoked_at": key.revoked_at.isoformat() if key.revoked_at else None},
    )
    return key
