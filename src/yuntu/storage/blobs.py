"""The blobs table and its reference counts: content stored once, counted exactly.

Every reference (a file version, later a render output or a package version) calls `add_ref`
or `release_ref` in the same transaction that creates or deletes it. A blob that reaches zero
references gets `zero_since`; the GC job deletes it after the grace period."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import cast

from sqlalchemy import Table, bindparam, case, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.background import spawn
from yuntu.kit.db import Database, UTCDateTime, database_of, on_commit
from yuntu.kit.errors import AppError, E
from yuntu.kit.logging import get_logger
from yuntu.models.drive import Blob
from yuntu.storage.base import BlobStore, BlobWriter, ObjectMissing, StorageError, StorageFull

log = get_logger("yuntu.blobs")


def store_of(session: AsyncSession) -> BlobStore:
    store = database_of(session).storage
    if store is None:
        raise AppError(E.FEATURE_NOT_CONFIGURED, message="blob storage is not configured")
    return store  # type: ignore[no-any-return]


def storage_app_error(exc: StorageError) -> AppError:
    """The API's answer to a storage failure (never a 500, never the backend's message)."""
    if isinstance(exc, StorageFull):
        return AppError(E.STORAGE_FULL)
    return AppError(E.STORAGE_UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class StagedObject:
    """Bytes written to a pending key, with the digests the server computed itself."""

    key: str
    size: int
    md5: str
    sha256: str


class Hasher:
    """MD5 and SHA-256 of a stream, updated as the bytes pass."""

    __slots__ = ("md5", "sha256", "size")

    def __init__(self) -> None:
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self.md5.update(data)
        self.sha256.update(data)
        self.size += len(data)


async def ingest(
    store: BlobStore, chunks: AsyncIterable[bytes], *, max_bytes: int | None = None
) -> StagedObject:
    """Stream `chunks` into a pending object while hashing. Raises AppError (nothing left
    behind) when the stream is longer than `max_bytes` or the store fails."""
    writer = store.writer()
    hasher = Hasher()
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            hasher.update(chunk)
            if max_bytes is not None and hasher.size > max_bytes:
                raise AppError(E.FILE_TOO_LARGE)
            await writer.write(chunk)
        key = await writer.finish()
    except StorageError as exc:
        await _abort_quietly(writer)
        raise storage_app_error(exc) from exc
    except BaseException:
        await _abort_quietly(writer)
        raise
    return StagedObject(key, hasher.size, hasher.md5.hexdigest(), hasher.sha256.hexdigest())


async def _abort_quietly(writer: BlobWriter) -> None:
    """Clean-up after a failed write must not hide why it failed (the store may be down)."""
    try:
        await writer.abort()
    except StorageError:
        log.warning("pending_object_not_deleted", key=writer.key)


async def discard(store: BlobStore, key: str) -> None:
    """Best-effort removal of a pending object (its owner failed or was a duplicate)."""
    try:
        await store.delete(key)
    except StorageError:
        log.warning("pending_object_not_deleted", key=key)


async def adopt_staged(session: AsyncSession, staged: StagedObject) -> Blob:
    """Turn a staged object into a blob holding one new reference. When identical content is
    already stored, the staged copy is dropped (after commit) and the existing blob is used."""
    store = store_of(session)
    blob = await add_ref_by_sha(session, staged.sha256)
    if blob is not None:
        if blob.ref_count == 1 and not await _object_present(store, blob):
            # The stored copy vanished (GC raced a failed commit, or the disk lost it): the
            # staged bytes are the same content, so they become the stored copy again.
            key = await _adopt(store, staged)
            blob.storage_key = key
            await session.flush()
            return blob
        discard_after_commit(session, store, staged.key)
        return blob
    key = await _adopt(store, staged)
    blob = Blob(
        sha256=staged.sha256,
        md5=staged.md5,
        size=staged.size,
        storage_key=key,
        ref_count=1,
    )
    try:
        async with session.begin_nested():
            session.add(blob)
    except IntegrityError:
        # Another upload stored the same content at the same moment: count ours on theirs.
        existing = await add_ref_by_sha(session, staged.sha256)
        if existing is None:
            raise
        if existing.storage_key != key:
            discard_after_commit(session, store, key)
        return existing
    return blob


async def _adopt(store: BlobStore, staged: StagedObject) -> str:
    try:
        return await store.adopt(staged.key, staged.sha256)
    except StorageError as exc:
        await discard(store, staged.key)
        raise storage_app_error(exc) from exc


async def _object_present(store: BlobStore, blob: Blob) -> bool:
    try:
        return await store.exists(blob.storage_key)
    except StorageError:
        return True  # cannot tell: trust the row rather than rewrite it


async def undo_staged(db: Database, staged: StagedObject, adopted_key: str | None) -> None:
    """After a transaction that adopted `staged` failed: remove the pending object and, when no
    blob row records it, the object it was adopted into (nothing half-written is left)."""
    store = db.storage
    if store is None:
        return
    await discard(store, staged.key)
    if adopted_key is None or adopted_key == staged.key:
        return
    async with db.read_sessionmaker() as session:
        kept = await session.scalar(select(Blob.id).where(Blob.sha256 == staged.sha256))
    if kept is None:
        await discard(store, adopted_key)


def discard_after_commit(session: AsyncSession, store: BlobStore, key: str) -> None:
    """Remove a pending object once the transaction commits (a duplicate, or rejected bytes)."""
    on_commit(session, lambda: spawn(discard(store, key)))


async def add_ref_by_sha(session: AsyncSession, sha256: str, count: int = 1) -> Blob | None:
    """+count references on the blob with this content, or None when there is none."""
    blob_id = await session.scalar(
        update(Blob)
        .where(Blob.sha256 == sha256)
        .values(ref_count=Blob.ref_count + count, zero_since=None)
        .returning(Blob.id)
        .execution_options(synchronize_session=False)
    )
    if blob_id is None:
        return None
    return await _fresh(session, blob_id)


async def add_ref(session: AsyncSession, blob_id: int, count: int = 1) -> None:
    result = await session.execute(
        update(Blob)
        .where(Blob.id == blob_id)
        .values(ref_count=Blob.ref_count + count, zero_since=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise ObjectMissing(f"blob {blob_id}")


async def release_ref(session: AsyncSession, blob_id: int, count: int = 1) -> None:
    """-count references; at zero the blob starts its grace period before the GC deletes it."""
    now = datetime.now(UTC)
    remaining = Blob.ref_count - count
    await session.execute(
        update(Blob)
        .where(Blob.id == blob_id)
        .values(
            ref_count=remaining,
            zero_since=case((remaining <= 0, now), else_=None),
        )
        .execution_options(synchronize_session=False)
    )


_BLOBS = cast(Table, Blob.__table__)


async def add_refs(session: AsyncSession, counts: dict[int, int]) -> None:
    """+n references on many blobs in one executemany (an instant-upload batch of 10,000
    distinct files would otherwise pay 10,000 round trips). Raises ObjectMissing when a blob
    is gone (collected meanwhile): the caller's transaction must then roll back."""
    params = [{"b_id": blob_id, "b_n": n} for blob_id, n in counts.items() if n]
    if not params:
        return
    await session.execute(
        update(_BLOBS)
        .where(_BLOBS.c.id == bindparam("b_id"))
        .values(ref_count=_BLOBS.c.ref_count + bindparam("b_n"), zero_since=None),
        params,
    )
    ids = [param["b_id"] for param in params]
    present = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        present += int(
            await session.scalar(select(func.count()).where(_BLOBS.c.id.in_(chunk))) or 0
        )
    if present != len(ids):
        raise ObjectMissing(f"{len(ids) - present} blob(s) no longer stored")


