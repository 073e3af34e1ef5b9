"""The trash: list trash roots, restore, purge one item, empty, and purge what outlived the
retention (the `drive.purge_trash` job).

A trash root is an item whose `trash_root_id` is its own id; a trashed folder's subtree carries
the folder's id. Trashed files keep counting in `used_bytes` until purged. Purging a folder
purges every file below it (found by parent links, so nothing a cascade would delete escapes
the reference release), then deletes the folder rows deepest first. A purge is refused while an
unfinished upload targets the subtree: the cascade would delete its reserved task files."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Select, String, delete, func, literal, or_, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import oplog, tree
from yuntu.drive.drives import UNFINISHED_TASKS
from yuntu.drive.folders import byte_length, reprefix, under
from yuntu.drive.paths import Conflict, check_path_length, first_free, join
from yuntu.drive.service import settings_of
from yuntu.kit.errors import AppError, E
from yuntu.kit.schemas import PageParams
from yuntu.models.drive import Drive, DriveFile, Folder
from yuntu.models.uploads import UploadTask, UploadTaskFile

_BATCH = 500


@dataclass(slots=True)
class TrashItem:
    type: str
    id: int
    name: str
    original_path: str
    size: int
    trashed_at: datetime
    trashed_by: int | None


async def list_trash(
    session: AsyncSession, drive: Drive, params: PageParams
) -> tuple[list[TrashItem], int]:
    """Trash roots, most recently trashed first, with their original paths."""
    group_size = (
        select(func.coalesce(func.sum(DriveFile.size), 0))
        .where(DriveFile.trash_root_id == Folder.id)
        .scalar_subquery()
    )
    folders = select(
        literal("folder", String).label("type"),
        Folder.id.label("id"),
        Folder.name.label("name"),
        Folder.path.label("where"),
        group_size.label("size"),
        Folder.trashed_at.label("trashed_at"),
        Folder.trashed_by.label("trashed_by"),
    ).where(Folder.drive_id == drive.id, Folder.trash_root_id == Folder.id)
    files = (
        select(
            literal("file", String).label("type"),
            DriveFile.id.label("id"),
            DriveFile.name.label("name"),
            Folder.path.label("where"),
            DriveFile.size.label("size"),
            DriveFile.trashed_at.label("trashed_at"),
            DriveFile.trashed_by.label("trashed_by"),
        )
        .join(Folder, Folder.id == DriveFile.folder_id)
        .where(DriveFile.drive_id == drive.id, DriveFile.trash_root_id == DriveFile.id)
    )
    roots = union_all(folders, files).subquery()
    total = await session.scalar(select(func.count()).select_from(roots))
    rows = await session.execute(
        select(roots)
        .order_by(roots.c.trashed_at.desc(), roots.c.id.desc())
        .offset(params.offset)
        .limit(params.page_size)
    )
    items = [
        TrashItem(
            type=r.type,
            id=r.id,
            name=r.name,
            original_path=r.where if r.type == "folder" else join(r.where, r.name),
            size=int(r.size or 0),
            trashed_at=r.trashed_at,
            trashed_by=r.trashed_by,
        )
        for r in rows.all()
    ]
    return items, int(total or 0)


async def _root(session: AsyncSession, drive_id: int, item_type: str, item_id: int) -> Any:
    model: Any = Folder if item_type == "folder" else DriveFile
    item = await session.scalar(
        select(model).where(
            model.id == item_id, model.drive_id == drive_id, model.trash_root_id == model.id
        )
    )
    if item is None:
        raise AppError(E.NOT_FOUND)
    return item


async def _restore_parent(session: AsyncSession, drive: Drive, parent_id: int | None) -> Folder:
    """The original parent when it is still live, else the drive's root."""
    if parent_id is not None:
        parent = await session.scalar(
            select(Folder).where(
                Folder.id == parent_id, Folder.drive_id == drive.id, Folder.trashed_at.is_(None)
            )
        )
        if parent is not None:
            return parent
    return await tree.get_folder(session, drive, None)


async def _free(session: AsyncSession, parent: Folder, name: str, conflict: Conflict) -> str:
    taken = (
        await tree.child_folder(session, parent, name) is not None
        or await tree.child_file(session, parent.id, name) is not None
    )
    if not taken:
        return name
    if conflict != Conflict.RENAME:
        raise AppError(E.NAME_CONFLICT, details={"name": name})
    return first_free(name, await tree.names_like(session, parent.id, name), is_file=True)


