"""Drives and their quota. `used_bytes` and `reserved_bytes` change only through the functions
here, with conditional updates, so concurrent uploads can never pass the quota."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive.access import Level, get_drive
from yuntu.kit.db import database_of
from yuntu.kit.errors import AppError, E
from yuntu.models.drive import Drive, Folder

DEFAULT_DRIVE_NAME = "默认盘"


def settings_of(session: AsyncSession) -> Any:
    settings = database_of(session).settings
    if settings is None:
        from yuntu.settings import Settings

        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return settings


async def create_drive(
    session: AsyncSession,
    *,
    name: str,
    owner_user_id: int | None = None,
    team_id: int | None = None,
    icon: str | None = None,
    description: str | None = None,
    quota_bytes: int | None = None,
    is_default: bool = False,
    allowed_types: list[str] | None = None,
    denied_types: list[str] | None = None,
    max_file_size: int | None = None,
    created_by: int | None = None,
) -> Drive:
    drive = Drive(
        name=name,
        owner_user_id=owner_user_id,
        team_id=team_id,
        icon=icon,
        description=description,
        quota_bytes=quota_bytes,
        is_default=is_default,
        allowed_types=allowed_types or [],
        denied_types=denied_types or [],
        max_file_size=max_file_size,
    )
    session.add(drive)
    await session.flush()
    root = Folder(drive_id=drive.id, parent_id=None, name="", path="/", created_by=created_by)
    session.add(root)
    await session.flush()
    drive.root_folder_id = root.id
    await session.flush()
    return drive


async def _default_drive(session: AsyncSession, user_id: int) -> Drive | None:
    return await session.scalar(
        select(Drive).where(Drive.owner_user_id == user_id, Drive.is_default.is_(True))
    )


async def ensure_default_drive(session: AsyncSession, user_id: int, *, writable: bool) -> Drive:
    """The user's default drive, created on first use. From a read-only session the creation
    runs in a short transaction of its own (a read session must not write on SQLite)."""
    drive = await _default_drive(session, user_id)
    if drive is not None:
        return drive
    if not writable:
        async with database_of(session).transaction() as write_session:
            await ensure_default_drive(write_session, user_id, writable=True)
        drive = await _default_drive(session, user_id)
        assert drive is not None
        return drive
    quota = settings_of(session).drive_default_quota_bytes
    try:
        async with session.begin_nested():
            return await create_drive(
                session,
                name=DEFAULT_DRIVE_NAME,
                owner_user_id=user_id,
                quota_bytes=quota,
                is_default=True,
                created_by=user_id,
            )
    except IntegrityError:  # a concurrent first request created it
        drive = await _default_drive(session, user_id)
        if drive is None:
            raise
        return drive


# -- quota -------------------------------------------------------------------------------------
# "fetch" keeps a loaded Drive's counters current by primary key (RETURNING); the default
# "evaluate" would scan every object in the session, which is quadratic in a 10,000-file batch.
SYNC = "fetch"


def _fits(extra: Any) -> Any:
    return (Drive.quota_bytes.is_(None)) | (
        Drive.used_bytes + Drive.reserved_bytes + extra <= Drive.quota_bytes
    )


async def reserve(session: AsyncSession, drive_id: int, nbytes: int) -> None:
    """Hold `nbytes` of the quota for uploads about to happen; 413 QUOTA_EXCEEDED otherwise."""
    if nbytes <= 0:
        return
    result = await session.execute(
        update(Drive)
        .where(Drive.id == drive_id, _fits(nbytes))
        .values(reserved_bytes=Drive.reserved_bytes + nbytes)
        .execution_options(synchronize_session=SYNC)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AppError(E.QUOTA_EXCEEDED)


async def release(session: AsyncSession, drive_id: int, nbytes: int) -> None:
    if nbytes > 0:
        await session.execute(
            update(Drive)
            .where(Drive.id == drive_id)
            .values(reserved_bytes=Drive.reserved_bytes - nbytes)
            .execution_options(synchronize_session=SYNC)
        )


async def charge(session: AsyncSession, drive_id: int, nbytes: int, *, reserved: int = 0) -> None:
    """Count `nbytes` of new content as used. `reserved` bytes of it were held by an upload
    and move from reserved to used; the rest must fit the quota now."""
    extra = nbytes - reserved
    condition = _fits(extra) if extra > 0 else true()
    result = await session.execute(
        update(Drive)
        .where(Drive.id == drive_id, condition)
        .values(
            used_bytes=Drive.used_bytes + nbytes,
            reserved_bytes=Drive.reserved_bytes - reserved,
        )
        .execution_options(synchronize_session=SYNC)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise AppError(E.QUOTA_EXCEEDED)


async def uncharge(session: AsyncSession, drive_id: int, nbytes: int) -> None:
    if nbytes > 0:
        await session.execute(
            update(Drive)
            .where(Drive.id == drive_id)
            .values(used_bytes=Drive.used_bytes - nbytes)
            .execution_options(synchronize_session=SYNC)
        )


def check_file_allowed(drive: Drive, name: str, size: int) -> None:
    from yuntu.drive.paths import check_type_allowed

    check_type_allowed(name, drive.allowed_types, drive.denied_types)
    if drive.max_file_size is not None and size > drive.max_file_size:
        raise AppError(E.FILE_TOO_LARGE, details={"max_file_size": drive.max_file_size})


__all__ = [
    "Level",
    "charge",
    "check_file_allowed",
    "create_drive",
    "ensure_default_drive",
    "get_drive",
    "release",
    "reserve",
    "uncharge",
]
