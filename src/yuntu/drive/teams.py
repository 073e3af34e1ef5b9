"""Teams and their members. A team is invisible to non-members (404); members act by role:
owner > admin > member > viewer. Only owners make or unmake owners, and a team never loses its
last owner. Membership changes lock the team row so two concurrent demotions cannot both pass
the last-owner check."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.identity.service import find_by_identifier
from yuntu.kit.errors import AppError, E
from yuntu.kit.schemas import PageParams
from yuntu.models.drive import Drive, Team, TeamMember, TeamRole
from yuntu.models.identity import User, UserStatus

RANK = {TeamRole.VIEWER: 1, TeamRole.MEMBER: 2, TeamRole.ADMIN: 3, TeamRole.OWNER: 4}


@dataclass(slots=True)
class TeamView:
    team: Team
    role: str
    member_count: int

    def out(self) -> dict[str, Any]:
        team = self.team
        return {
            "id": team.id,
            "name": team.name,
            "description": team.description,
            "created_by": team.created_by,
            "role": self.role,
            "member_count": self.member_count,
            "created_at": team.created_at,
            "updated_at": team.updated_at,
        }


def at_least(role: str, minimum: TeamRole) -> bool:
    return RANK[TeamRole(role)] >= RANK[minimum]


async def _member_count(session: AsyncSession, team_id: int) -> int:
    count = await session.scalar(
        select(func.count()).select_from(TeamMember).where(TeamMember.team_id == team_id)
    )
    return int(count or 0)


async def membership(
    session: AsyncSession,
    team_id: int,
    user_id: int,
    minimum: TeamRole = TeamRole.VIEWER,
    *,
    lock: bool = False,
) -> tuple[Team, str]:
    """The team and the caller's role: 404 for a non-member, 403 below `minimum`."""
    statement = select(Team).where(Team.id == team_id)
    if lock:
        statement = statement.with_for_update()
    team = await session.scalar(statement)
    role = None
    if team is not None:
        role = await session.scalar(
            select(TeamMember.role).where(
                TeamMember.team_id == team_id, TeamMember.user_id == user_id
            )
        )
    if team is None or role is None:
        raise AppError(E.NOT_FOUND)
    if not at_least(role, minimum):
        raise AppError(E.FORBIDDEN)
    return team, role


async def create_team(
    session: AsyncSession, user_id: int, name: str, description: str | None
) -> TeamView:
    team = Team(name=name, description=description, created_by=user_id)
    session.add(team)
    await session.flush()
    session.add(TeamMember(team_id=team.id, user_id=user_id, role=TeamRole.OWNER.value))
    await session.flush()
    return TeamView(team, TeamRole.OWNER.value, 1)


async def list_teams(
    session: AsyncSession, user_id: int, params: PageParams
) -> tuple[list[TeamView], int]:
    mine = select(TeamMember.team_id).where(TeamMember.user_id == user_id)
    total = await session.scalar(select(func.count()).select_from(mine.subquery()))
    counts = (
        select(TeamMember.team_id, func.count().label("n")).group_by(TeamMember.team_id).subquery()
    )
    rows = (
        await session.execute(
            select(Team, TeamMember.role, counts.c.n)
            .join(TeamMember, (TeamMember.team_id == Team.id) & (TeamMember.user_id == user_id))
            .join(counts, counts.c.team_id == Team.id)
            .order_by(Team.created_at, Team.id)
            .offset(params.offset)
            .limit(params.page_size)
        )
    ).all()
    return [TeamView(team, role, int(n)) for team, role, n in rows], int(total or 0)


async def get_team(session: AsyncSession, team_id: int, user_id: int) -> TeamView:
    team, role = await membership(session, team_id, user_id)
    return TeamView(team, role, await _member_count(session, team_id))


async def update_team(
    session: AsyncSession, team_id: int, user_id: int, changes: dict[str, Any]
) -> TeamView:
    team, role = await membership(session, team_id, user_id, TeamRole.ADMIN)
    if "name" in changes and changes["name"] is None:
        raise AppError(E.VALIDATION_ERROR, details=[{"field": "body.name", "message": "null"}])
    for key in ("name", "description"):
        if key in changes:
            setattr(team, key, changes[key])
    await session.flush()
    return TeamView(team, role, await _member_count(session, team_id))


