"""Who may do what on a drive. Every lookup goes through here: a drive the caller cannot see
answers 404 exactly like a missing one; a drive they can see but not change answers 403."""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.errors import AppError, E
from yuntu.models.drive import Drive, TeamMember, TeamRole


class Level(IntEnum):
    READ = 1  # list, download
    WRITE = 2  # upload, rename, move, delete
    MANAGE = 3  # drive settings, quota
    OWN = 4  # delete the drive


ROLE_LEVEL = {
    TeamRole.VIEWER: Level.READ,
    TeamRole.MEMBER: Level.WRITE,
    TeamRole.ADMIN: Level.MANAGE,
    TeamRole.OWNER: Level.OWN,
}


async def team_role(session: AsyncSession, team_id: int, user_id: int) -> str | None:
    return await session.scalar(
        select(TeamMember.role).where(TeamMember.team_id == team_id, TeamMember.user_id == user_id)
    )


async def level_on(session: AsyncSession, drive: Drive, user_id: int) -> Level | None:
    if drive.owner_user_id is not None:
        return Level.OWN if drive.owner_user_id == user_id else None
    assert drive.team_id is not None
    role = await team_role(session, drive.team_id, user_id)
    return ROLE_LEVEL.get(TeamRole(role)) if role else None


async def get_drive(
    session: AsyncSession,
    drive_id: int,
    user_id: int,
    need: Level = Level.READ,
    *,
    for_update: bool = False,
) -> Drive:
    statement = select(Drive).where(Drive.id == drive_id)
    if for_update:
        statement = statement.with_for_update()
    drive = await session.scalar(statement)
    if drive is None:
        raise AppError(E.NOT_FOUND)
    level = await level_on(session, drive, user_id)
    if level is None:
        raise AppError(E.NOT_FOUND)
    if level < need:
        raise AppError(E.FORBIDDEN)
    return drive


def visible_drives_clause(user_id: int):  # type: ignore[no-untyped-def]
    """WHERE clause: drives the user owns or whose team they belong to."""
    teams = select(TeamMember.team_id).where(TeamMember.user_id == user_id)
    return or_(Drive.owner_user_id == user_id, Drive.team_id.in_(teams))
