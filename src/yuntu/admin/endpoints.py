"""Admin API under /api/v1/admin: users and API keys."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import Depends, Path, Query

from yuntu.admin import audit, service
from yuntu.admin.schemas import (
    ApiKeyCreate,
    ApiKeyCreated,
    ApiKeyOut,
    AuditOut,
    GrantsChange,
    RoleChange,
    StatusChange,
)
from yuntu.identity import apikeys
from yuntu.identity.deps import ClientInfo, CurrentAdmin, DbSession, Principal, require_scope
from yuntu.identity.schemas import UserOut
from yuntu.identity.service import now_utc
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import (
    Envelope,
    FilterDatetime,
    Id,
    Page,
    PageParams,
    make_page,
    page_params,
    paginate,
)
from yuntu.kit.text import line

router = make_router(prefix="/admin", tags=["admin"], responses=error_responses(401, 403))
UserId = Annotated[Id, Path(description="User id")]
Pagination = Annotated[PageParams, Depends(page_params)]


@router.get("/users", summary="List and search users")
async def list_users(
    session: DbSession,
    pagination: Pagination,
    _principal: Annotated[Principal, require_scope("users:read")],
    q: Annotated[
        str | None, line(100), Query(description="Matches username, email, phone, nickname")
    ] = None,
    status: Annotated[Literal["active", "suspended", "deleted"] | None, Query()] = None,
    role: Annotated[Literal["user", "admin"] | None, Query()] = None,
) -> Envelope[Page[UserOut]]:
    """Admins, or API keys with `users:read`."""
    rows, total = await paginate(session, service.search_statement(q, status, role), pagination)
    items = [UserOut.model_validate(row) for row in rows]
    return Envelope(data=Page[UserOut](**make_page(items, total, pagination)))


@router.get("/users/{user_id}", summary="One user", responses=error_responses(404))
async def get_user(
    user_id: UserId,
    session: DbSession,
    _principal: Annotated[Principal, require_scope("users:read")],
) -> Envelope[UserOut]:
    return Envelope(data=UserOut.model_validate(await service.get_user(session, user_id)))


@router.post(
    "/users/{user_id}/suspend", summary="Suspend a user", responses=error_responses(404, 409)
)
async def suspend(
    user_id: UserId,
    admin: CurrentAdmin,
    session: DbSession,
    client: ClientInfo,
    body: StatusChange | None = None,
) -> Envelope[UserOut]:
    """The user's sessions are revoked and their access tokens stop working at once."""
    user = await service.set_status(
        session, admin.user, user_id, "suspended", client.ip, body.reason if body else None
    )
    return Envelope(data=UserOut.model_validate(user))


@router.post(
    "/users/{user_id}/reactivate",
    summary="Reactivate a suspended user",
    responses=error_responses(404, 409),
)
async def reactivate(
    user_id: UserId,
    admin: CurrentAdmin,
    session: DbSession,
    client: ClientInfo,
    body: StatusChange | None = None,
) -> Envelope[UserOut]:
    user = await service.set_status(
        session, admin.user, user_id, "active", client.ip, body.reason if body else None
    )
    return Envelope(data=UserOut.model_validate(user))


@router.put(
    "/users/{user_id}/role", summary="Change a user's role", responses=error_responses(404, 409)
)
async def change_role(
    user_id: UserId, body: RoleChange, admin: CurrentAdmin, session: DbSession, client: ClientInfo
) -> Envelope[UserOut]:
    user = await service.set_role(session, admin.user, user_id, body.role, client.ip)
    return Envelope(data=UserOut.model_validate(user))


@router.put(
    "/users/{user_id}/grants",
    summary="Set the scopes a user is granted",
    responses=error_responses(404),
)
async def change_grants(
    user_id: UserId,
    body: GrantsChange,
    admin: CurrentAdmin,
    session: DbSession,
    client: ClientInfo,
) -> Envelope[UserOut]:
    """Replaces the user's grants: the same scopes API keys carry (`packages:admin` lets a
    non-admin user manage packages, `packages:read` lets them see packages and processing logs).
    Takes effect on the user's next request."""
    user = await service.set_grants(session, admin.user, user_id, list(body.grants), client.ip)
    return Envelope(data=UserOut.model_validate(user))


@router.post("/api-keys", status_code=201, summary="Create an API key (secret shown once)")
async def create_api_key(
    body: ApiKeyCreate, admin: CurrentAdmin, session: DbSession, client: ClientInfo
) -> Envelope[ApiKeyCreated]:
    """The response carries the key itself in `secret`: store it now, it is never shown again
    (the database keeps only its SHA-256). Send it as `X-API-Key`."""
    expires = now_utc() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    key, secret = await service.create_api_key(
        session,
        admin.user,
        name=body.name,
        scopes=list(body.scopes),
        expires_at=expires,
        ip=client.ip,
    )
    out = ApiKeyOut.model_validate(key).model_dump()
    return Envelope(data=ApiKeyCreated(**out, secret=secret))


@router.get("/api-keys", summary="List API keys (prefix only)")
async def list_api_keys(_admin: CurrentAdmin, session: DbSession) -> Envelope[list[ApiKeyOut]]:
    return Envelope(data=[ApiKeyOut.model_validate(k) for k in await apikeys.list_keys(session)])


@router.delete("/api-keys/{key_id}", summary="Revoke an API key", responses=error_responses(404))
async def revoke_api_key(
    key_id: Annotated[Id, Path(description="API key id")],
    admin: CurrentAdmin,
    session: DbSession,
    client: ClientInfo,
) -> Envelope[ApiKeyOut]:
    """Takes effect at once. Revoking an already revoked key is a no-op."""
    key = await service.revoke_api_key(session, admin.user, key_id, client.ip)
    return Envelope(data=ApiKeyOut.model_validate(key))


@router.get("/audit", summary="The audit log: every administrative action")
async def list_audit(
    session: DbSession,
    pagination: Pagination,
    _principal: Annotated[Principal, require_scope("audit:read")],
    action: Annotated[
        str | None,
        Query(max_length=64, description="An action, or a family ending in `.`: `package.`"),
    ] = None,
    actor_user_id: Annotated[Id | None, Query()] = None,
    actor_api_key_id: Annotated[Id | None, Query()] = None,
    target_type: Annotated[str | None, Query(max_length=32)] = None,
    target_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[
        FilterDatetime | None, Query(description="At or after (with a time zone)")
    ] = None,
    until: Annotated[FilterDatetime | None, Query(description="Before (with a time zone)")] = None,
) -> Envelope[Page[AuditOut]]:
    """Who (user or API key), what (action, target, before and after), when and from which
    address. Newest first. Admins, or API keys with `audit:read`."""
    statement = audit.list_statement(
        action=action,
        actor_user_id=actor_user_id,
        actor_api_key_id=actor_api_key_id,
        target_type=target_type,
        target_id=target_id,
        since=since,
        until=until,
    )
    rows, total = await paginate(session, statement, pagination)
    items = [AuditOut.model_validate(row) for row in rows]
    return Envelope(data=Page[AuditOut](**make_page(items, total, pagination)))