async def delete_team(session: AsyncSession, team_id: int, user_id: int) -> None:
    """Owners only; refused (409 INVALID_STATE) while the team still owns drives."""
    await membership(session, team_id, user_id, TeamRole.OWNER, lock=True)
    drives = await session.scalar(
        select(func.count()).select_from(Drive).where(Drive.team_id == team_id)
    )
    if drives:
        raise AppError(
            E.INVALID_STATE,
            message="the team still owns drives; delete them first",
            details={"drives": int(drives)},
        )
    await session.execute(delete(TeamMember).where(TeamMember.team_id == team_id))
    await session.execute(delete(Team).where(Team.id == team_id))


@dataclass(slots=True)
class MemberView:
    user_id: int
    username: str | None
    nickname: str | None
    role: str
    joined_at: datetime


async def list_members(
    session: AsyncSession, team_id: int, user_id: int, params: PageParams
) -> tuple[list[MemberView], int]:
    await membership(session, team_id, user_id)
    total = await _member_count(session, team_id)
    rows = (
        await session.execute(
            select(TeamMember, User.username, User.nickname)
            .join(User, User.id == TeamMember.user_id)
            .where(TeamMember.team_id == team_id)
            .order_by(TeamMember.created_at, TeamMember.user_id)
            .offset(params.offset)
            .limit(params.page_size)
        )
    ).all()
    return [
        MemberView(m.user_id, username, nickname, m.role, m.created_at)
        for m, username, nickname in rows
    ], total


async def _view(session: AsyncSession, member: TeamMember) -> MemberView:
    user = await session.get(User, member.user_id)
    assert user is not None
    return MemberView(member.user_id, user.username, user.nickname, member.role, member.created_at)


async def add_member(
    session: AsyncSession, team_id: int, actor_id: int, identifier: str, role: str
) -> MemberView:
    """Admins and owners add people; only owners may grant owner. An unknown (or closed)
    account answers 404; an existing member 409."""
    _team, actor_role = await membership(session, team_id, actor_id, TeamRole.ADMIN, lock=True)
    if role == TeamRole.OWNER and actor_role != TeamRole.OWNER:
        raise AppError(E.FORBIDDEN, message="only an owner can grant the owner role")
    user = await find_by_identifier(session, identifier)
    if user is None or user.status == UserStatus.DELETED:
        raise AppError(E.NOT_FOUND, message="no such user")
    existing = await session.get(TeamMember, (team_id, user.id))
    if existing is not None:
        raise AppError(E.CONFLICT, message="already a member of this team")
    member = TeamMember(team_id=team_id, user_id=user.id, role=role)
    session.add(member)
    await session.flush()
    return await _view(session, member)


async def _owner_count(session: AsyncSession, team_id: int) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(TeamMember)
        .where(TeamMember.team_id == team_id, TeamMember.role == TeamRole.OWNER.value)
    )
    return int(count or 0)


async def _target(session: AsyncSession, team_id: int, user_id: int) -> TeamMember:
    member = await session.get(TeamMember, (team_id, user_id))
    if member is None:
        raise AppError(E.NOT_FOUND)
    return member


async def change_role(
    session: AsyncSession, team_id: int, actor_id: int, user_id: int, role: str
) -> MemberView:
    _team, actor_role = await membership(session, team_id, actor_id, TeamRole.ADMIN, lock=True)
    member = await _target(session, team_id, user_id)
    touches_owner = role == TeamRole.OWNER or member.role == TeamRole.OWNER
    if touches_owner and actor_role != TeamRole.OWNER:
        raise AppError(E.FORBIDDEN, message="only an owner can make or demote owners")
    if (
        member.role == TeamRole.OWNER
        and role != TeamRole.OWNER
        and await _owner_count(session, team_id) <= 1
    ):
        raise AppError(E.INVALID_STATE, message="a team keeps at least one owner")
    member.role = role
    await session.flush()
    return await _view(session, member)


async def remove_member(session: AsyncSession, team_id: int, actor_id: int, user_id: int) -> None:
    """Admins and owners remove members (only owners remove owners); anyone may remove
    themselves (leave). The last owner can do neither."""
    minimum = TeamRole.VIEWER if actor_id == user_id else TeamRole.ADMIN
    _team, actor_role = await membership(session, team_id, actor_id, minimum, lock=True)
    member = await _target(session, team_id, user_id)
    if member.role == TeamRole.OWNER:
        if actor_id != user_id and actor_role != TeamRole.OWNER:
            raise AppError(E.FORBIDDEN, message="only an owner can remove an owner")
        if await _owner_count(session, team_id) <= 1:
            raise AppError(E.INVALID_STATE, message="the last owner cannot leave the team")
    await session.execute(
        delete(TeamMember).where(TeamMember.team_id == team_id, TeamMember.user_id == user_id)
    )
