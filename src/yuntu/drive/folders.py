"""Folders: create (one, or a path with mkdir -p), list children fast, rename, move, trash.

Paths are materialized. A rename or move rewrites the folder's path and, in one UPDATE, the
paths of its live descendants (`substr(path, 1, len(old) + 1) = old || '/'`, exact where LIKE
would treat `%` and `_` in names as wildcards). Files store no path: theirs follows their
folder's."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnClause,
    LargeBinary,
    String,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import oplog, tree
from yuntu.drive.paths import Conflict, check_path_length, clean_name, first_free, join, split_path
from yuntu.drive.service import settings_of
from yuntu.kit.db import database_of, utcnow
from yuntu.kit.errors import AppError, E
from yuntu.kit.schemas import PageParams
from yuntu.models.drive import Drive, DriveFile, Folder

SORTS = ("name", "-name", "size", "-size", "updated", "-updated")


def byte_length(session: AsyncSession, column: Any) -> Any:
    """UTF-8 length of a text column on either database (length() counts characters)."""
    if database_of(session).dialect == "postgresql":
        return func.octet_length(column)
    return func.length(cast(column, LargeBinary))


def under(path: str) -> Any:
    """Folders strictly below `path` (exact prefix match, no LIKE wildcards)."""
    prefix = "/" if path == "/" else path + "/"
    return func.substr(Folder.path, 1, len(prefix)) == prefix


def reprefix(old: str, new: str) -> Any:
    """The expression that rewrites a descendant's path from below `old` to below `new`."""
    return literal(new, String).concat(func.substr(Folder.path, len(old) + 1, type_=String))


async def create_folder(
    session: AsyncSession,
    drive: Drive,
    actor_id: int,
    *,
    parent_id: int | None,
    name: str | None,
    path: str | None,
    parents: bool,
    conflict: Conflict,
) -> Folder:
    base = await tree.get_folder(session, drive, parent_id)
    if name is not None:
        return await tree.mkdir(session, drive, base, clean_name(name), actor_id, conflict=conflict)
    assert path is not None
    segments = split_path(path, allow_root=False)
    if parents:
        return await tree.mkdir_p(session, drive, base, segments, actor_id)
    parent = base
    for segment in segments[:-1]:
        found = await tree.child_folder(session, parent, segment)
        if found is None:
            raise AppError(
                E.NOT_FOUND,
                message=f"parent folder {join(parent.path, segment)} does not exist",
            )
        parent = found
    return await tree.mkdir(session, drive, parent, segments[-1], actor_id, conflict=conflict)


@dataclass(slots=True)
class Child:
    type: str
    id: int
    name: str
    path: str
    size: int | None
    updated_at: datetime
    md5: str | None = None
    mime_type: str | None = None
    version: int | None = None


def _folder_order(sort: str) -> list[Any]:
    """Folder names are unique among a folder's live children: no tie-break needed for them;
    `size` sorts folders by name (they have none)."""
    desc = sort.startswith("-") and sort != "-size"
    if sort.lstrip("-") == "updated":
        return (
            [Folder.updated_at.desc(), Folder.id.desc()] if desc else [Folder.updated_at, Folder.id]
        )
    return [Folder.name.desc() if desc else Folder.name]


def _file_order(session: AsyncSession, sort: str) -> list[Any]:
    """Names are unique among a folder's live files. Sizes and times tie, and an explicit
    tie-break column outside the index would make the database sort each whole tie group
    (every file of a bulk upload shares one updated_at). The indexes on (folder_id,
    trashed_at, size | updated_at) end in the row's physical position on both databases (the
    rowid on SQLite, named here so the planner sees the order is complete; the heap TID on
    PostgreSQL 12+), so ties come out in a stable order without a sort."""
    field = sort.lstrip("-")
    desc = sort.startswith("-")
    if field == "name":
        return [DriveFile.name.desc() if desc else DriveFile.name]
    key = DriveFile.size if field == "size" else DriveFile.updated_at
    # trashed_at is NULL on every listed row, so leading with it changes nothing, but it spells
    # out the index's column order: PostgreSQL does not treat `IS NULL` as fixing the column
    # and would otherwise sort the whole folder instead of walking the index.
    order: list[Any] = (
        [DriveFile.trashed_at.desc(), key.desc()] if desc else [DriveFile.trashed_at, key]
    )
    if database_of(session).dialect == "sqlite":
        rowid: ColumnClause[Any] = literal_column("files.rowid")
        order.append(rowid.desc() if desc else rowid)
    return order