async def release_refs(session: AsyncSession, counts: dict[int, int]) -> None:
    """-n references on many blobs in one executemany."""
    params = [{"b_id": blob_id, "b_n": n} for blob_id, n in counts.items() if n]
    if not params:
        return
    if len(params) == 1:
        await release_ref(session, params[0]["b_id"], params[0]["b_n"])
        return
    remaining = _BLOBS.c.ref_count - bindparam("b_n")
    await session.execute(
        update(_BLOBS)
        .where(_BLOBS.c.id == bindparam("b_id"))
        .values(
            ref_count=remaining,
            zero_since=case((remaining <= 0, bindparam("b_now", type_=UTCDateTime())), else_=None),
        ),
        [{**param, "b_now": datetime.now(UTC)} for param in params],
    )


async def _fresh(session: AsyncSession, blob_id: int) -> Blob:
    blob = await session.get(Blob, blob_id, populate_existing=True)
    assert blob is not None
    return blob


async def get_blob(session: AsyncSession, blob_id: int) -> Blob:
    blob = await session.get(Blob, blob_id)
    if blob is None:
        raise AppError(E.NOT_FOUND)
    return blob


async def find_by_md5_size(
    session: AsyncSession, pairs: list[tuple[str, int]]
) -> dict[tuple[str, int], Blob]:
    """Stored blobs matching (md5, size) pairs, in batches (instant upload)."""
    found: dict[tuple[str, int], Blob] = {}
    md5s = sorted({md5 for md5, _ in pairs})
    for start in range(0, len(md5s), 500):
        rows = await session.scalars(select(Blob).where(Blob.md5.in_(md5s[start : start + 500])))
        for blob in rows:
            found.setdefault((blob.md5, blob.size), blob)
    return {pair: found[pair] for pair in pairs if pair in found}


async def collect_garbage(session: AsyncSession, grace: timedelta, limit: int = 500) -> int:
    """Delete blobs unreferenced for longer than `grace`: the object first, then the row, in
    the caller's transaction. A concurrent new reference (which clears zero_since) wins."""
    store = store_of(session)
    cutoff = datetime.now(UTC) - grace
    candidates = (
        await session.execute(
            select(Blob.id, Blob.storage_key)
            .where(Blob.ref_count <= 0, Blob.zero_since.is_not(None), Blob.zero_since <= cutoff)
            .limit(limit)
        )
    ).all()
    deleted = 0
    for blob_id, key in candidates:
        result = await session.execute(
            delete(Blob).where(
                Blob.id == blob_id,
                Blob.ref_count <= 0,
                Blob.zero_since.is_not(None),
                Blob.zero_since <= cutoff,
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            continue
        # The row is gone (and locked) in this transaction; remove the object before commit so
        # a new upload of the same content, which waits for this row, stores it afresh.
        await store.delete(key)
        deleted += 1
    return deleted
