"""`Idempotency-Key` for endpoints that move money or create paid work (Stripe's rules).

An endpoint opts in by depending on an authenticated caller through `begin` (see
identity.deps.IdempotentUser). With the header present:
- the first request runs; its successful response is stored in the same transaction as its work,
  so the record exists exactly when the work does;
- a repeat with the same method, path and body gets the stored response again, marked with
  `Idempotent-Replayed: true`, and does nothing;
- the same key with a different request answers 409 IDEMPOTENCY_KEY_REUSED;
- two copies at the same moment: the second waits for the first (PostgreSQL's unique index) and
  replays it, or answers 409 IDEMPOTENCY_IN_FLIGHT when it cannot tell yet.
Errors are not stored (the work rolled back, so a retry may succeed). Keys are scoped to the
caller and kept `idempotency_retention_hours` (then treated as new)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import utcnow
from yuntu.kit.errors import AppError, E
from yuntu.models.idempotency import IdempotencyRecord

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
SCOPE_KEY = "yuntu_idempotency"
_KEY_OK = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True, slots=True)
class Pending:
    owner: str
    key: str
    method: str
    path: str
    request_hash: str


class Replay(Exception):
    """Raised to answer with a stored response instead of running the endpoint."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__("idempotent replay")
        self.status_code = status_code
        self.body = body

    def response(self) -> Response:
        return Response(
            self.body,
            status_code=self.status_code,
            media_type="application/json",
            headers={REPLAYED_HEADER: "true"},
        )


def header_key(request: Request) -> str | None:
    key = request.headers.get(HEADER.lower())
    if key is None:
        return None
    if not _KEY_OK.match(key):
        raise AppError(
            E.VALIDATION_ERROR,
            details=[
                {
                    "field": f"header.{HEADER}",
                    "message": "1 to 255 printable ASCII characters without spaces",
                }
            ],
        )
    return key


async def begin(request: Request, session: AsyncSession, owner: str) -> str | None:
    """Check the caller's key before the endpoint runs: replay, refuse, or remember to store.
    Returns the key (endpoints may derive ledger keys from it) or None without the header."""
    key = header_key(request)
    if key is None:
        return None
    body = await request.body()
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.url.path.encode(), request.url.query.encode()):
        digest.update(part + b"\0")
    digest.update(body)
    pending = Pending(owner, key, request.method, request.url.path[:512], digest.hexdigest())
    record = await _find(session, owner, key)
    if record is not None:
        raise _replay_or_refuse(record, pending)
    request.scope[SCOPE_KEY] = pending
    return key


def _replay_or_refuse(record: IdempotencyRecord, pending: Pending) -> Exception:
    if record.request_hash != pending.request_hash:
        return AppError(E.IDEMPOTENCY_KEY_REUSED, details={"idempotency_key": pending.key})
    return Replay(record.status_code, record.response_body)


async def _find(session: AsyncSession, owner: str, key: str) -> IdempotencyRecord | None:
    return await session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.owner == owner, IdempotencyRecord.key == key
        )
    )


async def remember(request: Request, session: AsyncSession, response: Response) -> None:
    """Store the successful response of a request that began with a key, in its transaction.
    A concurrent twin that committed first surfaces here as Replay or AppError."""
    pending: Pending | None = request.scope.pop(SCOPE_KEY, None)
    if pending is None or response.status_code >= 400:
        return
    body = bytes(response.body).decode()
    record = IdempotencyRecord(
        owner=pending.owner,
        key=pending.key,
        method=pending.method,
        path=pending.path,
        request_hash=pending.request_hash,
        status_code=response.status_code,
        response_body=body,
    )
    try:
        async with session.begin_nested():
            session.add(record)
    except IntegrityError:
        winner = await _find(session, pending.owner, pending.key)
        if winner is None:
            raise AppError(E.IDEMPOTENCY_IN_FLIGHT) from None
        raise _replay_or_refuse(winner, pending) from None


async def prune(session: AsyncSession, before: datetime | None = None, hours: float = 24) -> int:
    """Forget keys older than the retention (a later request with one of them runs anew)."""
    cutoff = before or utcnow() - timedelta(hours=hours)
    result = await session.execute(
        delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