async def restore(
    session: AsyncSession,
    drive: Drive,
    item_type: str,
    item_id: int,
    actor_id: int,
    conflict: Conflict,
) -> tuple[Folder | DriveFile, str]:
    """Bring a trash root and everything trashed with it back, into its original folder when
    that is live, else into the root; a taken name follows `conflict` (default rename)."""
    item = await _root(session, drive.id, item_type, item_id)
    parent_id = item.parent_id if item_type == "folder" else item.folder_id
    parent = await _restore_parent(session, drive, parent_id)
    if item_type == "file":
        old_folder = await session.get(Folder, item.folder_id)
        before = join(old_folder.path if old_folder else "/", item.name)
        name = await _free(session, parent, item.name, conflict)
        after = join(parent.path, name)
        check_path_length(after, settings_of(session).max_path_bytes)
        item.folder_id, item.name = parent.id, name
    else:
        name = await _free(session, parent, item.name, conflict)
        before, after = item.path, join(parent.path, name)
        await _check_group_fits(session, item, after)
        group = (Folder.drive_id == drive.id, Folder.trash_root_id == item.id)
        await session.execute(
            update(DriveFile)
            .where(DriveFile.drive_id == drive.id, DriveFile.trash_root_id == item.id)
            .values(trashed_at=None, trash_root_id=None, trashed_by=None)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(Folder)
            .where(*group, Folder.id != item.id, under(before))
            .values(
                path=reprefix(before, after), trashed_at=None, trash_root_id=None, trashed_by=None
            )
            .execution_options(synchronize_session=False)
        )
        item.parent_id, item.name, item.path = parent.id, name, after
    item.trashed_at = item.trash_root_id = item.trashed_by = None
    await session.flush()
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op="restore",
        item_type=item_type,
        item_id=item.id,
        before_path=before,
        after_path=after,
    )
    return item, after


async def _check_group_fits(session: AsyncSession, folder: Folder, new_path: str) -> None:
    limit = settings_of(session).max_path_bytes
    check_path_length(new_path, limit)
    longest = await session.scalar(
        select(func.max(byte_length(session, Folder.path))).where(
            Folder.trash_root_id == folder.id, under(folder.path)
        )
    )
    if longest and int(longest) - len(folder.path.encode()) + len(new_path.encode()) > limit:
        raise AppError(E.INVALID_PATH, message=f"a folder below would be longer than {limit} bytes")


# -- purge -------------------------------------------------------------------------------------
async def _subtree(session: AsyncSession, folder_id: int) -> list[int]:
    """Every folder below `folder_id` by parent links (whatever its state), deepest first."""
    seed = select(Folder.id, literal(0).label("depth")).where(Folder.id == folder_id)
    cte = seed.cte("subtree", recursive=True)
    cte = cte.union_all(select(Folder.id, cte.c.depth + 1).where(Folder.parent_id == cte.c.id))
    rows = await session.execute(select(cte.c.id).order_by(cte.c.depth.desc()))
    return [row[0] for row in rows]


async def _uploads_busy(session: AsyncSession, folder_ids: list[int]) -> bool:
    for start in range(0, len(folder_ids), _BATCH):
        chunk = folder_ids[start : start + _BATCH]
        task = await session.scalar(
            select(UploadTask.id)
            .where(UploadTask.folder_id.in_(chunk), UploadTask.status.in_(UNFINISHED_TASKS))
            .limit(1)
        )
        task_file = await session.scalar(
            select(UploadTaskFile.id)
            .join(UploadTask, UploadTask.id == UploadTaskFile.task_id)
            .where(
                UploadTaskFile.folder_id.in_(chunk),
                or_(UploadTaskFile.reserved.is_(True), UploadTask.status.in_(UNFINISHED_TASKS)),
            )
            .limit(1)
        )
        if task is not None or task_file is not None:
            return True
    return False


