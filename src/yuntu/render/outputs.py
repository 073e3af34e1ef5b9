"""Render outputs: the files agents upload for the frames they render, where they land in the
task owner's drive, and how the owner lists, zips and downloads them.

An output is an ordinary drive file at `/renders/{task name}-{task id}/{filename}` of the
task's drive (deduplicated, quota-counted, listed like any upload: `scenes.save_staged` places
it), plus a `RenderOutput` row holding one more reference on the same blob. That reference
keeps the rendered bytes downloadable from the task whatever the user later does to the drive
file (rename, move, delete); it goes when the output is replaced or the task's cloud data is
deleted.

Writes follow the upload rules: the body streams to a pending object with no transaction open,
then one short transaction re-checks the agent's attempt under the frame's row lock, replaces
any earlier output of the same name, places the file and records the row. Lock order: the
frame, then its task (as render.frame_states), then the drive's rows. Any failure leaves
nothing: no row, no reservation, no stored object.
"""

from __future__ import annotations

import mimetypes
import unicodedata
from collections.abc import AsyncIterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import StreamingResponse

from yuntu.drive import files as drive_files
from yuntu.drive import folders as drive_folders
from yuntu.drive import oplog, tree
from yuntu.drive import service as drives
from yuntu.drive.access import Level, get_drive, level_on
from yuntu.drive.archive import zip_response
from yuntu.drive.downloads import sign_blob, store_of_db
from yuntu.drive.paths import MAX_NAME_BYTES, clean_name, join
from yuntu.drive.scenes import Placed, save_staged
from yuntu.drive.zipstream import Member, unique_names
from yuntu.kit.db import Database, database_of
from yuntu.kit.errors import AppError, E
from yuntu.kit.schemas import PageParams
from yuntu.models.drive import Blob, Drive, DriveFile, Folder
from yuntu.models.render import FrameTask, RenderAgent, RenderOutput, RenderTask
from yuntu.render import scheduling
from yuntu.storage import blobs

RENDERS_FOLDER = "renders"
_SUFFIX_FALLBACK = "task"


@dataclass(frozen=True, slots=True)
class StoredOutput:
    output_id: int
    filename: str
    frame: int
    size: int
    sha256: str
    path: str
    drive_file_id: int
    duplicated: bool


def folder_name(task_name: str, task_id: int) -> str:
    """`{task name}-{task id}` as one safe folder name: separators and control characters
    become `_`, and the name is cut (on a character boundary) so the whole fits 255 bytes."""
    text = unicodedata.normalize("NFC", task_name)
    text = "".join(
        "_" if ch in "/\\" or unicodedata.category(ch) == "Cc" else ch for ch in text
    ).strip()
    suffix = f"-{task_id}"
    budget = MAX_NAME_BYTES - len(suffix)
    text = text.encode()[:budget].decode(errors="ignore").rstrip() or _SUFFIX_FALLBACK
    return clean_name(f"{text}{suffix}")


def output_segments(task: RenderTask) -> list[str]:
    return [RENDERS_FOLDER, folder_name(task.name, task.id)]


def _mime(filename: str, declared: str | None) -> str | None:
    """The agent's content type unless it says nothing (octet-stream): then the drive guesses
    from the name, so a PNG is served as an image."""
    if declared and not declared.startswith("application/octet-stream"):
        return declared
    return mimetypes.guess_type(filename, strict=False)[0]


# -- upload ----------------------------------------------------------------------------------
def _check_frame_number(frame: FrameTask, number: int) -> None:
    if number not in frame.frames:
        raise AppError(
            E.VALIDATION_ERROR,
            details=[
                {"field": "query.frame", "message": f"not a frame of this frame task: {number}"}
            ],
        )


async def _previous(session: AsyncSession, task_id: int, filename: str) -> RenderOutput | None:
    return await session.scalar(
        select(RenderOutput).where(
            RenderOutput.task_id == task_id, RenderOutput.filename == filename
        )
    )


