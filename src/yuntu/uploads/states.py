"""Upload state machines: one table each for task files and tasks, and the only function that
moves a file between states. It changes the file's status with a conditional update and, in the
same transaction, the task's counters, the task's status and the drive's quota reservation, so
counters never drift (`yuntu drive fsck` recounts them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import service as drives
from yuntu.jobs.events import publish_soon
from yuntu.kit.db import database_of, on_commit
from yuntu.kit.errors import AppError, E
from yuntu.models.uploads import UploadTask, UploadTaskFile


class FileStatus(StrEnum):
    PENDING = "pending"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    INSTANT = "instant"  # deduplicated: the content was already stored (proof of possession)
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    PENDING = "pending"
    UPLOADING = "uploading"
    COMPLETED = "completed"
    PARTIALLY_FAILED = "partially_failed"
    FAILED = "failed"
    CANCELLED = "cancelled"


F = FileStatus
T = TaskStatus

FILE_TRANSITIONS: dict[F, frozenset[F]] = {
    # bytes start arriving; a proof of possession passes; rejected; the task is cancelled
    F.PENDING: frozenset({F.UPLOADING, F.INSTANT, F.FAILED, F.CANCELLED}),
    # verified and stored; rejected (checksum, size, storage, expiry); multipart aborted
    F.UPLOADING: frozenset({F.COMPLETED, F.FAILED, F.PENDING, F.CANCELLED}),
    # a retry (while attempts remain); the task is cancelled
    F.FAILED: frozenset({F.PENDING, F.CANCELLED}),
    F.COMPLETED: frozenset(),
    F.INSTANT: frozenset(),
    F.CANCELLED: frozenset(),
}

# A task's status is derived from its files' counters (see `derive_task_status`); these are the
# moves that derivation may make, plus cancellation by the user.
TASK_TRANSITIONS: dict[T, frozenset[T]] = {
    T.PENDING: frozenset({T.UPLOADING, T.COMPLETED, T.PARTIALLY_FAILED, T.FAILED, T.CANCELLED}),
    T.UPLOADING: frozenset({T.COMPLETED, T.PARTIALLY_FAILED, T.FAILED, T.CANCELLED, T.PENDING}),
    # a retried file re-opens a finished task
    T.PARTIALLY_FAILED: frozenset({T.UPLOADING, T.PENDING, T.CANCELLED}),
    T.FAILED: frozenset({T.UPLOADING, T.PENDING, T.CANCELLED}),
    T.COMPLETED: frozenset(),
    T.CANCELLED: frozenset(),
}

# Counter column per file status (pending and uploading are total minus the others).
_COUNTER = {
    F.COMPLETED: "completed_files",
    F.INSTANT: "instant_files",
    F.FAILED: "failed_files",
    F.CANCELLED: "cancelled_files",
}
TERMINAL_FILE = frozenset({F.COMPLETED, F.INSTANT, F.CANCELLED})


def can_move_file(current: str, target: str) -> bool:
    return F(target) in FILE_TRANSITIONS[F(current)]


def file_sources(target: F) -> tuple[str, ...]:
    return tuple(str(s) for s, targets in FILE_TRANSITIONS.items() if target in targets)


def derive_task_status(task: UploadTask) -> T:
    if task.status == T.CANCELLED:
        return T.CANCELLED
    succeeded = task.completed_files + task.instant_files
    finished = succeeded + task.failed_files + task.cancelled_files
    if finished < task.total_files:
        return T.UPLOADING if task.started_at is not None or finished else T.PENDING
    if task.failed_files == 0 and task.cancelled_files == 0:
        return T.COMPLETED
    if succeeded == 0 and task.failed_files == 0:
        return T.CANCELLED
    if succeeded == 0:
        return T.FAILED
    return T.PARTIALLY_FAILED


def task_event(task: UploadTask, event_type: str = "upload.task", **extra: Any) -> dict[str, Any]:
    return {
        "type": event_type,
        "data": {
            "task_id": str(task.id),
            "status": task.status,
            "total_files": task.total_files,
            "total_bytes": task.total_bytes,
            "completed_files": task.completed_files,
            "instant_files": task.instant_files,
            "failed_files": task.failed_files,
            "cancelled_files": task.cancelled_files,
            "done_bytes": task.done_bytes,
            "saved_bytes": task.saved_bytes,
            **extra,
        },
        "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def announce(session: AsyncSession, task: UploadTask, event: dict[str, Any]) -> None:
    """Publish on the owner's live channel once the transaction commits."""
    bus = database_of(session).bus
    user_id = task.user_id
    on_commit(session, lambda: publish_soon(bus, user_id, event))


