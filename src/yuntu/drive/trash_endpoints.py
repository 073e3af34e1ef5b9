"""Trash endpoints: list, restore, purge one item, empty. Mounted by item_endpoints.

Trashed files keep counting in the drive's used_bytes until they are purged (here, or by the
daily `drive.purge_trash` job after `trash_retention_days`)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Body, Depends, Path

from yuntu.drive import trash
from yuntu.drive.access import Level, get_drive
from yuntu.drive.paths import Conflict
from yuntu.drive.schemas import ItemGone, Restored, RestoreIn, TrashEmptied, TrashItemOut
from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params

router = make_router(tags=["drive"], responses=error_responses(401, 404))
DriveId = Annotated[Id, Path(description="Drive id")]
ItemType = Annotated[Literal["file", "folder"], Path(description="file or folder")]
ItemId = Annotated[Id, Path(description="Id of a trashed file or folder (a trash root)")]
Pagination = Annotated[PageParams, Depends(page_params)]


@router.get("/drives/{drive_id}/trash", summary="Items in the trash")
async def list_trash(
    drive_id: DriveId, auth: CurrentUser, session: DbSession, pagination: Pagination
) -> Envelope[Page[TrashItemOut]]:
    """Trash roots (what was deleted, not each file inside a deleted folder), most recent
    first, with their original paths."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.READ)
    rows, total = await trash.list_trash(session, drive, pagination)
    items = [TrashItemOut.model_validate(row, from_attributes=True) for row in rows]
    return Envelope(data=Page[TrashItemOut](**make_page(items, total, pagination)))


@router.post(
    "/drives/{drive_id}/trash/{item_type}/{item_id}/restore",
    summary="Restore a trashed item",
    responses=error_responses(403, 409),
)
async def restore(
    drive_id: DriveId,
    item_type: ItemType,
    item_id: ItemId,
    auth: CurrentUser,
    session: DbSession,
    body: Annotated[RestoreIn | None, Body()] = None,
) -> Envelope[Restored]:
    """The item and everything trashed with it come back: into the original folder when it
    is still there, else into the root. A taken name gets a free one (`conflict: rename`, the
    default) or answers 409 NAME_CONFLICT (`conflict: error`)."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.WRITE, for_update=True)
    conflict = Conflict((body or RestoreIn()).conflict)
    item, path = await trash.restore(session, drive, item_type, item_id, auth.user.id, conflict)
    return Envelope(data=Restored(type=item_type, id=item.id, name=item.name, path=path))


@router.delete(
    "/drives/{drive_id}/trash/{item_type}/{item_id}",
    summary="Purge one trashed item for good",
    responses=error_responses(403, 409),
)
async def purge(
    drive_id: DriveId, item_type: ItemType, item_id: ItemId, auth: CurrentUser, session: DbSession
) -> Envelope[ItemGone]:
    """Every version of every file in it is released (quota freed at once; the content is
    deleted by the blob GC once nothing references it). 409 INVALID_STATE while an unfinished
    upload targets the folder."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.WRITE, for_update=True)
    await trash.purge_item(session, drive, item_type, item_id, auth.user.id)
    return Envelope(data=ItemGone(type=item_type, id=item_id, purged=True))


@router.delete(
    "/drives/{drive_id}/trash", summary="Empty the trash", responses=error_responses(403)
)
async def empty(drive_id: DriveId, auth: CurrentUser, session: DbSession) -> Envelope[TrashEmptied]:
    """Purges every trash root; folders an unfinished upload targets are kept (`skipped`)."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.WRITE, for_update=True)
    result = await trash.empty_trash(session, drive, auth.user.id)
    return Envelope(
        data=TrashEmptied(
            purged_files=result.files, purged_folders=result.folders, skipped=result.skipped
        )
    )
