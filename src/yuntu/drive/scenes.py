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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import service as drives
from yuntu.drive import tree
from yuntu.drive.access import Level, get_drive, level_on
from yuntu.drive.downloads import finished_in_drive, store_of_db
from yuntu.drive.paths import Conflict, clean_name, join, split_path
from yuntu.kit.db import Database
from yuntu.kit.errors import AppError, E
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


async def _blob_row_exists(db: Database, sha256: str) -> bool:
    async with db.read_sessionmaker() as session:
        return await session.scalar(select(Blob.id).where(Blob.sha256 == sha256)) is not None


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
    store = store_of_db(db)
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
        await blobs.discard(store, staged.key)
        orphan = adopted is not None and adopted != staged.key
        if orphan and not await _blob_row_exists(db, staged.sha256):
            assert adopted is not None
            await blobs.discard(store, adopted)
        raise
    return placed


# -- POST /files/upload ---------------------------------------------------------------------
TASK_KEY_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
_TASK_KEY = re.compile(TASK_KEY_PATTERN)
_MAX_FIELDS_BYTES = 64 * 1024


def _field_error(field: str, message: str) -> AppError:
    return AppError(E.VALIDATION_ERROR, details=[{"field": field, "message": message}])


def scene_folder(task_key: str | None, field: str = "task_id") -> list[str]:
    """`/scenes` or `/scenes/{task_key}`; a task key is letters, digits, `.`, `_`, `-`."""
    if task_key is None:
        return [SCENES_FOLDER]
    if not _TASK_KEY.match(task_key):
        raise _field_error(field, "1 to 128 letters, digits, `.`, `_` or `-`")
    return [SCENES_FOLDER, clean_name(task_key, field)]


def upload_name(raw: str | None) -> str:
    """The form file's name without any directory part a client may have sent."""
    base = (raw or "").replace("\\", "/").rsplit("/", 1)[-1]
    return clean_name(base, "file")


class StreamedForm:
    """A multipart/form-data body read in one pass: the bytes of the `file` field are handed
    on as they arrive (never spooled to a temporary file), the other fields (small, at most
    64 KiB in all) are collected. Only the first `file` part counts."""

    def __init__(self, content_type: str | None, body: AsyncIterable[bytes]) -> None:
        kind, params = parse_options_header(content_type or "")
        boundary = params.get(b"boundary")
        if kind == b"application/x-www-form-urlencoded":  # a form, but it cannot hold a file
            raise _field_error("body.file", "Field required (send multipart/form-data)")
        if kind != b"multipart/form-data" or not boundary:
            raise AppError(E.UNSUPPORTED_MEDIA_TYPE, message="send multipart/form-data")
        self.body = body
        self.fields: dict[str, str] = {}
        self.found = False
        self.filename: str | None = None
        self._out: list[bytes] = []
        self._kind = ""
        self._name = ""
        self._buffer = bytearray()
        self._field_bytes = 0
        self._header = b""
        self._value = b""
        self._disposition = b""
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def _part_begin(self) -> None:
        self._disposition = b""
        self._kind = ""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = _decode(options.get(b"name", b""))
        if name == "file" and b"filename" in options and not self.found:
            self._kind, self.found = "file", True
            self.filename = _decode(options[b"filename"])
        elif b"filename" in options or not name:
            self._kind = "skip"
        else:
            self._kind, self._name = "field", name
            self._buffer = bytearray()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._kind == "file":
            self._out.append(bytes(data[start:end]))
        elif self._kind == "field":
            self._field_bytes += end - start
            if self._field_bytes > _MAX_FIELDS_BYTES:
                raise AppError(E.PAYLOAD_TOO_LARGE, message="form fields are too large")
            self._buffer += data[start:end]

    def _end(self) -> None:
        self._ended = True

    def _part_end(self) -> None:
        if self._kind == "field":
            self.fields.setdefault(self._name, _decode(bytes(self._buffer)))
        self._kind = ""

    async def file_chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.body:
            try:
                self._parser.write(chunk)
            except FormParserError as exc:
                raise AppError(E.BAD_REQUEST, message="malformed multipart body") from exc
            if self._out:
                yield b"".join(self._out)
                self._out.clear()
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise AppError(E.BAD_REQUEST, message="malformed multipart body") from exc
        if not self._ended:  # a truncated body must not be stored as a shorter file
            raise AppError(E.BAD_REQUEST, message="the multipart body ended early")


def _decode(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return raw.decode("latin-1")


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
            raise _field_error("body.file", "Field required")
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