async def _precheck(
    db: Database, agent_id: int, frame_id: int, attempt: int, number: int, name: str, size: int
) -> RenderTask:
    """Refuse before any byte is streamed what the transaction would refuse anyway (a lost
    attempt, a wrong frame, a type or size the drive refuses, no room left). Not binding: the
    transaction checks again."""
    async with db.read_sessionmaker() as session:
        frame, task = await scheduling.held_frame(session, frame_id, agent_id, attempt)
        _check_frame_number(frame, number)
        drive = await get_drive(session, task.drive_id, task.user_id, Level.WRITE)
        drives.check_file_allowed(drive, name, size)
        if drive.quota_bytes is not None:
            previous = await _previous(session, task.id, name)
            freed = previous.size if previous is not None else 0
            if drive.used_bytes + drive.reserved_bytes + size - freed > drive.quota_bytes:
                raise AppError(E.QUOTA_EXCEEDED)
        session.expunge(task)
        return task


async def _drop_previous(session: AsyncSession, task: RenderTask, filename: str) -> None:
    """Replace semantics for a name uploaded again (a retried frame): the earlier output's
    reference and row go. Its drive file goes for good when it still sits, untouched in name,
    in the task's output folder: it is a failed attempt's image, so keeping it as an older
    version would silently keep charging the owner's quota, and trashing it would fill the
    trash with one copy per retry; the drive keeps one file per name. A file the user moved,
    renamed or deleted since is theirs and left alone."""
    previous = await _previous(session, task.id, filename)
    if previous is None:
        return
    await blobs.release_ref(session, previous.blob_id)
    file_id = previous.drive_file_id
    await session.execute(delete(RenderOutput).where(RenderOutput.id == previous.id))
    session.expunge(previous)
    if file_id is None:
        return
    path = "/" + "/".join(output_segments(task))
    in_place = await session.scalar(
        select(DriveFile.id)
        .join(Folder, Folder.id == DriveFile.folder_id)
        .where(
            DriveFile.id == file_id,
            DriveFile.drive_id == task.drive_id,
            DriveFile.name == filename,
            DriveFile.trashed_at.is_(None),
            Folder.path == path,
            Folder.trashed_at.is_(None),
        )
    )
    if in_place is None:
        return
    await tree.purge_files(session, task.drive_id, [file_id])
    oplog.record(
        session,
        drive_id=task.drive_id,
        actor_id=task.user_id,
        op="purge",
        item_type="file",
        item_id=file_id,
        before_path=join(path, filename),
        replaced_by="render output",
    )


async def _make_folder(session: AsyncSession, task: RenderTask) -> None:
    """mkdir -p of the output folder ahead of the placement, in a savepoint tried twice: two
    tasks' first outputs may both create `/renders`, and the one that loses that race must
    find the winner's folder rather than fail a frame. (One task's uploads queue on its row.)"""
    drive = await get_drive(session, task.drive_id, task.user_id, Level.WRITE)
    root = await tree.get_folder(session, drive, None)
    for last in (False, True):
        try:
            async with session.begin_nested():
                await tree.mkdir_p(session, drive, root, output_segments(task), task.user_id)
            return
        except IntegrityError:
            if last:
                raise


async def store_output(
    db: Database,
    agent: RenderAgent,
    frame_id: int,
    attempt: int,
    frame_number: int,
    filename: str,
    body: AsyncIterable[bytes],
    size: int,
    content_type: str | None = None,
) -> StoredOutput:
    """Stream one output of `attempt` of `frame_id` into the task owner's drive; see the
    module docstring. `size` is the declared length: a body of any other length keeps
    nothing (400 SIZE_MISMATCH)."""
    name = clean_name(filename, "filename")
    agent_id = agent.id
    task = await _precheck(db, agent_id, frame_id, attempt, frame_number, name, size)
    store = store_of_db(db)
    staged = await blobs.ingest(store, body, max_bytes=size)
    if staged.size != size:
        await blobs.discard(store, staged.key)
        raise AppError(E.SIZE_MISMATCH, details={"declared": size, "received": staged.size})
    held: dict[str, Any] = {}

    async def before(session: AsyncSession) -> None:
        frame, locked = await scheduling.held_frame(session, frame_id, agent_id, attempt, lock=True)
        _check_frame_number(frame, frame_number)
        await _drop_previous(session, locked, name)
        await _make_folder(session, locked)
        held["task"] = locked

    async def after(session: AsyncSession, placed: Placed) -> None:
        locked: RenderTask = held["task"]
        output = RenderOutput(
            task_id=locked.id,
            frame_id=frame_id,
            frame=frame_number,
            drive_file_id=placed.file_id,
            blob_id=placed.blob.id,
            filename=name,
            size=placed.size,
        )
        session.add(output)
        await session.flush()
        await blobs.add_ref(session, placed.blob.id)
        if locked.output_folder_id != placed.folder_id:
            locked.output_folder_id = placed.folder_id
            await session.flush()
        held["output_id"] = output.id

    placed = await save_staged(
        db,
        staged,
        drive_id=task.drive_id,
        user_id=task.user_id,
        folder_segments=output_segments(task),
        name=name,
        mime_type=_mime(name, content_type),
        source="render",
        before=before,
        after=after,
    )
    return StoredOutput(
        output_id=held["output_id"],
        filename=name,
        frame=frame_number,
        size=placed.size,
        sha256=placed.sha256,
        path=placed.path,
        drive_file_id=placed.file_id,
        duplicated=placed.duplicated,
    )


