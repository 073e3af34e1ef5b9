"""Team endpoints: teams and their members. Non-members get 404 for a team (as for a missing
one); members below the needed role get 403. Roles: owner > admin > member > viewer."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path

from yuntu.drive import teams
from yuntu.drive.schemas import (
    MemberAdd,
    MemberOut,
    MemberRemoved,
    MemberRole,
    TeamCreate,
    TeamDeleted,
    TeamOut,
    TeamUpdate,
)
from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params

router = make_router(tags=["teams"], responses=error_responses(401))
TeamId = Annotated[Id, Path(description="Team id")]
UserId = Annotated[Id, Path(description="User id of the member")]
Pagination = Annotated[PageParams, Depends(page_params)]
MEMBER_ERRORS = error_responses(403, 404, 409)


def _member(view: teams.MemberView) -> MemberOut:
    return MemberOut(
        user_id=view.user_id,
        username=view.username,
        nickname=view.nickname,
        role=view.role,  # type: ignore[arg-type]
        joined_at=view.joined_at,
    )


@router.post("/teams", status_code=201, summary="Create a team (you become its owner)")
async def create_team(body: TeamCreate, auth: CurrentUser, session: DbSession) -> Envelope[TeamOut]:
    view = await teams.create_team(session, auth.user.id, body.name, body.description)
    return Envelope(data=TeamOut(**view.out()))


@router.get("/teams", summary="Teams I belong to")
async def list_teams(
    auth: CurrentUser, session: DbSession, pagination: Pagination
) -> Envelope[Page[TeamOut]]:
    views, total = await teams.list_teams(session, auth.user.id, pagination)
    items = [TeamOut(**view.out()) for view in views]
    return Envelope(data=Page[TeamOut](**make_page(items, total, pagination)))


@router.get("/teams/{team_id}", summary="A team", responses=error_responses(404))
async def get_team(team_id: TeamId, auth: CurrentUser, session: DbSession) -> Envelope[TeamOut]:
    view = await teams.get_team(session, team_id, auth.user.id)
    return Envelope(data=TeamOut(**view.out()))


@router.put("/teams/{team_id}", summary="Change a team", responses=error_responses(403, 404))
async def update_team(
    team_id: TeamId, body: TeamUpdate, auth: CurrentUser, session: DbSession
) -> Envelope[TeamOut]:
    """Admins and owners. Only the fields present change."""
    view = await teams.update_team(
        session, team_id, auth.user.id, body.model_dump(exclude_unset=True)
    )
    return Envelope(data=TeamOut(**view.out()))


@router.delete("/teams/{team_id}", summary="Delete a team", responses=MEMBER_ERRORS)
async def delete_team(
    team_id: TeamId, auth: CurrentUser, session: DbSession
) -> Envelope[TeamDeleted]:
    """Owners only; 409 INVALID_STATE while the team still owns drives."""
    await teams.delete_team(session, team_id, auth.user.id)
    return Envelope(data=TeamDeleted(id=team_id))


@router.get("/teams/{team_id}/members", summary="Members of a team", responses=error_responses(404))
async def list_members(
    team_id: TeamId, auth: CurrentUser, session: DbSession, pagination: Pagination
) -> Envelope[Page[MemberOut]]:
    views, total = await teams.list_members(session, team_id, auth.user.id, pagination)
    items = [_member(view) for view in views]
    return Envelope(data=Page[MemberOut](**make_page(items, total, pagination)))


@router.post(
    "/teams/{team_id}/members", status_code=201, summary="Add a member", responses=MEMBER_ERRORS
)
async def add_member(
    team_id: TeamId, body: MemberAdd, auth: CurrentUser, session: DbSession
) -> Envelope[MemberOut]:
    """Admins and owners add a user by `username` or `email`; only owners grant `owner`.
    An unknown user answers 404, an existing member 409."""
    identifier = body.username if body.username is not None else body.email
    assert identifier is not None
    view = await teams.add_member(session, team_id, auth.user.id, identifier, body.role)
    return Envelope(data=_member(view))


@router.put(
    "/teams/{team_id}/members/{user_id}", summary="Change a member's role", responses=MEMBER_ERRORS
)
async def change_role(
    team_id: TeamId, user_id: UserId, body: MemberRole, auth: CurrentUser, session: DbSession
) -> Envelope[MemberOut]:
    """Admins and owners; only an owner makes or demotes owners; the last owner cannot be
    demoted (409 INVALID_STATE)."""
    view = await teams.change_role(session, team_id, auth.user.id, user_id, body.role)
    return Envelope(data=_member(view))


@router.delete(
    "/teams/{team_id}/members/{user_id}", summary="Remove a member", responses=MEMBER_ERRORS
)
async def remove_member(
    team_id: TeamId, user_id: UserId, auth: CurrentUser, session: DbSession
) -> Envelope[MemberRemoved]:
    """Admins and owners remove members (only owners remove owners); your own id means leave.
    The last owner cannot leave (409 INVALID_STATE)."""
    await teams.remove_member(session, team_id, auth.user.id, user_id)
    return Envelope(data=MemberRemoved(team_id=team_id, user_id=user_id))


@router.post("/teams/{team_id}/leave", summary="Leave a team", responses=MEMBER_ERRORS)
async def leave(team_id: TeamId, auth: CurrentUser, session: DbSession) -> Envelope[MemberRemoved]:
    """The last owner cannot leave (409 INVALID_STATE): hand ownership over first."""
    await teams.remove_member(session, team_id, auth.user.id, auth.user.id)
    return Envelope(data=MemberRemoved(team_id=team_id, user_id=auth.user.id))
