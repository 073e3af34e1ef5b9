"""Instant upload (秒传) with proof of possession: one round of `POST .../files/check`.

Knowing a file's MD5 and size must not be enough to obtain its content (both leak easily), so a
file completes without its bytes only after the client proves it holds them (the challenge and
its token: `yuntu.uploads.proofs`):

1. Challenge: every pending file that has not failed a proof gets random byte ranges and a nonce
   in a signed token, whether or not matching content exists and without looking: before the
   proof, a hit and a miss are indistinguishable.
2. Proof: the token is checked, stored content with the file's MD5 and size is looked up, the
   ranges are read from storage and the digests compared in constant time.
3. A passing proof places the stored blob in the drive (one more reference, quota moved from
   reserved to used) and the file becomes `instant`. A failing proof (wrong digest, expired or
   tampered token, no such content) sets `proof_failed`: the file must be uploaded and gets no
   new challenge, which bounds guessing to one attempt per file.

Everything is batched: a round of 10,000 files costs a few dozen queries."""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import Counter
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import tree
from yuntu.drive.paths import Conflict, join
from yuntu.drive.service import settings_of
from yuntu.kit.errors import AppError, E
from yuntu.models.drive import Blob, Drive, DriveFile, Folder
from yuntu.models.uploads import UploadTask, UploadTaskFile
from yuntu.storage import blobs
from yuntu.storage.base import BlobStore, ObjectMissing, StorageError
from yuntu.uploads import states
from yuntu.uploads.proofs import Claim, check_token, make_challenge, proof_digest
from yuntu.uploads.schemas import CheckEntry
from yuntu.uploads.states import FileStatus
from yuntu.uploads.tasks import place_at_destination

WHOLE_READ_LIMIT = 256 * 1024  # smaller blobs are read once per request and sliced
READ_CONCURRENCY = 16
_CHUNK = 2000


def _answer(file_id: int, result: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"file_id": file_id, "result": result, "status": status, **extra}


async def _load_rows(session: AsyncSession, task_id: int, ids: list[int]) -> dict[int, Row[Any]]:
    """The task's files among `ids` (Core rows: no ORM entities for 10,000 files). Selected by
    primary key alone, the task checked here: with `task_id` in the WHERE clause PostgreSQL's
    generic plan for a repeated statement scans the task's files against the id list."""
    f = UploadTaskFile.__table__.c
    columns = (f.id, f.task_id, f.status, f.proof_failed, f.size, f.md5, f.folder_id, f.name,
               f.mtime, f.mime_type)  # fmt: skip
    rows: dict[int, Row[Any]] = {}
    for start in range(0, len(ids), _CHUNK):
        result = await session.execute(
            select(*columns).where(f.id.in_(ids[start : start + _CHUNK]))
        )
        rows.update((row.id, row) for row in result if row.task_id == task_id)
    return rows


