"""Files: metadata, versions, rename, move (with error | rename | overwrite), copy and trash.

A copy shares the source's blob: one more reference (`blobs.add_ref`) and a new file version,
no bytes copied; the target drive's quota is charged through `tree.place_file`. An overwriting
move turns the moved file's current content into the next version of the file holding the
target name and purges the moved file, so references and used_bytes stay exact."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.drive import oplog, tree
from yuntu.drive.paths import (
    Conflict,
    check_path_length,
    clean_name,
    extension_of,
    first_free,
    guess_mime,
    join,
)
from yuntu.drive.service import check_file_allowed, settings_of
from yuntu.kit.db import utcnow
from yuntu.kit.errors import AppError, E
from yuntu.models.drive import Drive, DriveFile, FileVersion, Folder
from yuntu.storage import blobs


async def get_file(session: AsyncSession, drive: Drive, file_id: int) -> DriveFile:
    """A live file of this drive; any other id (another drive's included) answers 404."""
    file = await session.scalar(
        select(DriveFile).where(
            DriveFile.id == file_id,
            DriveFile.drive_id == drive.id,
            DriveFile.trashed_at.is_(None),
        )
    )
    if file is None:
        raise AppError(E.NOT_FOUND)
    return file


async def versions(session: AsyncSession, file: DriveFile) -> list[FileVersion]:
    rows = await session.scalars(
        select(FileVersion)
        .where(FileVersion.file_id == file.id)
        .order_by(FileVersion.version.desc())
    )
    return list(rows.all())


async def _folder_of(session: AsyncSession, file: DriveFile) -> Folder:
    folder = await session.get(Folder, file.folder_id)
    assert folder is not None
    return folder


async def patch_file(
    session: AsyncSession,
    drive: Drive,
    file: DriveFile,
    actor_id: int,
    *,
    name: str | None,
    move: bool,
    folder_id: int | None,
    conflict: Conflict,
) -> DriveFile:
    """Rename and/or move within the drive. Returns the file now holding the content (the
    target file after an overwrite)."""
    source_folder = await _folder_of(session, file)
    before = join(source_folder.path, file.name)
    target = await tree.get_folder(session, drive, folder_id) if move else source_folder
    new_name = clean_name(name) if name is not None else file.name
    if new_name != file.name:
        check_file_allowed(drive, new_name, file.size)
    same_folder = target.id == file.folder_id
    if same_folder and new_name == file.name:
        return file
    clash_folder = await tree.child_folder(session, target, new_name)
    clash_file = await tree.child_file(session, target.id, new_name)
    if clash_folder is not None or clash_file is not None:
        if conflict == Conflict.ERROR or (conflict == Conflict.OVERWRITE and clash_file is None):
            raise AppError(E.NAME_CONFLICT, details={"name": new_name})
        if conflict == Conflict.OVERWRITE:
            assert clash_file is not None
            return await _overwrite(session, drive, file, clash_file, target, actor_id, before)
        taken = await tree.names_like(session, target.id, new_name)
        if same_folder:
            taken.discard(file.name)
        new_name = first_free(new_name, taken, is_file=True)
        if same_folder and new_name == file.name:
            return file
    after = join(target.path, new_name)
    check_path_length(after, settings_of(session).max_path_bytes)
    if extension_of(new_name) != file.extension:
        file.mime_type = guess_mime(new_name)
    file.folder_id = target.id
    file.name = new_name
    file.extension = extension_of(new_name)
    await session.flush()
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op="rename" if same_folder else "move",
        item_type="file",
        item_id=file.id,
        before_path=before,
        after_path=after,
    )
    return file


async def _overwrite(
    session: AsyncSession,
    drive: Drive,
    file: DriveFile,
    target_file: DriveFile,
    folder: Folder,
    actor_id: int,
    before: str,
) -> DriveFile:
    blob = await blobs.get_blob(session, file.blob_id)
    # The new version's reference first, so the blob never reaches zero in between; then the
    # moved file goes (its versions' references and bytes), then the content lands on target.
    await blobs.add_ref(session, blob.id)
    mtime, source, moved_id = file.mtime, file.upload_source, file.id
    await tree.purge_files(session, drive.id, [file.id])
    session.expunge(file)
    result = await tree.place_file(
        session,
        drive,
        folder,
        target_file.name,
        blob,
        actor_id,
        conflict=Conflict.OVERWRITE,
        mtime=mtime,
        source=source,
        op="move",
    )
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op="move",
        item_type="file",
        item_id=moved_id,
        before_path=before,
        after_path=join(folder.path, result.name),
        overwrote=str(result.id),
        version=result.version,
    )
    return result


async def copy_file(
    session: AsyncSession,
    source_drive: Drive,
    file: DriveFile,
    target_drive: Drive,
    actor_id: int,
    *,
    folder_id: int | None,
    name: str | None,
    conflict: Conflict,
) -> DriveFile:
    """Copy into `target_drive` (the source's own or another the caller can write). The
    target's type policy, size limit and quota apply."""
    source_path = join((await _folder_of(session, file)).path, file.name)
    folder = await tree.get_folder(session, target_drive, folder_id)
    new_name = clean_name(name) if name is not None else file.name
    check_file_allowed(target_drive, new_name, file.size)
    overwriting = (
        conflict == Conflict.OVERWRITE
        and await tree.child_file(session, folder.id, new_name) is not None
    )
    blob = await blobs.get_blob(session, file.blob_id)
    await blobs.add_ref(session, blob.id)
    copy = await tree.place_file(
        session,
        target_drive,
        folder,
        new_name,
        blob,
        actor_id,
        conflict=conflict,
        mtime=file.mtime,
        mime_type=file.mime_type,
        source="copy",
        op="copy",
        before_path=source_path,
    )
    if overwriting:  # place_file logged an overwrite; say where the content came from
        oplog.record(
            session,
            drive_id=target_drive.id,
            actor_id=actor_id,
            op="copy",
            item_type="file",
            item_id=copy.id,
            before_path=source_path,
            after_path=join(folder.path, copy.name),
            source_drive_id=str(source_drive.id),
            version=copy.version,
        )
    return copy


async def trash_file(session: AsyncSession, drive: Drive, file: DriveFile, actor_id: int) -> None:
    """To the trash: hidden from listings, still counted in used_bytes until purged."""
    path = join((await _folder_of(session, file)).path, file.name)
    file.trashed_at = utcnow()
    file.trash_root_id = file.id
    file.trashed_by = actor_id
    await session.flush()
    oplog.record(
        session,
        drive_id=drive.id,
        actor_id=actor_id,
        op="delete",
        item_type="file",
        item_id=file.id,
        before_path=path,
    )
