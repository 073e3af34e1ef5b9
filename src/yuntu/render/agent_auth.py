"""Render agent tokens: issued by an administrator, shown once, stored as SHA-256 (256 random
bits need no salt), checked on every agent call by the `CurrentAgent` dependency."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select

from yuntu.identity.deps import DbSession
from yuntu.identity.tokens import constant_time_equals, sha256_hex
from yuntu.kit.errors import AppError, E
from yuntu.models.render import AgentStatus, RenderAgent

TOKEN_PREFIX = "yta_"  # noqa: S105 (a prefix, not a secret)
_MAX_TOKEN = 200

agent_bearer = HTTPBearer(auto_error=False, description="Render agent token (yta_...)")


def generate_token() -> tuple[str, str, str]:
    """(token, its SHA-256, a display prefix)."""
    prefix = secrets.token_hex(4)
    token = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return token, sha256_hex(token), f"{TOKEN_PREFIX}{prefix}"


async def authenticate(session: DbSession, presented: str) -> RenderAgent:
    """The agent behind `presented`; 401 TOKEN_INVALID for unknown and revoked tokens."""
    if not presented.startswith(TOKEN_PREFIX) or len(presented) > _MAX_TOKEN:
        raise AppError(E.TOKEN_INVALID)
    digest = sha256_hex(presented)
    agent = await session.scalar(select(RenderAgent).where(RenderAgent.token_hash == digest))
    if (
        agent is None
        or not constant_time_equals(agent.token_hash, digest)
        or agent.status == AgentStatus.REVOKED
    ):
        raise AppError(E.TOKEN_INVALID)
    return agent


async def current_agent(
    request: Request,
    session: DbSession,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(agent_bearer)],
) -> RenderAgent:
    if credentials is None:
        raise AppError(E.UNAUTHENTICATED, headers={"WWW-Authenticate": "Bearer"})
    agent = await authenticate(session, credentials.credentials)
    request.scope.setdefault("state", {})["agent_id"] = str(agent.id)
    return agent


CurrentAgent = Annotated[RenderAgent, Depends(current_agent)]
