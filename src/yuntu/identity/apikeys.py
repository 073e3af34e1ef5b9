"""API keys for machine clients: shown once, stored as SHA-256, scoped, revocable."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, cast, get_args

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.identity.tokens import constant_time_equals, sha256_hex
from yuntu.kit.errors import AppError, E
from yuntu.models.identity import ApiKey

KEY_PREFIX = "yk_"
# Scopes a key may carry; domains add theirs here as they arrive.
Scope = Literal[
    "users:read", "users:write", "ledger:read", "packages:read", "packages:admin", "audit:read"
]
KNOWN_SCOPES: frozenset[str] = frozenset(get_args(Scope))
# A scope is also granted by these broader ones (an administrator of packages may read them).
IMPLIED_BY: dict[str, frozenset[str]] = {"packages:read": frozenset({"packages:admin"})}
# last_used_at is written at most this often per key, so hot keys do not write on every call.
_TOUCH_INTERVAL_SECONDS = 60


@dataclass(frozen=True, slots=True)
class KeyRef:
    """What a request needs of an authenticated key (cacheable: no ORM state)."""

    id: int
    scopes: frozenset[str]
    expires_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyRef:
        return cls(key.id, frozenset(key.scopes), key.expires_at)

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= datetime.now(UTC)


def generate() -> tuple[str, str]:
    """(full key, display prefix). The key carries 256 bits of randomness, so an unsalted
    SHA-256 at rest is enough: there is nothing to brute-force."""
    prefix = secrets.token_hex(4)
    return f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}", f"{KEY_PREFIX}{prefix}"


async def create(
    session: AsyncSession,
    *,
    name: str,
    scopes: list[str],
    created_by: int | None,
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    unknown = sorted(set(scopes) - KNOWN_SCOPES)
    if unknown:
        raise AppError(
            E.VALIDATION_ERROR,
            details=[{"field": "body.scopes", "message": f"unknown scopes: {unknown}"}],
        )
    secret, prefix = generate()
    key = ApiKey(
        name=name,
        prefix=prefix,
        key_hash=sha256_hex(secret),
        scopes=sorted(set(scopes)),
        created_by=created_by,
        expires_at=expires_at,
    )
    session.add(key)
    await session.flush()
    return key, secret


async def authenticate(session: AsyncSession, presented: str) -> ApiKey:
    """The live key behind `presented`. Does not write: see `touch`."""
    if not presented.startswith(KEY_PREFIX) or len(presented) > 200:
        raise AppError(E.API_KEY_INVALID)
    digest = sha256_hex(presented)
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == digest))
    now = datetime.now(UTC)
    if (
        key is None
        or not constant_time_equals(key.key_hash, digest)
        or key.revoked_at
        or (key.expires_at and key.expires_at <= now)
    ):
        raise AppError(E.API_KEY_INVALID)
    return key


def needs_touch(key: ApiKey) -> bool:
    last = key.last_used_at
    return last is None or (datetime.now(UTC) - last).total_seconds() > _TOUCH_INTERVAL_SECONDS


def touch_due(last_touch_monotonic: float) -> bool:
    return time.monotonic() - last_touch_monotonic > _TOUCH_INTERVAL_SECONDS


async def touch(session: AsyncSession, key_id: int) -> None:
    """Record use. Runs in its own short write transaction, so read-only requests stay
    read-only and a failed request still counts as a use."""
    # on the connection, not through the session: a use is not a change the key caches must
    # hear about (any other bulk update of api_keys empties them)
    table = cast(Table, ApiKey.__table__)
    connection = await session.connection()
    await connection.execute(
        update(table).where(table.c.id == key_id).values(last_used_at=datetime.now(UTC))
    )


async def list_keys(session: AsyncSession) -> list[ApiKey]:
    return list((await session.scalars(select(ApiKey).order_by(ApiKey.created_at.desc()))).all())


async def get(session: AsyncSession, key_id: int) -> ApiKey:
    key = await session.get(ApiKey, key_id)
    if key is None:
        raise AppError(E.NOT_FOUND)
    return key


async def revoke(session: AsyncSession, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = datetime.now(UTC)
    await session.flush()
    return key