async def check_files(
    session: AsyncSession,
    task: UploadTask,
    drive: Drive,
    entries: list[CheckEntry],
    *,
    key: bytes,
    user_id: int,
    now: float | None = None,
) -> dict[str, Any]:
    """One round of `POST /upload-tasks/{id}/files/check`: challenges for entries without a
    proof, verdicts for entries with one. Every entry answers `challenge`, `instant` or
    `upload`."""
    settings = settings_of(session)
    now = time.time() if now is None else now
    ids = [entry.file_id for entry in entries]
    if len(ids) > settings.upload_max_manifest_files:
        raise AppError(E.BAD_REQUEST, details={"max_files": settings.upload_max_manifest_files})
    if len(set(ids)) != len(ids):
        duplicates = [str(i) for i, n in Counter(ids).items() if n > 1][:20]
        raise AppError(
            E.BAD_REQUEST, message="a file appears twice", details={"file_ids": duplicates}
        )
    rows = await _load_rows(session, task.id, ids)
    missing = [str(i) for i in ids if i not in rows]
    if missing:
        raise AppError(E.NOT_FOUND, details={"file_ids": missing[:20]})

    answers: dict[int, dict[str, Any]] = {}
    candidates: list[tuple[Row[Any], Claim, str]] = []
    refused: list[int] = []
    ttl = settings.instant_upload_challenge_seconds
    for entry in entries:
        row = rows[entry.file_id]
        if row.status != FileStatus.PENDING:
            result = "instant" if row.status == FileStatus.INSTANT else "upload"
            answers[row.id] = _answer(row.id, result, row.status)
        elif row.proof_failed or row.size == 0:
            answers[row.id] = _answer(row.id, "upload", row.status)
        elif entry.proof is None:
            challenge = make_challenge(key, task.id, row.id, row.size, now, ttl)
            answers[row.id] = _answer(row.id, "challenge", row.status, challenge=challenge)
        else:
            claim = check_token(key, entry.proof.token, task.id, row.id, row.size, now)
            if claim is None:
                refused.append(row.id)
            else:
                candidates.append((row, claim, entry.proof.digest))

    verified = await _verify(session, candidates, refused)
    if refused:
        await _mark_proof_failed(session, refused)
        for file_id in refused:
            answers[file_id] = _answer(file_id, "upload", FileStatus.PENDING)
    outcome = await _complete(session, task, drive, verified, user_id)
    for file_id, status in outcome.items():
        result = "instant" if status == FileStatus.INSTANT else "upload"
        answers[file_id] = _answer(file_id, result, status)
    saved = sum(row.size for row, _ in verified if outcome.get(row.id) == FileStatus.INSTANT)
    await session.refresh(task)
    return {
        "files": [answers[file_id] for file_id in ids],
        "bytes_saved": saved,
        "saved_bytes": task.saved_bytes,
        "task_status": task.status,
    }


async def _verify(
    session: AsyncSession, candidates: list[tuple[Row[Any], Claim, str]], refused: list[int]
) -> list[tuple[Row[Any], Blob]]:
    """The candidates whose stored content answers their proof; the others join `refused`."""
    if not candidates:
        return []
    found = await blobs.find_by_md5_size(session, [(row.md5, row.size) for row, _, _ in candidates])
    store = blobs.store_of(session)
    cache: dict[int, bytes] = {}
    semaphore = asyncio.Semaphore(READ_CONCURRENCY)

    async def passes(row: Row[Any], claim: Claim, digest: str) -> bool:
        blob = found.get((row.md5, row.size))
        if blob is None:
            return False
        async with semaphore:
            chunks = await _read_ranges(store, blob, claim.ranges, cache)
        if chunks is None:
            return False
        expected = proof_digest(claim.nonce, chunks)
        return hmac.compare_digest(expected.encode(), digest.lower().encode())

    if store.kind == "local":  # reads do not wait on the network: no tasks to schedule
        results = [await passes(*candidate) for candidate in candidates]
    else:
        results = await asyncio.gather(*(passes(*candidate) for candidate in candidates))
    verified: list[tuple[Row[Any], Blob]] = []
    for (row, _, _), ok in zip(candidates, results, strict=True):
        if ok:
            verified.append((row, found[(row.md5, row.size)]))
        else:
            refused.append(row.id)
    return verified


async def _read_ranges(
    store: BlobStore, blob: Blob, ranges: list[tuple[int, int]], cache: dict[int, bytes]
) -> list[bytes] | None:
    try:
        if blob.size <= WHOLE_READ_LIMIT:
            data = cache.get(blob.id)
            if data is None:
                data = cache[blob.id] = await store.read_range(blob.storage_key, 0, blob.size)
            return [data[offset : offset + length] for offset, length in ranges]
        return [await store.read_range(blob.storage_key, o, n) for o, n in ranges]
    except ObjectMissing:  # the row outlived its object: a miss, fsck reports the rest
        return None
    except StorageError as exc:
        raise blobs.storage_app_error(exc) from exc


