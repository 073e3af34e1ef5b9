"""Drive CRUD and usage. Creation and quota live in `drive/service.py`; this module adds what
the API needs around them: the caller's role, usage figures, settings changes that can never
put a drive below what it already holds, and deletion that releases every blob reference."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, delete, distinct, func, select, true, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import tree
from yuntu.drive.access import Level, level_on, visible_drives_clause
from yuntu.drive.service import create_drive
from yuntu.drive.teams import membership
from yuntu.kit.errors import AppError, E
from yuntu.kit.schemas import PageParams
from yuntu.models.drive import (
    Blob,
    Drive,
    DriveFile,
    DriveOperation,
    FileVersion,
    Folder,
    TeamMember,
    TeamRole,
)
from yuntu.models.uploads import UploadTask
from yuntu.uploads.states import TaskStatus

LEVEL_ROLE = {
    Level.READ: TeamRole.VIEWER.value,
    Level.WRITE: TeamRole.MEMBER.value,
    Level.MANAGE: TeamRole.ADMIN.value,
    Level.OWN: TeamRole.OWNER.value,
}
UNFINISHED_TASKS = (TaskStatus.PENDING.value, TaskStatus.UPLOADING.value)
_BATCH = 500


def _extensions(values: list[str] | None) -> list[str]:
    seen: dict[str, None] = {}
    for value in values or []:
        seen[value.lower().lstrip(".")] = None
    return list(seen)


def available(drive: Drive) -> int:
    if drive.quota_bytes is None:
        return -1
    return max(0, drive.quota_bytes - drive.used_bytes - drive.reserved_bytes)


def percentage(drive: Drive) -> float:
    """(used + reserved) / quota, as a percentage; 0 for an unlimited drive."""
    held = drive.used_bytes + drive.reserved_bytes
    if drive.quota_bytes is None:
        return 0.0
    if drive.quota_bytes == 0:
        return 100.0 if held else 0.0
    return round(100.0 * held / drive.quota_bytes, 2)


def drive_out(drive: Drive, role: str) -> dict[str, Any]:
    return {
        "id": drive.id,
        "name": drive.name,
        "icon": drive.icon,
        "description": drive.description,
        "owner_user_id": drive.owner_user_id,
        "team_id": drive.team_id,
        "is_default": drive.is_default,
        "quota_bytes": drive.quota_bytes,
        "used_bytes": drive.used_bytes,
        "reserved_bytes": drive.reserved_bytes,
        "available_bytes": available(drive),
        "usage_percentage": percentage(drive),
        "allowed_types": list(drive.allowed_types or []),
        "denied_types": list(drive.denied_types or []),
        "max_file_size": drive.max_file_size,
        "root_folder_id": drive.root_folder_id,
        "role": role,
        "created_at": drive.created_at,
        "updated_at": drive.updated_at,
    }


async def role_on(session: AsyncSession, drive: Drive, user_id: int) -> str:
    level = await level_on(session, drive, user_id)
    assert level is not None  # the caller already passed access.get_drive
    return LEVEL_ROLE[level]


async def new_drive(session: AsyncSession, user_id: int, values: dict[str, Any]) -> Drive:
    """A personal drive, or a team drive when `team_id` is given (team admins and owners;
    other members 403, non-members 404)."""
    team_id = values.get("team_id")
    if team_id is not None:
        await membership(session, team_id, user_id, TeamRole.ADMIN)
    return await create_drive(
        session,
        name=values["name"],
        owner_user_id=None if team_id is not None else user_id,
        team_id=team_id,
        icon=values.get("icon"),
        description=values.get("description"),
        quota_bytes=values.get("quota_bytes"),
        allowed_types=_extensions(values.get("allowed_types")),
        denied_types=_extensions(values.get("denied_types")),
        max_file_size=values.get("max_file_size"),
        created_by=user_id,
    )


async def list_drives(
    session: AsyncSession, user_id: int, params: PageParams
) -> tuple[list[tuple[Drive, str]], int]:
    """Personal drives first (the default one leading), then team drives, with the caller's
    role on each."""
    clause = visible_drives_clause(user_id)
    total = await session.scalar(select(func.count()).select_from(Drive).where(clause))
    drives = (
        await session.scalars(
            select(Drive)
            .where(clause)
            .order_by(
                Drive.team_id.is_not(None), Drive.is_default.desc(), Drive.created_at, Drive.id
            )
            .offset(params.offset)
            .limit(params.page_size)
        )
    ).all()
    team_ids = {d.team_id for d in drives if d.team_id is not None}
    roles: dict[int, str] = {}
    if team_ids:
        rows = await session.execute(
            select(TeamMember.team_id, TeamMember.role).where(
                TeamMember.user_id == user_id, TeamMember.team_id.in_(team_ids)
            )
        )
        roles = {team_id: role for team_id, role in rows}
    out = [(d, TeamRole.OWNER.value if d.team_id is None else roles[d.team_id]) for d in drives]
    return out, int(total or 0)


async def usage(session: AsyncSession, drive: Drive) -> dict[str, Any]:
    files = await session.scalar(
        select(func.count())
        .select_from(DriveFile)
        .where(DriveFile.drive_id == drive.id, DriveFile.trashed_at.is_(None))
    )
    folders = await session.scalar(
        select(func.count())
        .select_from(Folder)
        .where(
            Folder.drive_id == drive.id, Folder.trashed_at.is_(None), Folder.parent_id.is_not(None)
        )
    )
    logical = await session.scalar(
        select(func.coalesce(func.sum(FileVersion.size), 0)).where(FileVersion.drive_id == drive.id)
    )
    distinct_blobs = select(distinct(FileVersion.blob_id)).where(FileVersion.drive_id == drive.id)
    stored = await session.scalar(
        select(func.coalesce(func.sum(Blob.size), 0)).where(Blob.id.in_(distinct_blobs))
    )
    trash_bytes, trash_files = (
        await session.execute(
            select(
                func.coalesce(func.sum(FileVersion.size), 0),
                func.count(distinct(DriveFile.id)),
            )
            .select_from(DriveFile)
            .join(FileVersion, FileVersion.file_id == DriveFile.id)
            .where(DriveFile.drive_id == drive.id, DriveFile.trashed_at.is_not(None))
        )
    ).one()
    return {
        "files": int(files or 0),
        "folders": int(folders or 0),
        "used_bytes": drive.used_bytes,
        "reserved_bytes": drive.reserved_bytes,
        "quota_bytes": drive.quota_bytes,
        "available_bytes": available(drive),
        "usage_percentage": percentage(drive),
        "logical_bytes": int(logical or 0),
        "stored_bytes": int(stored or 0),
        "trash_bytes": int(trash_bytes or 0),
        "trash_files": int(trash_files or 0),
    }


async def update_drive(session: AsyncSession, drive: Drive, changes: dict[str, Any]) -> Drive:
    """Apply the fields present. A quota below what the drive holds (used + reserved) answers
    413 QUOTA_EXCEEDED: the check and the write are one conditional UPDATE, so an upload that
    reserves at the same moment cannot slip between them."""
    for key in ("name",):
        if key in changes and changes[key] is None:
            raise AppError(
                E.VALIDATION_ERROR, details=[{"field": f"body.{key}", "message": "may not be null"}]
            )
    if "quota_bytes" in changes:
        quota = changes["quota_bytes"]
        condition = true() if quota is None else (Drive.used_bytes + Drive.reserved_bytes <= quota)
        result = await session.execute(
            update(Drive)
            .where(Drive.id == drive.id, condition)
            .values(quota_bytes=quota)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            await session.refresh(drive)
            raise AppError(
                E.QUOTA_EXCEEDED,
                message="the quota would be below what the drive already holds",
                details={
                    "used_bytes": drive.used_bytes,
                    "reserved_bytes": drive.reserved_bytes,
                    "quota_bytes": quota,
                },
            )
    for key in ("name", "icon", "description", "max_file_size"):
        if key in changes:
            setattr(drive, key, changes[key])
    for key in ("allowed_types", "denied_types"):
        if key in changes:
            setattr(drive, key, _extensions(changes[key]))
    await session.flush()
    await session.refresh(drive)
    return drive


async def has_unfinished_uploads(session: AsyncSession, drive_id: int) -> bool:
    found = await session.scalar(
        select(UploadTask.id)
        .where(UploadTask.drive_id == drive_id, UploadTask.status.in_(UNFINISHED_TASKS))
        .limit(1)
    )
    return found is not None


async def delete_drive(session: AsyncSession, drive: Drive) -> tuple[int, int]:
    """Delete every file (releasing each blob reference exactly), then the drive and, by
    cascade, its folders, finished upload tasks and operation log. The default drive and a
    drive with unfinished uploads answer 409 INVALID_STATE. Returns (files, bytes) freed."""
    if drive.is_default:
        raise AppError(E.INVALID_STATE, message="the default drive cannot be deleted")
    if await has_unfinished_uploads(session, drive.id):
        raise AppError(E.INVALID_STATE, message="the drive has unfinished upload tasks")
    freed_bytes = drive.used_bytes
    purged = 0
    while True:
        ids = list(
            (
                await session.scalars(
                    select(DriveFile.id).where(DriveFile.drive_id == drive.id).limit(_BATCH)
                )
            ).all()
        )
        if not ids:
            break
        await tree.purge_files(session, drive.id, ids)
        purged += len(ids)
    await session.execute(delete(Drive).where(Drive.id == drive.id))
    session.expunge(drive)
    return purged, freed_bytes


def operations_statement(drive_id: int, op: str | None) -> Select[tuple[DriveOperation]]:
    """The drive's operation log, newest first (index on drive_id, id)."""
    statement = select(DriveOperation).where(DriveOperation.drive_id == drive_id)
    if op is not None:
        statement = statement.where(DriveOperation.op == op)
    return statement.order_by(DriveOperation.id.desc())
