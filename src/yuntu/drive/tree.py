"""The folder tree and placing content in it: mkdir -p, name conflicts, new files and new
versions. Uploads, copies, render outputs and archives all end in `place_file`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import oplog
from yuntu.drive.paths import (
    Conflict,
    check_path_length,
    extension_of,
    first_free,
    guess_mime,
    join,
    numbered,
)
from yuntu.drive.service import charge, settings_of, uncharge
from yuntu.kit.db import bulk_insert, utcnow
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.models.drive import Blob, Drive, DriveFile, DriveOperation, FileVersion, Folder
from yuntu.storage import blobs


async def get_folder(session: AsyncSession, drive: Drive, folder_id: int | None) -> Folder:
    """A live folder of this drive (None: the root)."""
    target = drive.root_folder_id if folder_id is None else folder_id
    folder = await session.scalar(
        select(Folder).where(
            Folder.id == target, Folder.drive_id == drive.id, Folder.trashed_at.is_(None)
        )
    )
    if folder is None:
        raise AppError(E.NOT_FOUND)
    return folder


async def child_folder(session: AsyncSession, parent: Folder, name: str) -> Folder | None:
    return await session.scalar(
        select(Folder).where(
            Folder.parent_id == parent.id, Folder.name == name, Folder.trashed_at.is_(None)
        )
    )


async def child_file(session: AsyncSession, folder_id: int, name: str) -> DriveFile | None:
    return await session.scalar(
        select(DriveFile).where(
            DriveFile.folder_id == folder_id, DriveFile.name == name, DriveFile.trashed_at.is_(None)
        )
    )


async def names_like(session: AsyncSession, folder_id: int, name: str) -> set[str]:
    """Live names in a folder (files and folders) that could clash with `name` or its
    numbered forms: everything sharing its first characters."""
    stem = name.rpartition(".")[0] or name
    prefix = stem[: max(1, len(stem))]
    files = await session.scalars(
        select(DriveFile.name).where(
            DriveFile.folder_id == folder_id,
            DriveFile.trashed_at.is_(None),
            func.substr(DriveFile.name, 1, len(prefix)) == prefix,
        )
    )
    folders = await session.scalars(
        select(Folder.name).where(
            Folder.parent_id == folder_id,
            Folder.trashed_at.is_(None),
            func.substr(Folder.name, 1, len(prefix)) == prefix,
        )
    )
    return set(files) | set(folders)


async def mkdir(
    session: AsyncSession,
    drive: Drive,
    parent: Folder,
    name: str,
    actor_id: int | None,
    *,
    exist_ok: bool = False,
    conflict: Conflict = Conflict.ERROR,
) -> Folder:
    existing = await child_folder(session, parent, name)
    if existing is not None:
        if exist_ok:
            return existing
        if conflict != Conflict.RENAME:
            raise AppError(E.NAME_CONFLICT, details={"name": name})
    if existing is None and await child_file(session, parent.id, name) is not None:
        if conflict != Conflict.RENAME:
            raise AppError(E.NAME_CONFLICT, details={"name": name})
        existing = parent  # any non-None: fall through to renaming
    if existing is not None:
        name = first_free(name, await names_like(session, parent.id, name), is_file=False)
    path = join(parent.path, name)
    check_path_length(path, settings_of(session).max_path_bytes)
    folder = Folder(
        drive_id=drive.id, parent_id=parent.id, name=name, path=path, created_by=actor_id
    )
    session.add(folder)
    await session.flush()
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op="create",
        item_type="folder",
        item_id=folder.id,
        after_path=path,
    )
    return folder


async def mkdir_p(
    session: AsyncSession,
    drive: Drive,
    base: Folder,
    segments: list[str],
    actor_id: int | None,
    cache: dict[str, Folder] | None = None,
) -> Folder:
    """Create every missing folder along `segments` below `base` (mkdir -p). `cache` maps
    paths to folders already resolved in this unit of work (manifests share prefixes)."""
    folder = base
    for segment in segments:
        path = join(folder.path, segment)
        cached = cache.get(path) if cache is not None else None
        if cached is not None:
            folder = cached
            continue
        folder = await mkdir(session, drive, folder, segment, actor_id, exist_ok=True)
        if cache is not None:
            cache[path] = folder
    return folder


async def file_path(session: AsyncSession, file: DriveFile) -> str:
    folder_path = await session.scalar(select(Folder.path).where(Folder.id == file.folder_id))
    return join(folder_path or "/", file.name)


async def place_file(
    session: AsyncSession,
    drive: Drive,
    folder: Folder,
    name: str,
    blob: Blob,
    actor_id: int | None,
    *,
    conflict: Conflict,
    reserved: int = 0,
    mtime: datetime | None = None,
    mime_type: str | None = None,
    source: str = "web",
    op: str = "upload",
    before_path: str | None = None,
) -> DriveFile:
    """Put `blob` (on which the caller already holds one reference for this placement) at
    `folder/name`. `reserved` bytes of the size were held by an upload and are consumed.
    `before_path` goes to the operation log of a new file (a copy's source path)."""
    existing_folder = await child_folder(session, folder, name)
    existing = await child_file(session, folder.id, name)
    if existing_folder is not None or existing is not None:
        if conflict == Conflict.ERROR or (conflict == Conflict.OVERWRITE and existing is None):
            raise AppError(E.NAME_CONFLICT, details={"name": name})
        if conflict == Conflict.RENAME:
            name = first_free(name, await names_like(session, folder.id, name), is_file=True)
            existing = None
    path = join(folder.path, name)
    check_path_length(path, settings_of(session).max_path_bytes)
    await charge(session, drive.id, blob.size, reserved=reserved)
    if existing is not None:
        return await _add_version(
            session, drive, existing, blob, actor_id, path=path, mtime=mtime, source=source
        )
    file = DriveFile(
        drive_id=drive.id,
        folder_id=folder.id,
        name=name,
        extension=extension_of(name),
        mime_type=guess_mime(name, mime_type),
        size=blob.size,
        md5=blob.md5,
        sha256=blob.sha256,
        blob_id=blob.id,
        version=1,
        mtime=mtime,
        created_by=actor_id,
        upload_source=source,
    )
    session.add(file)
    await session.flush()
    session.add(
        FileVersion(
            file_id=file.id,
            drive_id=drive.id,
            version=1,
            blob_id=blob.id,
            size=blob.size,
            md5=blob.md5,
            sha256=blob.sha256,
            created_by=actor_id,
        )
    )
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op=op,
        item_type="file",
        item_id=file.id,
        before_path=before_path,
        after_path=path,
        size=blob.size,
    )
    await session.flush()
    return file


