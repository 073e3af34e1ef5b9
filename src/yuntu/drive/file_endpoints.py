"""File endpoints: metadata, versions, rename/move, copy, trash. Mounted by item_endpoints.

File ids are looked up inside the drive the caller was authorized on: another drive's file id
answers 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

from yuntu.drive import files, tree
from yuntu.drive.access import Level, get_drive
from yuntu.drive.paths import Conflict
from yuntu.drive.schemas import FileCopy, FileOut, FilePatch, ItemGone, VersionOut
from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id
from yuntu.models.drive import DriveFile

router = make_router(tags=["drive"], responses=error_responses(401, 404))
DriveId = Annotated[Id, Path(description="Drive id")]
FileId = Annotated[Id, Path(description="File id")]
WRITE_ERRORS = error_responses(403, 409)


async def file_out(session: DbSession, file: DriveFile) -> FileOut:
    columns = {key: getattr(file, key) for key in FileOut.model_fields if key not in _DERIVED}
    return FileOut(**columns, path=await tree.file_path(session, file))


_DERIVED = frozenset({"type", "path"})


@router.get("/drives/{drive_id}/files/{file_id}", summary="A file's metadata and path")
async def get_file(
    drive_id: DriveId, file_id: FileId, auth: CurrentUser, session: DbSession
) -> Envelope[FileOut]:
    drive = await get_drive(session, drive_id, auth.user.id, Level.READ)
    file = await files.get_file(session, drive, file_id)
    return Envelope(data=await file_out(session, file))


@router.get("/drives/{drive_id}/files/{file_id}/versions", summary="A file's kept versions")
async def list_versions(
    drive_id: DriveId, file_id: FileId, auth: CurrentUser, session: DbSession
) -> Envelope[list[VersionOut]]:
    """Newest first; `current` marks the one the file shows. Every kept version counts in the
    drive's used_bytes (at most `drive_max_versions` are kept)."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.READ)
    file = await files.get_file(session, drive, file_id)
    rows = await files.versions(session, file)
    out = []
    for row in rows:
        item = VersionOut.model_validate(row)
        item.current = row.version == file.version
        out.append(item)
    return Envelope(data=out)


@router.patch(
    "/drives/{drive_id}/files/{file_id}",
    summary="Rename and/or move a file",
    responses=WRITE_ERRORS,
)
async def patch_file(
    drive_id: DriveId, file_id: FileId, body: FilePatch, auth: CurrentUser, session: DbSession
) -> Envelope[FileOut]:
    """`name` renames, `folder_id` moves (null: the root). A taken name: `error` (409
    NAME_CONFLICT), `rename` (`a (1).txt`) or `overwrite` (this file's content becomes the
    new version of the file holding the name, whose metadata is returned; this file goes
    away). A new name must pass the drive's file-type policy (400 FILE_TYPE_NOT_ALLOWED)."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.WRITE, for_update=True)
    file = await files.get_file(session, drive, file_id)
    result = await files.patch_file(
        session,
        drive,
        file,
        auth.user.id,
        name=body.name,
        move="folder_id" in body.model_fields_set,
        folder_id=body.folder_id,
        conflict=Conflict(body.conflict),
    )
    return Envelope(data=await file_out(session, result))


@router.post(
    "/drives/{drive_id}/files/{file_id}/copy",
    status_code=201,
    summary="Copy a file (shares the stored content)",
    responses={**WRITE_ERRORS, **error_responses(413)},
)
async def copy_file(
    drive_id: DriveId, file_id: FileId, body: FileCopy, auth: CurrentUser, session: DbSession
) -> Envelope[FileOut]:
    """Into `folder_id` of this drive or of `target_drive_id` (a drive you can write). No bytes
    are copied: the copy references the same blob. The target's quota is charged
    (413 QUOTA_EXCEEDED), its type policy and size limit apply."""
    source = await get_drive(session, drive_id, auth.user.id, Level.READ)
    target_id = body.target_drive_id or drive_id
    target = await get_drive(session, target_id, auth.user.id, Level.WRITE, for_update=True)
    file = await files.get_file(session, source, file_id)
    copy = await files.copy_file(
        session,
        source,
        file,
        target,
        auth.user.id,
        folder_id=body.folder_id,
        name=body.name,
        conflict=Conflict(body.conflict),
    )
    return Envelope(data=await file_out(session, copy))


@router.delete(
    "/drives/{drive_id}/files/{file_id}",
    summary="Move a file to the trash",
    responses=error_responses(403),
)
async def delete_file(
    drive_id: DriveId, file_id: FileId, auth: CurrentUser, session: DbSession
) -> Envelope[ItemGone]:
    """Restorable until purged; the file keeps counting in used_bytes until then."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.WRITE, for_update=True)
    file = await files.get_file(session, drive, file_id)
    await files.trash_file(session, drive, file, auth.user.id)
    return Envelope(data=ItemGone(type="file", id=file_id, trashed=True))