async def refresh_task_status(session: AsyncSession, task: UploadTask) -> None:
    target = derive_task_status(task)
    if target == task.status:
        return
    if target not in TASK_TRANSITIONS[T(task.status)]:
        # Derivation disagrees with the table: a bug, not a user error. Refuse loudly.
        raise AssertionError(f"upload task {task.id}: {task.status} -> {target} not allowed")
    task.status = target
    now = datetime.now(UTC)
    if target in (T.COMPLETED, T.PARTIALLY_FAILED, T.FAILED, T.CANCELLED):
        task.finished_at = now
    else:
        task.finished_at = None
    await session.flush()
    announce(session, task, task_event(task, "upload.task.status"))


async def move_file(
    session: AsyncSession,
    task: UploadTask,
    file: UploadTaskFile,
    target: F,
    *,
    error: str | None = None,
    saved_bytes: int = 0,
    consumed_reservation: bool = False,
) -> None:
    """Move `file` to `target`, or raise 409 INVALID_STATE when its current state does not
    allow it (checked in the database, so two concurrent requests cannot both move it).

    `consumed_reservation`: the caller already turned this file's reservation into used bytes
    (drive.place_file(..., reserved=size)); otherwise a file leaving the reserved states gives
    its reservation back to the drive."""
    current = F(file.status)
    if not can_move_file(current, target):
        raise AppError(
            E.INVALID_STATE,
            message=f"a {current} file cannot become {target}",
            details={"status": str(current), "target": str(target)},
        )
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": str(target), "updated_at": now}
    if target == F.UPLOADING:
        values["attempts"] = UploadTaskFile.attempts + 1
        values["started_at"] = now
        values["error"] = None
    if target in (F.COMPLETED, F.INSTANT):
        values["completed_at"] = now
        values["bytes_received"] = file.size if target == F.COMPLETED else 0
    if target == F.FAILED:
        values["error"] = (error or "failed")[:2000]
    if target == F.PENDING:
        values["bytes_received"] = 0
    result = await session.execute(
        update(UploadTaskFile)
        .where(UploadTaskFile.id == file.id, UploadTaskFile.status == str(current))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AppError(E.INVALID_STATE, message="the file changed state concurrently")

    reservation_change = await _settle_reservation(
        session, task, file, target, consumed_reservation
    )
    counters: dict[str, Any] = {}
    if current in _COUNTER:
        column = _COUNTER[current]
        counters[column] = getattr(UploadTask, column) - 1
    if target in _COUNTER:
        column = _COUNTER[target]
        counters[column] = getattr(UploadTask, column) + 1
    if target in (F.COMPLETED, F.INSTANT):
        counters["done_bytes"] = UploadTask.done_bytes + file.size
    if saved_bytes:
        counters["saved_bytes"] = UploadTask.saved_bytes + saved_bytes
    if reservation_change:
        counters["reserved_bytes"] = UploadTask.reserved_bytes + reservation_change
    if target in (F.UPLOADING, F.INSTANT) and task.started_at is None:
        counters["started_at"] = now
    counters["updated_at"] = now
    await session.execute(
        update(UploadTask)
        .where(UploadTask.id == task.id)
        .values(**counters)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(task)
    await session.refresh(file)
    # The file's event goes out before the task status it may have changed: a client that stops
    # listening at "task completed" has seen every file.
    announce(
        session,
        task,
        task_event(
            task,
            "upload.file",
            file_id=str(file.id),
            file_status=str(target),
            path=file.relative_path,
        ),
    )
    await refresh_task_status(session, task)


async def _settle_reservation(
    session: AsyncSession,
    task: UploadTask,
    file: UploadTaskFile,
    target: F,
    consumed: bool,
) -> int:
    """Quota bookkeeping of one move; returns the change to the task's reserved bytes."""
    if file.reserved and target in (F.COMPLETED, F.INSTANT, F.FAILED, F.CANCELLED):
        if not consumed:
            await drives.release(session, task.drive_id, file.size)
        await _set_reserved(session, file, False)
        return -file.size
    if not file.reserved and target == F.PENDING:
        # a retry holds the quota again before any byte is accepted
        await drives.reserve(session, task.drive_id, file.size)
        await _set_reserved(session, file, True)
        return file.size
    return 0


async def _set_reserved(session: AsyncSession, file: UploadTaskFile, value: bool) -> None:
    await session.execute(
        update(UploadTaskFile)
        .where(UploadTaskFile.id == file.id)
        .values(reserved=value)
        .execution_options(synchronize_session=False)
    )


# -- batched moves -----------------------------------------------------------------------------
# Targets where a file stops holding quota: the only ones a batch may move to (a batch retry to
# pending would have to reserve per file and is done one file at a time by move_file).
_BATCH_TARGETS = frozenset({F.COMPLETED, F.INSTANT, F.FAILED, F.CANCELLED})
_BATCH_CHUNK = 2000


@dataclass(slots=True)
class BatchMove:
    """What a batched move did: the files it moved (id -> size) and the reservation they held."""

    moved: dict[int, int] = field(default_factory=dict)
    released: int = 0

    @property
    def moved_bytes(self) -> int:
        return sum(self.moved.values())


async def move_files(
    session: AsyncSession,
    task: UploadTask,
    file_ids: list[int],
    target: F,
    *,
    error: str | None = None,
    count_saved: bool = False,
    consumed_reservation: bool = False,
) -> BatchMove:
    """`move_file` for many files of `task` (`file_ids` must be its files) in a few statements
    (cancelling 10,000 files, an instant-upload batch). Files whose current state does not allow
    `target` are skipped, not an error: the returned BatchMove lists the ones moved. Rows are
    locked before they move (chunks of 2,000), so a concurrent request cannot move a file twice.

    `count_saved`: the moved files' sizes are added to the task's saved bytes (instant upload).
    `consumed_reservation`: the caller turns the reservation the moved files held
    (`BatchMove.released`) into used bytes itself (`charge(..., reserved=released)`); otherwise
    it goes back to the drive here. One counter update, one status refresh and one live event
    for the whole batch."""
    if target not in _BATCH_TARGETS:
        raise ValueError(f"batched moves cannot target {target}")
    result = BatchMove()
    if not file_ids:
        return result
    # Core statements: no ORM bookkeeping for 10,000 rows
    files = cast(Table, UploadTaskFile.__table__)
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": str(target), "updated_at": now}
    if target in (F.COMPLETED, F.INSTANT):
        values["completed_at"] = now
        values["bytes_received"] = files.c.size if target == F.COMPLETED else 0
    if target == F.FAILED:
        values["error"] = (error or "failed")[:2000]
    per_source: dict[F, int] = {}
    sources = file_sources(target)
    unique_ids = list(dict.fromkeys(file_ids))
    for start in range(0, len(unique_ids), _BATCH_CHUNK):
        chunk = unique_ids[start : start + _BATCH_CHUNK]
        # Read and lock the rows (PostgreSQL; SQLite's writer holds the database), then move
        # them with one update. By primary key only: with task_id in the WHERE clause too,
        # PostgreSQL's generic plan for these repeated statements scans the task's files.
        rows = (
            await session.execute(
                select(files.c.id, files.c.task_id, files.c.status, files.c.size, files.c.reserved)
                .where(files.c.id.in_(chunk), files.c.status.in_(sources))
                .with_for_update()
            )
        ).all()
        if not rows:
            continue
        for file_id, task_id, status, size, reserved in rows:
            if task_id != task.id:  # a caller bug; the request rolls back
                raise AssertionError(f"task file {file_id} is not in task {task.id}")
            result.moved[file_id] = size
            per_source[F(status)] = per_source.get(F(status), 0) + 1
            if reserved:
                result.released += size
        moved = await session.execute(
            update(files)
            .where(files.c.id.in_([row[0] for row in rows]), files.c.status.in_(sources))
            .values(**values, reserved=False)
        )
        if moved.rowcount != len(rows):  # type: ignore[attr-defined]
            raise AppError(E.INVALID_STATE, message="files changed state concurrently")
    if not result.moved:
        return result
    if result.released and not consumed_reservation:
        await drives.release(session, task.drive_id, result.released)
    counters: dict[str, Any] = {"updated_at": now}
    for source, count in per_source.items():
        if source in _COUNTER:
            column = _COUNTER[source]
            counters[column] = getattr(UploadTask, column) - count
    if target in _COUNTER:
        column = _COUNTER[target]
        counters[column] = getattr(UploadTask, column) + len(result.moved)
    if target in (F.COMPLETED, F.INSTANT):
        counters["done_bytes"] = UploadTask.done_bytes + result.moved_bytes
    if count_saved:
        counters["saved_bytes"] = UploadTask.saved_bytes + result.moved_bytes
    if result.released:
        counters["reserved_bytes"] = UploadTask.reserved_bytes - result.released
    if target == F.INSTANT and task.started_at is None:
        counters["started_at"] = now
    await session.execute(
        update(UploadTask)
        .where(UploadTask.id == task.id)
        .values(**counters)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(task)
    # One event for the batch, before the task status it may change (as move_file does).
    announce(
        session,
        task,
        task_event(task, "upload.files", file_status=str(target), count=len(result.moved)),
    )
    await refresh_task_status(session, task)
    return result