async def _add_version(
    session: AsyncSession,
    drive: Drive,
    file: DriveFile,
    blob: Blob,
    actor_id: int | None,
    *,
    path: str,
    mtime: datetime | None,
    source: str,
) -> DriveFile:
    version = file.version + 1
    session.add(
        FileVersion(
            file_id=file.id,
            drive_id=drive.id,
            version=version,
            blob_id=blob.id,
            size=blob.size,
            md5=blob.md5,
            sha256=blob.sha256,
            created_by=actor_id,
        )
    )
    file.version = version
    file.blob_id = blob.id
    file.size = blob.size
    file.md5 = blob.md5
    file.sha256 = blob.sha256
    file.mtime = mtime
    file.upload_source = source
    await session.flush()
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op="overwrite",
        item_type="file",
        item_id=file.id,
        before_path=path,
        after_path=path,
        version=version,
        size=blob.size,
    )
    await prune_versions(session, drive, file, settings_of(session).drive_max_versions)
    return file


async def prune_versions(session: AsyncSession, drive: Drive, file: DriveFile, keep: int) -> None:
    """Drop the oldest versions beyond `keep` (their references and quota go with them)."""
    stale = (
        (
            await session.execute(
                select(FileVersion.id, FileVersion.blob_id, FileVersion.size)
                .where(FileVersion.file_id == file.id)
                .order_by(FileVersion.version.desc())
                .offset(keep)
            )
        )
        .tuples()
        .all()
    )
    if not stale:
        return
    await delete_versions(session, drive.id, stale)


async def delete_versions(
    session: AsyncSession, drive_id: int, rows: Sequence[tuple[int, int, int]]
) -> None:
    """Delete (version id, blob id, size) rows: release their blobs and their quota."""
    counts: dict[int, int] = {}
    freed = 0
    for _version_id, blob_id, size in rows:
        counts[blob_id] = counts.get(blob_id, 0) + 1
        freed += size
    ids = [row[0] for row in rows]
    for start in range(0, len(ids), 500):
        await session.execute(
            delete(FileVersion).where(FileVersion.id.in_(ids[start : start + 500]))
        )
    await blobs.release_refs(session, counts)
    await uncharge(session, drive_id, freed)


async def purge_files(session: AsyncSession, drive_id: int, file_ids: list[int]) -> None:
    """Remove files for good: every version, its blob reference and its quota."""
    for start in range(0, len(file_ids), 500):
        chunk = file_ids[start : start + 500]
        rows = (
            (
                await session.execute(
                    select(FileVersion.id, FileVersion.blob_id, FileVersion.size).where(
                        FileVersion.file_id.in_(chunk)
                    )
                )
            )
            .tuples()
            .all()
        )
        await delete_versions(session, drive_id, list(rows))
        await session.execute(delete(DriveFile).where(DriveFile.id.in_(chunk)))