# -- reading -----------------------------------------------------------------------------------
async def owned_task(session: AsyncSession, user_id: int, task_id: int) -> RenderTask:
    """The user's render task; anyone else's answers 404 like a missing one."""
    task = await session.scalar(
        select(RenderTask).where(RenderTask.id == task_id, RenderTask.user_id == user_id)
    )
    if task is None:
        raise AppError(E.NOT_FOUND)
    return task


@dataclass(frozen=True, slots=True)
class OutputItem:
    id: int
    filename: str
    frame: int | None
    size: int
    sha256: str
    drive_file_id: int | None
    path: str | None
    download_url: str
    created_at: datetime


def _rows_statement(task_id: int) -> Any:
    """Outputs of a task with their blob and, when it is still live, their drive file and its
    folder (the current path)."""
    live_file = (DriveFile.id == RenderOutput.drive_file_id) & DriveFile.trashed_at.is_(None)
    return (
        select(RenderOutput, Blob, DriveFile, Folder.path)
        .join(Blob, Blob.id == RenderOutput.blob_id)
        .outerjoin(DriveFile, live_file)
        .outerjoin(Folder, Folder.id == DriveFile.folder_id)
        .where(RenderOutput.task_id == task_id)
        .order_by(RenderOutput.frame, RenderOutput.filename)
    )


async def list_outputs(
    session: AsyncSession,
    user_id: int,
    task_id: int,
    params: PageParams | None = None,
    *,
    ttl: int,
    base_url: str = "",
) -> tuple[list[OutputItem], int]:
    """One page of the task's outputs in frame order, each with a signed download link of its
    rendered bytes (valid `ttl` seconds), and how many there are in all."""
    params = params or PageParams(page=1, page_size=100)
    await owned_task(session, user_id, task_id)
    db = database_of(session)
    total = await session.scalar(
        select(func.count(RenderOutput.id)).where(RenderOutput.task_id == task_id)
    )
    rows = (
        await session.execute(
            _rows_statement(task_id).offset(params.offset).limit(params.page_size)
        )
    ).all()
    items = []
    for output, blob, file, folder_path in rows:
        mime = file.mime_type if file is not None else _mime(output.filename, None)
        link = await sign_blob(db, blob, output.filename, mime, ttl=ttl, base_url=base_url)
        items.append(
            OutputItem(
                id=output.id,
                filename=output.filename,
                frame=output.frame,
                size=output.size,
                sha256=blob.sha256,
                drive_file_id=file.id if file is not None else None,
                path=join(folder_path, file.name) if file is not None and folder_path else None,
                download_url=link.url,
                created_at=output.created_at,
            )
        )
    return items, int(total or 0)


async def outputs_zip(session: AsyncSession, user_id: int, task_id: int) -> StreamingResponse:
    """Every output of the task as a streamed store-only ZIP named by output filename (the
    drive's archive writer: Content-Length known up front). 409 INVALID_STATE with none yet."""
    task = await owned_task(session, user_id, task_id)
    rows = (
        await session.execute(
            select(RenderOutput.filename, RenderOutput.created_at, Blob.size, Blob.storage_key)
            .join(Blob, Blob.id == RenderOutput.blob_id)
            .where(RenderOutput.task_id == task.id)
            .order_by(RenderOutput.frame, RenderOutput.filename)
        )
    ).all()
    if not rows:
        raise AppError(E.INVALID_STATE, message="the task has no outputs yet")
    names = unique_names(row.filename for row in rows)
    members = [
        Member(name=name, size=row.size, storage_key=row.storage_key, modified=row.created_at)
        for name, row in zip(names, rows, strict=True)
    ]
    store = store_of_db(database_of(session))
    return zip_response(store, members, f"{folder_name(task.name, task.id)}.zip")


