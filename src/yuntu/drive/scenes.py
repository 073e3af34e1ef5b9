"""The render client's file paths (`POST /files/upload`, `GET /files/download/{task}/{name}`),
and `save_staged`, which turns streamed bytes into a drive file (also used by the archive job).

Scene files land in the user's default drive under `/scenes/` (or `/scenes/{task_id}/`), so
they are ordinary drive files: listed, quota-counted and deduplicated like any other. A render
client's `task_id` is its own identifier (not necessarily one of ours): it is only used as a
folder name, validated like one (`..`, `/`, control characters answer 400 INVALID_PATH).

`save_staged` keeps the no-half-written rule for bytes that were streamed before the
transaction: the quota is reserved first (a refusal leaves only the pending object, which is
deleted), then the blob is adopted and the file placed, consuming the reservation. If the
transaction fails anyway, the pending object and any object adopted for a blob row that did not
survive are deleted.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import service as drives
from yuntu.drive import tree
from yuntu.drive.access import Level, get_drive, level_on
from yuntu.drive.downloads import finished_in_drive, store_of_db
from yuntu.drive.paths import Conflict, clean_name, join, split_path
from yuntu.kit.db import Database
from yuntu.kit.errors import AppError, E
from yuntu.kit.forms import StreamedForm, field_error
from yuntu.models.drive import Blob, Drive, DriveFile, Folder
from yuntu.models.uploads import UploadTask, UploadTaskFile
from yuntu.storage import blobs
from yuntu.storage.blobs import StagedObject

SCENES_FOLDER = "scenes"


@dataclass(frozen=True, slots=True)
class Placed:
    file_id: int
    drive_id: int
    folder_id: int
    path: str
    name: str
    size: int
    md5: str
    sha256: str
    blob: Blob
    duplicated: bool


async def save_staged(
    db: Database,
    staged: StagedObject,
    *,
    drive_id: int,
    user_id: int,
    folder_segments: list[str],
    name: str,
    mtime: datetime | None = None,
    mime_type: str | None = None,
    source: str = "web",
    before: Callable[[AsyncSession], Awaitable[None]] | None = None,
    after: Callable[[AsyncSession, Placed], Awaitable[None]] | None = None,
) -> Placed:
    """Place a staged object at `/<folder_segments>/<name>` of a drive the user may write
    (mkdir -p, conflict rename), in a transaction of its own. On any failure nothing is left:
    no row, no reservation, no stored object. `before` runs first in that transaction (a
    caller's checks and row locks, taken ahead of the drive's), `after` once the file is placed
    (a caller's own rows, e.g. a render output); either failing undoes everything."""
    store_of_db(db)  # storage must be configured before any row is written
    adopted: str | None = None
    try:
        async with db.transaction() as session:
            if before is not None:
                await before(session)
            drive = await get_drive(session, drive_id, user_id, Level.WRITE)
            drives.check_file_allowed(drive, name, staged.size)
            root = await tree.get_folder(session, drive, None)
            folder = await tree.mkdir_p(session, drive, root, folder_segments, user_id)
            await drives.reserve(session, drive.id, staged.size)
            duplicated = await session.scalar(select(Blob.id).where(Blob.sha256 == staged.sha256))
            blob = await blobs.adopt_staged(session, staged)
            adopted = blob.storage_key
            file = await tree.place_file(
                session,
                drive,
                folder,
                name,
                blob,
                user_id,
                conflict=Conflict.RENAME,
                reserved=staged.size,
                mtime=mtime,
                mime_type=mime_type,
                source=source,
            )
            placed = Placed(
                file_id=file.id,
                drive_id=drive.id,
                folder_id=folder.id,
                path=join(folder.path, file.name),
                name=file.name,
                size=file.size,
                md5=file.md5,
                sha256=file.sha256,
                blob=blob,
                duplicated=duplicated is not None,
            )
            if after is not None:
                await after(session, placed)
    except BaseException:
        await blobs.undo_staged(db, staged, adopted)
        raise
    return placed


# -- POST /files/upload ---------------------------------------------------------------------
TASK_KEY_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
_TASK_KEY = re.compile(TASK_KEY_PATTERN)


def scene_folder(task_key: str | None, field: str = "task_id") -> list[str]:
    """`/scenes` or `/scenes/{task_key}`; a task key is letters, digits, `.`, `_`, `-`."""
    if task_key is None:
        return [SCENES_FOLDER]
    if not _TASK_KEY.match(task_key):
        raise field_error(field, "1 to 128 letters, digits, `.`, `_` or `-`")
    return [SCENES_FOLDER, clean_name(task_key, field)]


def upload_name(raw: str | None) -> str:
    """The form file's name without any directory part a client may have sent."""
    base = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    return clean_name(base, "file")


async def upload_scene(
    db: Database, user_id: int, form: StreamedForm, *, query_task_key: str | None
) -> Placed:
    """Stream the form's file into the default drive's scene folder."""
    async with db.read_sessionmaker() as session:
        drive = await drives.ensure_default_drive(session, user_id, writable=False)
    store = store_of_db(db)
    staged = await blobs.ingest(store, form.file_chunks(), max_bytes=drive.max_file_size)
    try:
        if not form.found:
            raise field_error("body.file", "Field required")
        name = upload_name(form.filename)
        if "task_id" in form.fields:  # present but empty is an error, not "no task"
            segments = scene_folder(form.fields["task_id"], "body.task_id")
        else:
            segments = scene_folder(query_task_key, "query.task_id")
    except BaseException:
        await blobs.discard(store, staged.key)
        raise
    return await save_staged(
        db,
        staged,
        drive_id=drive.id,
        user_id=user_id,
        folder_segments=segments,
        name=name,
        source="render",
    )


# -- GET /files/download/{task_id}/{filename} -----------------------------------------------
async def _task_file(
    session: AsyncSession, user_id: int, task_key: str, path: str
) -> DriveFile | None:
    if not (task_key.isascii() and task_key.isdigit() and len(task_key) <= 19):
        return None
    task = await session.scalar(
        select(UploadTask).where(UploadTask.id == int(task_key), UploadTask.user_id == user_id)
    )
    if task is None:
        return None
    drive = await session.get(Drive, task.drive_id)
    if drive is None or await level_on(session, drive, user_id) is None:
        return None
    name = path.rsplit("/", 1)[-1]
    by_path = UploadTaskFile.relative_path.in_((path, f"/{path}"))
    condition = by_path if "/" in path else (by_path | (UploadTaskFile.name == name))
    return await session.scalar(
        select(DriveFile)
        .join(UploadTaskFile, UploadTaskFile.file_id == DriveFile.id)
        .where(finished_in_drive(task.id), condition)
        .order_by(UploadTaskFile.relative_path.in_((path, f"/{path}")).desc())
        .order_by(UploadTaskFile.position)
        .limit(1)
    )


async def _scene_file(
    session: AsyncSession, user_id: int, task_key: str, name: str
) -> DriveFile | None:
    drive = await session.scalar(
        select(Drive).where(Drive.owner_user_id == user_id, Drive.is_default.is_(True))
    )
    if drive is None:
        return None
    folder_id = await session.scalar(
        select(Folder.id).where(
            Folder.drive_id == drive.id,
            Folder.path == f"/{SCENES_FOLDER}/{task_key}",
            Folder.trashed_at.is_(None),
        )
    )
    if folder_id is None:
        return None
    return await tree.child_file(session, folder_id, name)


async def find_render_file(
    session: AsyncSession, user_id: int, task_key: str, filename: str
) -> tuple[DriveFile, Blob]:
    """`filename` (a name or a relative path) among the completed files of the user's upload
    task `task_key`, else in `/scenes/{task_key}/` of the default drive; 404 otherwise.
    Hostile names (`..`, empty segments, control characters) answer 400 INVALID_PATH."""
    segments = split_path(filename, "filename", allow_root=False)
    task_key = scene_folder(task_key, "path.task_id")[1]
    path = "/".join(segments)
    file = await _task_file(session, user_id, task_key, path)
    if file is None and len(segments) == 1:
        file = await _scene_file(session, user_id, task_key, segments[0])
    if file is None:
        raise AppError(E.NOT_FOUND)
    blob = await session.get(Blob, file.blob_id)
    if blob is None:
        raise AppError(E.NOT_FOUND)
    return file, blob