# -- batched placement (instant upload of thousands of files) ---------------------------------
@dataclass(frozen=True, slots=True)
class NewFile:
    """One file for `place_new_files`: `blob` already holds a reference for it."""

    folder: Folder
    name: str
    blob: Blob
    mtime: datetime | None = None
    mime_type: str | None = None


async def plan_names(
    session: AsyncSession, wanted: list[tuple[int, str]], *, rename: bool
) -> list[str | None]:
    """`place_file`'s conflict check for many new files at once: for each (folder id, name) the
    name to place it under. A free name is kept; a taken one (by a live file or folder, or by an
    earlier entry of `wanted`) becomes the first free `name (n)` when `rename`, else None.
    Reads every live name of the folders involved (a few queries per 500 folders)."""
    used: dict[int, set[str]] = {folder_id: set() for folder_id, _ in wanted}
    folder_ids = list(used)
    for start in range(0, len(folder_ids), 500):
        chunk = folder_ids[start : start + 500]
        files = await session.execute(
            select(DriveFile.folder_id, DriveFile.name).where(
                DriveFile.folder_id.in_(chunk), DriveFile.trashed_at.is_(None)
            )
        )
        folders = await session.execute(
            select(Folder.parent_id, Folder.name).where(
                Folder.parent_id.in_(chunk), Folder.trashed_at.is_(None)
            )
        )
        # parent_id IN (chunk): never NULL here
        for folder_id, name in cast("list[tuple[int, str]]", [*files.all(), *folders.all()]):
            used[folder_id].add(name)
    planned: list[str | None] = [None] * len(wanted)
    for index, (folder_id, name) in enumerate(wanted):
        if name not in used[folder_id]:
            used[folder_id].add(name)
            planned[index] = name
    if rename:
        for index, (folder_id, name) in enumerate(wanted):
            if planned[index] is None:
                taken, n, candidate = used[folder_id], 1, name
                while candidate in taken:
                    candidate = numbered(name, n, is_file=True)
                    n += 1
                taken.add(candidate)
                planned[index] = candidate
    return planned


async def place_new_files(
    session: AsyncSession,
    drive: Drive,
    items: list[NewFile],
    actor_id: int | None,
    *,
    reserved: int = 0,
    source: str = "web",
    op: str = "upload",
) -> list[int]:
    """`place_file` for many new files whose names are free (see `plan_names`, in the same
    transaction; a concurrent taker trips the unique index and the whole unit of work
    rolls back). One quota charge, bulk inserts of the files, their first versions and the
    operation records. Returns the new file ids in `items` order."""
    if not items:
        return []
    limit = settings_of(session).max_path_bytes
    paths = [join(item.folder.path, item.name) for item in items]
    for path in paths:
        check_path_length(path, limit)
    await charge(session, drive.id, sum(item.blob.size for item in items), reserved=reserved)
    now = utcnow()
    files: list[dict[str, Any]] = []
    versions: list[dict[str, Any]] = []
    operations: list[dict[str, Any]] = []
    for item, path in zip(items, paths, strict=True):
        blob = item.blob
        file_id = new_id()
        files.append(
            {
                "id": file_id,
                "drive_id": drive.id,
                "folder_id": item.folder.id,
                "name": item.name,
                "extension": extension_of(item.name),
                "mime_type": guess_mime(item.name, item.mime_type),
                "size": blob.size,
                "md5": blob.md5,
                "sha256": blob.sha256,
                "blob_id": blob.id,
                "version": 1,
                "mtime": item.mtime,
                "created_by": actor_id,
                "upload_source": source,
                "created_at": now,
                "updated_at": now,
            }
        )
        versions.append(
            {
                "id": new_id(),
                "file_id": file_id,
                "drive_id": drive.id,
                "version": 1,
                "blob_id": blob.id,
                "size": blob.size,
                "md5": blob.md5,
                "sha256": blob.sha256,
                "created_by": actor_id,
                "created_at": now,
            }
        )
        operations.append(
            {
                "id": new_id(),
                "drive_id": drive.id,
                "actor_id": actor_id,
                "op": op,
                "item_type": "file",
                "item_id": file_id,
                "before_path": None,
                "after_path": path,
                "detail": {"size": blob.size},
                "created_at": now,
            }
        )
    for model, rows in ((DriveFile, files), (FileVersion, versions), (DriveOperation, operations)):
        await bulk_insert(session, model.__table__, rows)  # type: ignore[arg-type]
    return [row["id"] for row in files]