async def _mark_proof_failed(session: AsyncSession, file_ids: list[int]) -> None:
    for start in range(0, len(file_ids), _CHUNK):
        await session.execute(
            update(UploadTaskFile)
            .where(
                UploadTaskFile.id.in_(file_ids[start : start + _CHUNK]),
                UploadTaskFile.status == str(FileStatus.PENDING),
            )
            .values(proof_failed=True)
            .execution_options(synchronize_session=False)
        )


# -- placing what passed -----------------------------------------------------------------------
async def _complete(
    session: AsyncSession,
    task: UploadTask,
    drive: Drive,
    verified: list[tuple[Row[Any], Blob]],
    user_id: int,
) -> dict[int, str]:
    """Place every verified file; returns each one's status afterwards. New files go in bulk,
    under their own names or, with the `rename` policy, the first free `name (n)`. A taken name
    under `error`, a folder gone or a path grown too long fail their files only (in bulk too).
    Under `overwrite` a taken name becomes a new version, one file at a time in a savepoint
    each."""
    if not verified:
        return {}
    folder_ids = list({row.folder_id for row, _ in verified})
    folders: dict[int, Folder] = {}
    for start in range(0, len(folder_ids), _CHUNK):
        result = await session.scalars(
            select(Folder).where(
                Folder.id.in_(folder_ids[start : start + _CHUNK]),
                Folder.drive_id == drive.id,
                Folder.trashed_at.is_(None),
            )
        )
        folders.update((folder.id, folder) for folder in result)
    conflict = Conflict(task.conflict)
    live = [(row, blob) for row, blob in verified if row.folder_id in folders]
    names = await tree.plan_names(
        session,
        [(row.folder_id, row.name) for row, _ in live],
        rename=conflict == Conflict.RENAME,
    )
    limit = settings_of(session).max_path_bytes
    fresh: list[tuple[Row[Any], Blob, str]] = []
    taken: list[tuple[Row[Any], Blob]] = []
    failures: dict[str, list[int]] = {
        E.NOT_FOUND.name: [row.id for row, _ in verified if row.folder_id not in folders],
        E.INVALID_PATH.name: [],
        E.NAME_CONFLICT.name: [],
    }
    for (row, blob), name in zip(live, names, strict=True):
        if name is None:
            taken.append((row, blob))
        elif len(join(folders[row.folder_id].path, name).encode()) > limit:
            failures[E.INVALID_PATH.name].append(row.id)
        else:
            fresh.append((row, blob, name))
    if conflict != Conflict.OVERWRITE:
        failures[E.NAME_CONFLICT.name] = [row.id for row, _ in taken]
        taken = []

    outcome: dict[int, str] = {}
    if fresh:
        outcome.update(await _place_in_bulk(session, task, drive, fresh, folders, user_id))
    for error, ids in failures.items():
        if ids:
            moved = await states.move_files(session, task, ids, FileStatus.FAILED, error=error)
            outcome.update(await _statuses(session, ids, moved.moved, FileStatus.FAILED))
    for row, blob in taken:
        outcome[row.id] = await _place_one(session, task, drive, row, blob, user_id)
    return outcome


async def _statuses(
    session: AsyncSession, ids: list[int], moved: dict[int, int], target: FileStatus
) -> dict[int, str]:
    """`target` for the files a batch moved; the current status of those it could not (a
    concurrent request moved them first)."""
    outcome = {file_id: str(target) for file_id in ids if file_id in moved}
    others = [file_id for file_id in ids if file_id not in moved]
    for start in range(0, len(others), _CHUNK):
        result = await session.execute(
            select(UploadTaskFile.id, UploadTaskFile.status).where(
                UploadTaskFile.id.in_(others[start : start + _CHUNK])
            )
        )
        outcome.update((file_id, status) for file_id, status in result)
    return outcome


