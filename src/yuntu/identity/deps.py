"""Typed authentication dependencies: who is calling, checked on every request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.identity import apikeys, service
from yuntu.identity.service import AuthRuntime, Client
from yuntu.identity.tokens import sha256_hex
from yuntu.kit import idempotency
from yuntu.kit.clientip import client_address
from yuntu.kit.errors import AppError, E
from yuntu.kit.http import get_db_session, is_read_only
from yuntu.models.identity import User, UserRole

bearer_scheme = HTTPBearer(auto_error=False, description="Access token from /auth/login")
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Machine client key created by an administrator"
)

DbSession = Annotated[AsyncSession, Depends(get_db_session)]


async def get_runtime(request: Request) -> AuthRuntime:
    return request.app.state.auth


Runtime = Annotated[AuthRuntime, Depends(get_runtime)]


async def get_client(request: Request) -> Client:
    settings = request.app.state.settings
    peer = request.client.host if request.client else None
    ip = client_address(
        peer, request.headers.get("x-forwarded-for"), settings.trusted_proxy_networks
    )
    return Client(ip=ip, user_agent=request.headers.get("user-agent"))


ClientInfo = Annotated[Client, Depends(get_client)]


@dataclass(slots=True)
class AuthUser:
    user: User
    session_id: int


@dataclass(slots=True)
class Principal:
    """A caller: a signed-in user, or a machine client holding an API key."""

    user: User | None = None
    session_id: int | None = None
    api_key: apikeys.KeyRef | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.role == UserRole.ADMIN

    def allows(self, scope: str) -> bool:
        if self.is_admin or scope in self.scopes:
            return True
        return bool(apikeys.IMPLIED_BY.get(scope, frozenset()) & self.scopes)


async def _user_from_bearer(
    request: Request, session: AsyncSession, rt: AuthRuntime, token: str
) -> AuthUser:
    user, claims = await service.authenticate_access(
        session, rt, token, cached=is_read_only(request)
    )
    request.scope.setdefault("state", {})["user_id"] = str(user.id)
    return AuthUser(user=user, session_id=claims.session_id)


async def current_user(
    request: Request,
    session: DbSession,
    rt: Runtime,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> AuthUser:
    if credentials is None:
        raise AppError(E.UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    return await _user_from_bearer(request, session, rt, credentials.credentials)


CurrentUser = Annotated[AuthUser, Depends(current_user)]


@dataclass(slots=True)
class IdempotentAuth:
    user: User
    session_id: int
    idempotency_key: str | None  # the client's key, scoped to this user, if it sent one


async def idempotent_user(
    request: Request,
    session: DbSession,
    auth: CurrentUser,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            pattern=r"^[\x21-\x7e]+$",
            description="Any unique string (a UUID): a repeat of the request with the same key "
            "returns the first response and does nothing again; a different request with the "
            "same key answers 409.",
        ),
    ] = None,
) -> IdempotentAuth:
    key = await idempotency.begin(request, session, f"user:{auth.user.id}")
    return IdempotentAuth(user=auth.user, session_id=auth.session_id, idempotency_key=key)


IdempotentUser = Annotated[IdempotentAuth, Depends(idempotent_user)]


async def idempotent_admin(auth: IdempotentUser) -> IdempotentAuth:
    if auth.user.role != UserRole.ADMIN:
        raise AppError(E.FORBIDDEN)
    return auth


IdempotentAdmin = Annotated[IdempotentAuth, Depends(idempotent_admin)]


async def current_admin(auth: CurrentUser) -> AuthUser:
    if auth.user.role != UserRole.ADMIN:
        raise AppError(E.FORBIDDEN)
    return auth


CurrentAdmin = Annotated[AuthUser, Depends(current_admin)]


async def _key_from_header(
    request: Request, session: AsyncSession, rt: AuthRuntime, presented: str
) -> apikeys.KeyRef:
    """The key, from the cache on read-only requests (revocations evict it at commit, in every
    process); its use is recorded at most once a minute."""
    cache = rt.cache if is_read_only(request) else None
    digest = sha256_hex(presented) if cache is not None else ""
    cached = cache.get_key(digest) if cache is not None else None
    if cached is not None:
        key, touched = cached
        if key.expired():
            raise AppError(E.API_KEY_INVALID)
        due = apikeys.touch_due(touched)
    else:
        row = await apikeys.authenticate(session, presented)
        key, due = apikeys.KeyRef.of(row), apikeys.needs_touch(row)
        touched = 0.0 if due else time.monotonic()
    if due:
        if is_read_only(request):
            # A read session must not write (SQLite); a short write transaction of its own.
            async with request.app.state.db.transaction() as write_session:
                await apikeys.touch(write_session, key.id)
        else:
            # The request already holds the write lock on SQLite: write in the same session.
            await apikeys.touch(session, key.id)
        touched = time.monotonic()
    if cache is not None:
        cache.put_key(digest, key, touched)
    return key


async def current_principal(
    request: Request,
    session: DbSession,
    rt: Runtime,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    if credentials is not None:
        auth = await _user_from_bearer(request, session, rt, credentials.credentials)
        grants = frozenset(auth.user.grants or ())
        return Principal(user=auth.user, session_id=auth.session_id, scopes=grants)
    if api_key:
        key = await _key_from_header(request, session, rt, api_key)
        request.scope.setdefault("state", {})["user_id"] = f"key:{key.id}"
        return Principal(api_key=key, scopes=key.scopes)
    raise AppError(E.UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def require_scope(scope: str) -> object:
    """An admin user, or a user or API key granted `scope` (or a scope implying it)."""

    async def dependency(principal: CurrentPrincipal) -> Principal:
        if principal.user is not None and not principal.allows(scope):
            raise AppError(E.FORBIDDEN)
        if not principal.allows(scope):
            raise AppError(E.SCOPE_MISSING, details={"required_scope": scope})
        return principal

    return Depends(dependency)