async def list_children(
    session: AsyncSession, folder: Folder, sort: str, params: PageParams
) -> tuple[list[Child], int]:
    """Folders first, then files, one page. Each query walks an index on (parent, sort key)
    from the page's start and stops after page_size rows; the counts are index-only."""
    folder_where = (Folder.parent_id == folder.id, Folder.trashed_at.is_(None))
    file_where = (DriveFile.folder_id == folder.id, DriveFile.trashed_at.is_(None))
    n_folders = int(
        await session.scalar(select(func.count()).select_from(Folder).where(*folder_where)) or 0
    )
    n_files = int(
        await session.scalar(select(func.count()).select_from(DriveFile).where(*file_where)) or 0
    )
    items: list[Child] = []
    offset = params.offset
    if offset < n_folders:
        rows = await session.scalars(
            select(Folder)
            .where(*folder_where)
            .order_by(*_folder_order(sort))
            .offset(offset)
            .limit(params.page_size)
        )
        items.extend(Child("folder", f.id, f.name, f.path, None, f.updated_at) for f in rows.all())
    remaining = params.page_size - len(items)
    file_offset = max(0, offset - n_folders)
    if remaining > 0 and file_offset < n_files:
        file_rows = await session.execute(
            select(
                DriveFile.id,
                DriveFile.name,
                DriveFile.size,
                DriveFile.updated_at,
                DriveFile.md5,
                DriveFile.mime_type,
                DriveFile.version,
            )
            .where(*file_where)
            .order_by(*_file_order(session, sort))
            .offset(file_offset)
            .limit(remaining)
        )
        items.extend(
            Child(
                "file",
                r.id,
                r.name,
                join(folder.path, r.name),
                r.size,
                r.updated_at,
                r.md5,
                r.mime_type,
                r.version,
            )
            for r in file_rows.all()
        )
    return items, n_folders + n_files


async def _check_tree_fits(session: AsyncSession, drive: Drive, old: str, new: str) -> None:
    """The new path and the deepest descendant rewritten below it must fit max_path_bytes."""
    limit = settings_of(session).max_path_bytes
    check_path_length(new, limit)
    longest = await session.scalar(
        select(func.max(byte_length(session, Folder.path))).where(
            Folder.drive_id == drive.id, Folder.trashed_at.is_(None), under(old)
        )
    )
    if longest:
        grown = int(longest) - len(old.encode()) + len(new.encode())
        if grown > limit:
            raise AppError(
                E.INVALID_PATH, message=f"a folder below would be longer than {limit} bytes"
            )


async def _free_name(
    session: AsyncSession, parent: Folder, name: str, conflict: Conflict, own_name: str | None
) -> str:
    """`name` in `parent` with the conflict policy applied (files and folders share names)."""
    taken = (
        await tree.child_folder(session, parent, name) is not None
        or await tree.child_file(session, parent.id, name) is not None
    )
    if not taken or name == own_name:
        return name
    if conflict != Conflict.RENAME:
        raise AppError(E.NAME_CONFLICT, details={"name": name})
    names = await tree.names_like(session, parent.id, name)
    names.discard(own_name or "")
    return first_free(name, names, is_file=False)


async def patch_folder(
    session: AsyncSession,
    drive: Drive,
    folder: Folder,
    actor_id: int,
    *,
    name: str | None,
    move: bool,
    parent_id: int | None,
    conflict: Conflict,
) -> Folder:
    """Rename and/or move. The root cannot; a folder cannot move into itself or below itself
    (409 INVALID_STATE)."""
    if folder.parent_id is None:
        raise AppError(E.INVALID_STATE, message="the root folder cannot be renamed or moved")
    new_name = clean_name(name) if name is not None else folder.name
    current_parent = await tree.get_folder(session, drive, folder.parent_id)
    parent = await tree.get_folder(session, drive, parent_id) if move else current_parent
    if parent.id == folder.id or parent.path.startswith(folder.path + "/"):
        raise AppError(E.INVALID_STATE, message="a folder cannot move into itself")
    same_parent = parent.id == folder.parent_id
    if same_parent and new_name == folder.name:
        return folder
    new_name = await _free_name(
        session, parent, new_name, conflict, folder.name if same_parent else None
    )
    if same_parent and new_name == folder.name:
        return folder
    old_path = folder.path
    new_path = join(parent.path, new_name)
    await _check_tree_fits(session, drive, old_path, new_path)
    await session.execute(
        update(Folder)
        .where(Folder.drive_id == drive.id, Folder.trashed_at.is_(None), under(old_path))
        .values(path=reprefix(old_path, new_path))
        .execution_options(synchronize_session=False)
    )
    folder.parent_id = parent.id
    folder.name = new_name
    folder.path = new_path
    await session.flush()
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op="rename" if same_parent else "move",
        item_type="folder",
        item_id=folder.id,
        before_path=old_path,
        after_path=new_path,
    )
    return folder


async def trash_folder(session: AsyncSession, drive: Drive, folder: Folder, actor_id: int) -> None:
    """The folder and its whole live subtree get trashed_at and trash_root_id = this folder.
    Their files keep counting in used_bytes until purged."""
    if folder.parent_id is None:
        raise AppError(E.INVALID_STATE, message="the root folder cannot be deleted")
    now = utcnow()
    marks = {"trashed_at": now, "trash_root_id": folder.id, "trashed_by": actor_id}
    subtree = (
        Folder.drive_id == drive.id,
        Folder.trashed_at.is_(None),
        or_(Folder.id == folder.id, under(folder.path)),
    )
    await session.execute(
        update(DriveFile)
        .where(
            DriveFile.drive_id == drive.id,
            DriveFile.trashed_at.is_(None),
            DriveFile.folder_id.in_(select(Folder.id).where(*subtree)),
        )
        .values(**marks)
        .execution_options(synchronize_session=False)
    )
    await session.execute(
        update(Folder).where(*subtree).values(**marks).execution_options(synchronize_session=False)
    )
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op="delete",
        item_type="folder",
        item_id=folder.id,
        before_path=folder.path,
    )
    await session.refresh(folder)
