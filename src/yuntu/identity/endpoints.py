"""Identity endpoints: /auth/*, /users/me and the PicKitchen /user/profile aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from yuntu.identity import service
from yuntu.identity.deps import ClientInfo, CurrentUser, DbSession, Runtime
from yuntu.identity.schemas import (
    LoginIn,
    LogoutIn,
    PasswordChange,
    ProfileUpdate,
    RefreshIn,
    RegisterIn,
    Revoked,
    SessionOut,
    TokenPair,
    UserOut,
)
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, ok

router = make_router(tags=["auth"])
AUTH_ERRORS = error_responses(401)


def token_pair(issued: service.IssuedTokens) -> TokenPair:
    return TokenPair(
        access_token=issued.access_token,
        refresh_token=issued.refresh_token,
        expires_in=issued.expires_in,
        refresh_expires_in=issued.refresh_expires_in,
        session_id=issued.session.id,
        user=UserOut.model_validate(issued.user),
    )


@router.post(
    "/auth/register",
    status_code=201,
    summary="Register with a password",
    responses=error_responses(409, 429),
)
async def register(
    body: RegisterIn, session: DbSession, rt: Runtime, client: ClientInfo
) -> Envelope[TokenPair]:
    """Create an account with a username, email or phone and a password; returns tokens."""
    issued = await service.register(
        session,
        rt,
        client,
        username=body.username,
        email=body.email,
        phone=body.phone,
        password=body.password,
        nickname=body.nickname,
    )
    return Envelope(data=token_pair(issued))


@router.post("/auth/login", summary="Log in with a password or a device id", responses=AUTH_ERRORS)
async def login(
    body: LoginIn, session: DbSession, rt: Runtime, client: ClientInfo
) -> Envelope[TokenPair]:
    """`{account|username|email|phone, password}`, or `{device_id}`: an unknown device silently
    becomes a new user (PicKitchen). Ten failures per account or address in five minutes answer
    429 with Retry-After."""
    if body.device_id:
        issued = await service.login_device(session, rt, client, body.device_id)
    else:
        assert body.identifier is not None and body.password is not None
        issued = await service.login_password(session, rt, client, body.identifier, body.password)
    return Envelope(data=token_pair(issued))


@router.post("/auth/refresh", summary="Rotate a refresh token", responses=AUTH_ERRORS)
async def refresh(
    body: RefreshIn, session: DbSession, rt: Runtime, client: ClientInfo
) -> Envelope[TokenPair]:
    """The presented refresh token dies and a new pair is returned. Presenting a token that was
    already rotated revokes every token of that login and answers 401004."""
    issued = await service.refresh(session, rt, client, body.refresh_token)
    return Envelope(data=token_pair(issued))


@router.post("/auth/logout", summary="Revoke this session (or all)", responses=AUTH_ERRORS)
async def logout(
    body: LogoutIn, auth: CurrentUser, session: DbSession, rt: Runtime
) -> Envelope[Revoked]:
    """Revokes the session of the presented refresh token (default: the calling session);
    `all: true` revokes every session of the user. Their access tokens stop working at once."""
    count = await service.logout(
        session, rt, auth.user, auth.session_id, body.refresh_token, body.all
    )
    return Envelope(data=Revoked(revoked=count))


@router.get("/auth/me", summary="The signed-in user", responses=AUTH_ERRORS)
async def me(auth: CurrentUser) -> Envelope[UserOut]:
    return Envelope(data=UserOut.model_validate(auth.user))


@router.get(
    "/auth/sessions", summary="Active sessions of the signed-in user", responses=AUTH_ERRORS
)
async def sessions(auth: CurrentUser, session: DbSession) -> Envelope[list[SessionOut]]:
    rows = await service.list_sessions(session, auth.user.id)
    out = []
    for row in rows:
        item = SessionOut.model_validate(row)
        item.current = row.id == auth.session_id
        out.append(item)
    return Envelope(data=out)


@router.delete(
    "/auth/sessions/{session_id}", summary="Revoke one session", responses=error_responses(401, 404)
)
async def delete_session(
    session_id: Annotated[Id, Path(description="Session id")], auth: CurrentUser, session: DbSession
) -> Envelope[Revoked]:
    await service.revoke_session(session, auth.user.id, session_id)
    return Envelope(data=Revoked(revoked=1))


@router.get("/users/me", summary="My profile", responses=AUTH_ERRORS)
@router.get("/user/profile", summary="My profile (PicKitchen alias)", responses=AUTH_ERRORS)
async def get_profile(auth: CurrentUser) -> Envelope[UserOut]:
    return Envelope(data=UserOut.model_validate(auth.user))


@router.put("/users/me", summary="Update my profile", responses=error_responses(401, 409))
@router.put(
    "/user/profile",
    summary="Update my profile (PicKitchen alias)",
    responses=error_responses(401, 409),
)
async def update_profile(
    body: ProfileUpdate, auth: CurrentUser, session: DbSession
) -> Envelope[UserOut]:
    """Only the fields present change. Username, email and phone stay unique (409)."""
    user = await service.update_profile(session, auth.user, body.model_dump(exclude_unset=True))
    return Envelope(data=UserOut.model_validate(user))


@router.put("/users/me/password", summary="Change my password", responses=AUTH_ERRORS)
async def change_password(
    body: PasswordChange, auth: CurrentUser, session: DbSession
) -> Envelope[Revoked]:
    """Every other session is revoked; the calling session stays signed in."""
    count = await service.change_password(
        session, auth.user, auth.session_id, body.current_password, body.new_password
    )
    return Envelope(data=Revoked(revoked=count))


__all__ = ["ok", "router"]
