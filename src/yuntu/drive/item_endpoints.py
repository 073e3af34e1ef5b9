"""Folder endpoints and folder listings; the file and trash routers are mounted here too (this
module's router is the one the app registers).

Every folder lookup is scoped by the drive the caller was authorized on, so another drive's
folder id answers 404 exactly like a missing one. Every change to the tree (here, in the file
and trash routers) locks the drive row first: on PostgreSQL two concurrent moves could
otherwise build a cycle, or a move slip a live folder under one being trashed. SQLite already
serializes writers."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Path, Query

from yuntu.drive import folders, tree
from yuntu.drive.access import Level, get_drive
from yuntu.drive.file_endpoints import router as file_router
from yuntu.drive.paths import Conflict
from yuntu.drive.schemas import ChildOut, FolderCreate, FolderOut, FolderPatch, ItemGone
from yuntu.drive.trash_endpoints import router as trash_router
from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params

router = make_router(tags=["drive"], responses=error_responses(401, 404))
DriveId = Annotated[Id, Path(description="Drive id")]
FolderId = Annotated[Id, Path(description="Folder id")]
Pagination = Annotated[PageParams, Depends(page_params)]
Sort = Literal["name", "-name", "size", "-size", "updated", "-updated"]


@router.post(
    "/drives/{drive_id}/folders",
    status_code=201,
    summary="Create a folder (or a path, mkdir -p)",
    responses=error_responses(403, 409),
)
async def create_folder(
    drive_id: DriveId, body: FolderCreate, auth: CurrentUser, session: DbSession
) -> Envelope[FolderOut]:
    """`{parent_id (null: the root), name}`, or `{path: "/a/b/c"}` below `parent_id` (default
    the root). With `path`, missing parents answer 404 unless `parents: true` creates them
    (an existing final folder is then returned as it is). A taken name answers
    409 NAME_CONFLICT, or with `conflict: rename` gets a free name (`a (1)`). Bad names
    (`..`, `/`, control characters, over 255 bytes) answer 400 INVALID_PATH."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.WRITE, for_update=True)
    folder = await folders.create_folder(
        session,
        drive,
        auth.user.id,
        parent_id=body.parent_id,
        name=body.name,
        path=body.path,
        parents=body.parents,
        conflict=Conflict(body.conflict),
    )
    return Envelope(data=FolderOut.model_validate(folder))


@router.get("/drives/{drive_id}/folders/{folder_id}", summary="A folder")
async def get_folder(
    drive_id: DriveId, folder_id: FolderId, auth: CurrentUser, session: DbSession
) -> Envelope[FolderOut]:
    drive = await get_drive(session, drive_id, auth.user.id, Level.READ)
    folder = await tree.get_folder(session, drive, folder_id)
    return Envelope(data=FolderOut.model_validate(folder))


@router.get("/drives/{drive_id}/children", summary="List a folder: folders first, then files")
async def list_children(
    drive_id: DriveId,
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
    folder_id: Annotated[Id | None, Query(description="Folder (default: the root)")] = None,
    sort: Annotated[Sort, Query(description="name, size or updated; `-` for descending")] = "name",
) -> Envelope[Page[ChildOut]]:
    """Folders always come first (sorted by name, or by time for `updated`), then files.
    Pages are read through indexes, so a folder of 100,000 files lists as fast as a small one."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.READ)
    folder = await tree.get_folder(session, drive, folder_id)
    children, total = await folders.list_children(session, folder, sort, pagination)
    items = [ChildOut.model_validate(child, from_attributes=True) for child in children]
    return Envelope(data=Page[ChildOut](**make_page(items, total, pagination)))


@router.patch(
    "/drives/{drive_id}/folders/{folder_id}",
    summary="Rename and/or move a folder",
    responses=error_responses(403, 409),
)
async def patch_folder(
    drive_id: DriveId,
    folder_id: FolderId,
    body: FolderPatch,
    auth: CurrentUser,
    session: DbSession,
) -> Envelope[FolderOut]:
    """`name` renames, `parent_id` moves (null: the root); descendants' paths follow. Moving
    into itself or below itself, or touching the root, answers 409 INVALID_STATE; a taken
    name 409 NAME_CONFLICT unless `conflict: rename`."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.WRITE, for_update=True)
    folder = await tree.get_folder(session, drive, folder_id)
    folder = await folders.patch_folder(
        session,
        drive,
        folder,
        auth.user.id,
        name=body.name,
        move="parent_id" in body.model_fields_set,
        parent_id=body.parent_id,
        conflict=Conflict(body.conflict),
    )
    return Envelope(data=FolderOut.model_validate(folder))


@router.delete(
    "/drives/{drive_id}/folders/{folder_id}",
    summary="Move a folder to the trash",
    responses=error_responses(403, 409),
)
async def delete_folder(
    drive_id: DriveId, folder_id: FolderId, auth: CurrentUser, session: DbSession
) -> Envelope[ItemGone]:
    """The folder and its whole subtree go to the trash (restorable until purged; their files
    still count in used_bytes). The root answers 409 INVALID_STATE."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.WRITE, for_update=True)
    folder = await tree.get_folder(session, drive, folder_id)
    await folders.trash_folder(session, drive, folder, auth.user.id)
    return Envelope(data=ItemGone(type="folder", id=folder_id, trashed=True))


router.include_router(file_router)
router.include_router(trash_router)
