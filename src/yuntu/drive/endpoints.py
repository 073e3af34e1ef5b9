"""Drive endpoints (盘符): create, list, the default drive, detail with usage, settings, delete,
and the drive's operation log. Every drive lookup goes through `access.get_drive`: a drive the
caller cannot see answers 404, one they cannot change 403."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Path, Query

from yuntu.drive import drives, oplog
from yuntu.drive.access import Level, get_drive
from yuntu.drive.schemas import (
    DriveCreate,
    DriveDeleted,
    DriveDetail,
    DriveOut,
    DriveUpdate,
    DriveUsage,
    OperationOut,
)
from yuntu.drive.service import ensure_default_drive
from yuntu.identity.deps import CurrentUser, DbSession
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params, paginate

router = make_router(tags=["drive"], responses=error_responses(401))
DriveId = Annotated[Id, Path(description="Drive id")]
Pagination = Annotated[PageParams, Depends(page_params)]
OpName = Literal[
    "create", "upload", "move", "copy", "rename", "delete", "restore", "purge", "overwrite"
]
assert set(OpName.__args__) == oplog.OPS  # type: ignore[attr-defined]


@router.post(
    "/drives",
    status_code=201,
    summary="Create a drive",
    responses=error_responses(403, 404),
)
async def create_drive(
    body: DriveCreate, auth: CurrentUser, session: DbSession
) -> Envelope[DriveOut]:
    """A personal drive, or with `team_id` a team drive: that needs the admin or owner role in
    the team (403 for other members, 404 for non-members). `quota_bytes: null` is unlimited."""
    drive = await drives.new_drive(session, auth.user.id, body.model_dump())
    role = await drives.role_on(session, drive, auth.user.id)
    return Envelope(data=DriveOut(**drives.drive_out(drive, role)))


@router.get("/drives", summary="My drives (personal and team)")
async def list_drives(
    auth: CurrentUser, session: DbSession, pagination: Pagination
) -> Envelope[Page[DriveOut]]:
    """Personal drives first (the default drive, created on first use, leading), then the
    drives of every team the caller belongs to, with the caller's role on each."""
    await ensure_default_drive(session, auth.user.id, writable=False)
    rows, total = await drives.list_drives(session, auth.user.id, pagination)
    items = [DriveOut(**drives.drive_out(drive, role)) for drive, role in rows]
    return Envelope(data=Page[DriveOut](**make_page(items, total, pagination)))


@router.get("/drives/default", summary="My default drive")
async def default_drive(auth: CurrentUser, session: DbSession) -> Envelope[DriveDetail]:
    """Created on first use (quota from `drive_default_quota_bytes`)."""
    drive = await ensure_default_drive(session, auth.user.id, writable=False)
    usage = await drives.usage(session, drive)
    return Envelope(
        data=DriveDetail(**drives.drive_out(drive, "owner"), usage=DriveUsage.model_validate(usage))
    )


@router.get("/drives/{drive_id}", summary="A drive with its usage", responses=error_responses(404))
async def get_drive_detail(
    drive_id: DriveId, auth: CurrentUser, session: DbSession
) -> Envelope[DriveDetail]:
    """Usage: live files and folders; used bytes (every kept version, trashed files included
    until purged); reserved bytes (unfinished uploads); quota and available (-1: unlimited);
    logical bytes (sum of versions) against stored bytes (the distinct blobs they reference,
    which copies and deduplication share); trash bytes. Plus the caller's role."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.READ)
    role = await drives.role_on(session, drive, auth.user.id)
    usage = await drives.usage(session, drive)
    return Envelope(
        data=DriveDetail(**drives.drive_out(drive, role), usage=DriveUsage.model_validate(usage))
    )


@router.put(
    "/drives/{drive_id}",
    summary="Change a drive's settings",
    responses=error_responses(403, 404),
)
async def update_drive(
    drive_id: DriveId, body: DriveUpdate, auth: CurrentUser, session: DbSession
) -> Envelope[DriveDetail]:
    """Needs the manage level (personal owner, team admin or owner). Only the fields present
    change. A quota below what the drive already holds (used + reserved) answers
    413 QUOTA_EXCEEDED with the current figures in `details`; nothing changes."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.MANAGE)
    drive = await drives.update_drive(session, drive, body.model_dump(exclude_unset=True))
    role = await drives.role_on(session, drive, auth.user.id)
    usage = await drives.usage(session, drive)
    return Envelope(
        data=DriveDetail(**drives.drive_out(drive, role), usage=DriveUsage.model_validate(usage))
    )


@router.delete(
    "/drives/{drive_id}",
    summary="Delete a drive and every file in it",
    responses=error_responses(403, 404, 409),
)
async def delete_drive(
    drive_id: DriveId, auth: CurrentUser, session: DbSession
) -> Envelope[DriveDeleted]:
    """Needs the own level (personal owner, team owner). Every file goes (each blob reference
    released; unreferenced content is deleted by the blob GC after its grace period), then the
    drive. The default drive, and a drive with unfinished upload tasks, answer
    409 INVALID_STATE."""
    drive = await get_drive(session, drive_id, auth.user.id, Level.OWN, for_update=True)
    purged, freed = await drives.delete_drive(session, drive)
    return Envelope(data=DriveDeleted(id=drive_id, purged_files=purged, freed_bytes=freed))


@router.get(
    "/drives/{drive_id}/operations",
    summary="The drive's operation log",
    responses=error_responses(404),
)
async def list_operations(
    drive_id: DriveId,
    auth: CurrentUser,
    session: DbSession,
    pagination: Pagination,
    op: Annotated[OpName | None, Query(description="Only this operation")] = None,
) -> Envelope[Page[OperationOut]]:
    """Newest first: who created, uploaded, moved, copied, renamed, deleted, restored or purged
    what, with the paths before and after."""
    await get_drive(session, drive_id, auth.user.id, Level.READ)
    rows, total = await paginate(session, drives.operations_statement(drive_id, op), pagination)
    items = [OperationOut.model_validate(row) for row in rows]
    return Envelope(data=Page[OperationOut](**make_page(items, total, pagination)))