async def find_output(
    session: AsyncSession, user_id: int, task_key: str, filename: str
) -> tuple[DriveFile | None, Blob] | None:
    """For `/files/download/{task_id}/{filename}`: when `task_key` is one of the user's render
    tasks and `filename` one of its outputs, (its drive file if still live, the rendered
    bytes' blob); otherwise None, and the drive's own lookup answers."""
    if not (task_key.isascii() and task_key.isdigit() and len(task_key) <= 19):
        return None
    try:
        name = clean_name(filename, "filename")
    except AppError:
        return None
    row = (
        await session.execute(
            select(RenderOutput.drive_file_id, Blob)
            .join(RenderTask, RenderTask.id == RenderOutput.task_id)
            .join(Blob, Blob.id == RenderOutput.blob_id)
            .where(
                RenderTask.id == int(task_key),
                RenderTask.user_id == user_id,
                RenderOutput.filename == name,
            )
        )
    ).first()
    if row is None:
        return None
    file_id, blob = row
    file = None
    if file_id is not None:
        file = await session.scalar(
            select(DriveFile).where(DriveFile.id == file_id, DriveFile.trashed_at.is_(None))
        )
    return file, blob


# -- deleting a task's cloud data ---------------------------------------------------------------
async def delete_outputs(session: AsyncSession, task: RenderTask) -> int:
    """For deleting a task with `delete_cloud_data`: the outputs' rows and references go now;
    their drive files go to the drive's trash, as a user's own delete would send them: the
    output folder as one trash root (with anything the user put in it), plus any output file
    the user moved elsewhere. Trash rather than purge because this is a user's delete, and the
    drive's rule for those is a trash window in which they can restore (the daily purge job
    frees the quota afterwards); the trashed files keep their own version references, so
    `drive fsck` stays exact throughout. Files on a drive the owner can no longer write (a team
    drive they left) are the team's and stay. Returns how many outputs went."""
    rows = (
        await session.execute(
            select(RenderOutput.id, RenderOutput.blob_id, RenderOutput.drive_file_id).where(
                RenderOutput.task_id == task.id
            )
        )
    ).all()
    counts: dict[int, int] = {}
    for _output_id, blob_id, _file_id in rows:
        counts[blob_id] = counts.get(blob_id, 0) + 1
    await session.execute(delete(RenderOutput).where(RenderOutput.task_id == task.id))
    await blobs.release_refs(session, counts)
    drive = await session.get(Drive, task.drive_id)
    if drive is None:
        return len(rows)
    level = await level_on(session, drive, task.user_id)
    if level is None or level < Level.WRITE:
        return len(rows)
    if task.output_folder_id is not None:
        folder = await session.scalar(
            select(Folder).where(
                Folder.id == task.output_folder_id,
                Folder.drive_id == drive.id,
                Folder.trashed_at.is_(None),
                Folder.parent_id.is_not(None),
            )
        )
        if folder is not None:
            await drive_folders.trash_folder(session, drive, folder, task.user_id)
    file_ids = [file_id for _o, _b, file_id in rows if file_id is not None]
    for start in range(0, len(file_ids), 500):
        strays = await session.scalars(
            select(DriveFile).where(
                DriveFile.id.in_(file_ids[start : start + 500]),
                DriveFile.drive_id == drive.id,
                DriveFile.trashed_at.is_(None),
            )
        )
        for file in list(strays.all()):
            await drive_files.trash_file(session, drive, file, task.user_id)
    return len(rows)


__all__ = [
    "RENDERS_FOLDER",
    "OutputItem",
    "StoredOutput",
    "delete_outputs",
    "find_output",
    "folder_name",
    "list_outputs",
    "outputs_zip",
    "owned_task",
    "store_output",
]
