"""Packages: create, find, list, update, delete. Every change is audited (who, what, before and
after, when, from which address); the caller's transaction holds the change and its audit entry
together."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.admin import audit
from yuntu.kit.db import like_literal
from yuntu.kit.errors import AppError, E
from yuntu.models.packages import Package, PackageVersion
from yuntu.packages.states import PackageStatus, package_status
from yuntu.storage import blobs

PLATFORMS = ("android", "ios", "windows", "mac", "linux", "other")
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a user, or a machine client's API key; and from which address."""

    user_id: int | None
    api_key_id: int | None
    ip: str | None


def name_key(name: str) -> str | None:
    """The lookup key of a package name, or None when it cannot be one."""
    if not _NAME.match(name):
        return None
    return name.casefold()


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    target_id: int,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    target_type: str = "package",
) -> None:
    await audit.record(
        session,
        actor_user_id=actor.user_id,
        actor_api_key_id=actor.api_key_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        ip=actor.ip,
        before=before,
        after=after,
    )


def snapshot(package: Package) -> dict[str, Any]:
    """The audited fields of a package."""
    return {
        "name": package.name,
        "platform": package.platform,
        "description": package.description,
        "download_name": package.download_name,
        "disabled": package.disabled,
        "current_version_id": _str(package.current_version_id),
    }


def _str(value: int | None) -> str | None:
    return None if value is None else str(value)


async def get(session: AsyncSession, package_id: int, *, lock: bool = False) -> Package:
    stmt = select(Package).where(Package.id == package_id)
    if lock:
        stmt = stmt.with_for_update()
    package = await session.scalar(stmt)
    if package is None:
        raise AppError(E.NOT_FOUND)
    return package


async def find(session: AsyncSession, *, package_id: int | None, name: str | None) -> Package:
    """By id or by name (case-insensitive); a malformed name is simply not found."""
    if package_id is not None:
        return await get(session, package_id)
    key = name_key(name or "")
    package = (
        None
        if key is None
        else await session.scalar(select(Package).where(Package.name_key == key))
    )
    if package is None:
        raise AppError(E.NOT_FOUND)
    return package


def list_statement(
    *,
    name: str | None,
    platform: str | None,
    status: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
) -> Select[tuple[Package]]:
    stmt = select(Package)
    if name:
        pattern = f"%{like_literal(name.casefold())}%"
        stmt = stmt.where(Package.name_key.like(pattern, escape="\\"))
    if platform:
        stmt = stmt.where(Package.platform == platform)
    if status:
        stmt = stmt.where(Package.status == status)
    if created_from:
        stmt = stmt.where(Package.created_at >= created_from)
    if created_to:
        stmt = stmt.where(Package.created_at < created_to)
    return stmt.order_by(Package.created_at.desc(), Package.id.desc())


def _check_name(name: str) -> str:
    key = name_key(name)
    if key is None:
        raise AppError(
            E.VALIDATION_ERROR,
            details=[{"field": "body.name", "message": "1 to 100 letters, digits, . _ -"}],
        )
    return key


async def _name_free(session: AsyncSession, key: str, package_id: int | None = None) -> None:
    stmt = select(Package.id).where(Package.name_key == key)
    if package_id is not None:
        stmt = stmt.where(Package.id != package_id)
    if await session.scalar(stmt) is not None:
        raise AppError(E.PACKAGE_NAME_TAKEN)


async def create(
    session: AsyncSession,
    actor: Actor,
    *,
    name: str,
    platform: str,
    description: str,
    download_name: str | None,
) -> Package:
    key = _check_name(name)
    await _name_free(session, key)
    package = Package(
        name=name,
        name_key=key,
        platform=platform,
        description=description,
        download_name=download_name or "",
        status=PackageStatus.NO_VERSION,
        created_by=actor.user_id,
    )
    try:
        async with session.begin_nested():
            session.add(package)
    except IntegrityError:  # created by someone else a moment ago
        raise AppError(E.PACKAGE_NAME_TAKEN) from None
    await record(session, actor, "package.create", package.id, after=snapshot(package))
    return package


async def update(
    session: AsyncSession, actor: Actor, package_id: int, changes: dict[str, Any]
) -> Package:
    package = await get(session, package_id, lock=True)
    before = snapshot(package)
    if "name" in changes:
        key = _check_name(changes["name"])
        await _name_free(session, key, package.id)
        package.name, package.name_key = changes["name"], key
    for field in ("platform", "description", "download_name", "disabled"):
        if field in changes:
            setattr(package, field, changes[field])
    await refresh_status(session, package)
    after = snapshot(package)
    if after != before:
        package.updated_at = datetime.now(UTC)
        changed = [k for k in after if after[k] != before[k]]
        await record(
            session,
            actor,
            "package.update",
            package.id,
            before={k: before[k] for k in changed},
            after={k: after[k] for k in changed},
        )
    try:
        await session.flush()
    except IntegrityError:
        raise AppError(E.PACKAGE_NAME_TAKEN) from None
    return package


async def remove(session: AsyncSession, actor: Actor, package_id: int) -> None:
    """The package, every version and every processing log go; the stored files are released
    (collected after the grace period unless other rows hold them)."""
    package = await get(session, package_id, lock=True)
    before = snapshot(package) | {"versions": package.version_count}
    counts: dict[int, int] = {}
    rows = await session.execute(
        select(PackageVersion.blob_id, PackageVersion.artifact_blob_id).where(
            PackageVersion.package_id == package.id
        )
    )
    for blob_id, artifact_id in rows.all():
        for held in (blob_id, artifact_id):
            if held is not None:
                counts[held] = counts.get(held, 0) + 1
    package.current_version_id = None
    await session.flush()
    await session.execute(delete(PackageVersion).where(PackageVersion.package_id == package.id))
    await session.execute(delete(Package).where(Package.id == package.id))
    if counts:
        await blobs.release_refs(session, counts)
    await record(session, actor, "package.delete", package_id, before=before)


async def refresh_status(session: AsyncSession, package: Package) -> None:
    newest = await session.scalar(
        select(PackageVersion.status)
        .where(PackageVersion.package_id == package.id)
        .order_by(PackageVersion.seq.desc())
        .limit(1)
    )
    package.status = package_status(
        disabled=package.disabled,
        has_current=package.current_version_id is not None,
        newest_version_status=newest,
    )