async def _place_in_bulk(
    session: AsyncSession,
    task: UploadTask,
    drive: Drive,
    fresh: list[tuple[Row[Any], Blob, str]],
    folders: dict[int, Folder],
    user_id: int,
) -> dict[int, str]:
    ids = [row.id for row, _, _ in fresh]
    moved = await states.move_files(
        session, task, ids, FileStatus.INSTANT, count_saved=True, consumed_reservation=True
    )
    placed = [(row, blob, name) for row, blob, name in fresh if row.id in moved.moved]
    try:
        await blobs.add_refs(session, dict(Counter(blob.id for _, blob, _ in placed)))
    except ObjectMissing:  # collected between the lookup and now: try again later
        raise AppError(E.CONFLICT, message="stored content changed; retry") from None
    items = [
        tree.NewFile(folders[row.folder_id], name, blob, row.mtime, row.mime_type)
        for row, blob, name in placed
    ]
    file_ids = await tree.place_new_files(
        session, drive, items, user_id, reserved=moved.released, source="client", op="upload"
    )
    await _link(session, placed, file_ids)
    return await _statuses(session, ids, moved.moved, FileStatus.INSTANT)


async def _link(
    session: AsyncSession, placed: list[tuple[Row[Any], Blob, str]], file_ids: list[int]
) -> None:
    """Record the drive file each task file became. Files placed under their own name are found
    by (folder, name) in one statement per chunk (the name was free, so the live file there is
    theirs); renamed ones are updated one row each (executemany)."""
    task_files = cast(Table, UploadTaskFile.__table__)
    own = [row.id for row, _, name in placed if name == row.name]
    at_name = (
        DriveFile.folder_id == task_files.c.folder_id,
        DriveFile.name == task_files.c.name,
        DriveFile.trashed_at.is_(None),
    )
    for start in range(0, len(own), _CHUNK):
        await session.execute(
            update(task_files)
            .where(task_files.c.id.in_(own[start : start + _CHUNK]))
            .values(
                file_id=select(DriveFile.id).where(*at_name).scalar_subquery(),
                sha256=select(DriveFile.sha256).where(*at_name).scalar_subquery(),
            )
        )
    renamed = [
        {"task_file_id": row.id, "drive_file_id": file_id, "blob_sha256": blob.sha256}
        for (row, blob, name), file_id in zip(placed, file_ids, strict=True)
        if name != row.name
    ]
    if renamed:
        await session.execute(
            update(task_files)
            .where(task_files.c.id == bindparam("task_file_id"))
            .values(file_id=bindparam("drive_file_id"), sha256=bindparam("blob_sha256")),
            renamed,
        )


class _ContentGone(Exception):
    """The blob was collected between the lookup and the placement."""


async def _place_one(
    session: AsyncSession,
    task: UploadTask,
    drive: Drive,
    row: Row[Any],
    blob: Blob,
    user_id: int,
) -> str:
    file = await session.get(UploadTaskFile, row.id, populate_existing=True)
    assert file is not None
    sha256 = blob.sha256  # plain value: a savepoint rollback may expire the ORM objects
    try:
        async with session.begin_nested():
            referenced = await blobs.add_ref_by_sha(session, sha256)
            if referenced is None:
                raise _ContentGone
            await place_at_destination(session, task, drive, file, referenced, user_id)
            await states.move_file(
                session,
                task,
                file,
                FileStatus.INSTANT,
                saved_bytes=row.size,
                consumed_reservation=True,
            )
    except _ContentGone:
        await session.refresh(task)
        await session.refresh(file)
        return str(file.status)
    except AppError as exc:
        await session.refresh(task)
        await session.refresh(file)
        if exc.spec is E.INVALID_STATE:  # a concurrent request moved it first
            return str(file.status)
        await states.move_file(session, task, file, FileStatus.FAILED, error=exc.spec.name)
    return str(file.status)