async def _purge_folders(session: AsyncSession, drive_id: int, folder_ids: list[int]) -> int:
    """Purge the files of these folders, then the folders (deepest first); returns the files
    purged."""
    purged = 0
    for start in range(0, len(folder_ids), _BATCH):
        chunk = folder_ids[start : start + _BATCH]
        file_ids = list(
            await session.scalars(select(DriveFile.id).where(DriveFile.folder_id.in_(chunk)))
        )
        await tree.purge_files(session, drive_id, file_ids)
        purged += len(file_ids)
    for start in range(0, len(folder_ids), _BATCH):
        # Finished upload tasks keep their history: a task file whose destination goes is
        # pointed at its task's folder (were the row deleted by the cascade, the task's
        # counters would no longer match its files). A task whose own folder goes is deleted
        # with all its files by the cascade, which keeps it consistent too.
        task_folder = (
            select(UploadTask.folder_id)
            .where(UploadTask.id == UploadTaskFile.task_id)
            .scalar_subquery()
        )
        await session.execute(
            update(UploadTaskFile)
            .where(UploadTaskFile.folder_id.in_(folder_ids[start : start + _BATCH]))
            .values(folder_id=task_folder)
            .execution_options(synchronize_session=False)
        )
    for start in range(0, len(folder_ids), _BATCH):  # deepest first: no cascade left to do
        await session.execute(
            delete(Folder).where(Folder.id.in_(folder_ids[start : start + _BATCH]))
        )
    return purged


@dataclass(slots=True)
class Purged:
    files: int = 0
    folders: int = 0
    skipped_ids: list[int] = field(default_factory=list)

    @property
    def skipped(self) -> int:
        return len(self.skipped_ids)

    def add(self, other: Purged) -> None:
        self.files += other.files
        self.folders += other.folders
        self.skipped_ids.extend(other.skipped_ids)


async def _purge_root(
    session: AsyncSession, drive_id: int, item: Any, item_type: str, actor_id: int | None
) -> Purged:
    if item_type == "file":
        folder = await session.get(Folder, item.folder_id)
        path = join(folder.path if folder else "/", item.name)
        size = item.size
        await tree.purge_files(session, drive_id, [item.id])
        result = Purged(files=1)
    else:
        path, size = item.path, None
        folder_ids = await _subtree(session, item.id)
        if not folder_ids:  # purged already, below another root
            session.expunge(item)
            return Purged()
        if await _uploads_busy(session, folder_ids):
            return Purged(skipped_ids=[item.id])
        files = await _purge_folders(session, drive_id, folder_ids)
        result = Purged(files=files, folders=len(folder_ids))
    session.expunge(item)
    oplog.record(
        session,
        drive_id=drive_id,
        actor_id=actor_id,
        op="purge",
        item_type=item_type,
        item_id=item.id,
        before_path=path,
        files=result.files,
        **({"size": size} if size is not None else {}),
    )
    return result


async def purge_item(
    session: AsyncSession, drive: Drive, item_type: str, item_id: int, actor_id: int
) -> Purged:
    item = await _root(session, drive.id, item_type, item_id)
    result = await _purge_root(session, drive.id, item, item_type, actor_id)
    if result.skipped:
        raise AppError(E.INVALID_STATE, message="an unfinished upload targets this folder")
    return result


async def empty_trash(session: AsyncSession, drive: Drive, actor_id: int) -> Purged:
    """Purge every trash root of the drive; folders an unfinished upload targets are kept."""
    return await purge_roots(session, [drive.id], None, actor_id)


async def purge_roots(
    session: AsyncSession,
    drive_ids: list[int] | None,
    trashed_before: datetime | None,
    actor_id: int | None,
    *,
    limit: int | None = None,
    exclude: set[int] | None = None,
) -> Purged:
    """Purge trash roots (of `drive_ids`, or every drive), optionally only those trashed
    before `trashed_before`, at most `limit` roots of each kind, leaving out the `exclude`
    ids (roots skipped earlier). Folders first: a file root inside a purged folder goes with
    it."""
    total = Purged()
    kinds: tuple[tuple[type[Folder] | type[DriveFile], str], ...] = (
        (Folder, "folder"),
        (DriveFile, "file"),
    )
    for model, item_type in kinds:
        statement = cast("Select[tuple[Folder | DriveFile]]", select(model)).where(
            model.trash_root_id == model.id
        )
        if drive_ids is not None:
            statement = statement.where(model.drive_id.in_(drive_ids))
        if trashed_before is not None:
            statement = statement.where(model.trashed_at < trashed_before)
        if exclude:
            statement = statement.where(model.id.not_in(exclude))
        statement = statement.order_by(model.trashed_at, model.id)
        if limit is not None:
            statement = statement.limit(limit)
        for item in list((await session.scalars(statement)).all()):
            total.add(await _purge_root(session, item.drive_id, item, item_type, actor_id))
    return total
