"""`yuntu drive fsck`: check blobs against their references and the drive counters against the
files, recounting everything from the rows. The test suite runs it at its end and expects it
clean. Read-only, except `delete_orphans`, which removes stored objects no row points at."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.db import Database
from yuntu.models.drive import Blob, Drive, DriveFile, FileVersion
from yuntu.models.packages import PackageVersion
from yuntu.models.render import RenderOutput, RenderTask
from yuntu.models.uploads import MultipartUpload, UploadTask, UploadTaskFile
from yuntu.storage.base import PENDING_PREFIX, StorageError

# Every table that holds blob references: (name, statement yielding (blob_id, count)). Later
# domains (render outputs, packages) register theirs with `register_reference`.
ReferenceQuery = Callable[[], Select[Any]]
_REFERENCES: dict[str, ReferenceQuery] = {
    "file_versions": lambda: select(FileVersion.blob_id, func.count()).group_by(
        FileVersion.blob_id
    ),
    # a render task pins its scene, each render output its image
    "render_tasks": lambda: select(RenderTask.scene_blob_id, func.count()).group_by(
        RenderTask.scene_blob_id
    ),
    "render_outputs": lambda: select(RenderOutput.blob_id, func.count()).group_by(
        RenderOutput.blob_id
    ),
    # a package version pins its original, and its processed artifact once it has one
    "package_versions": lambda: select(PackageVersion.blob_id, func.count()).group_by(
        PackageVersion.blob_id
    ),
    "package_artifacts": lambda: (
        select(PackageVersion.artifact_blob_id, func.count())
        .where(PackageVersion.artifact_blob_id.is_not(None))
        .group_by(PackageVersion.artifact_blob_id)
    ),
}


def register_reference(name: str, query: ReferenceQuery) -> None:
    _REFERENCES[name] = query


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems and not self.orphans

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "problems": self.problems,
            "orphan_objects": self.orphans,
            "checked": self.checked,
        }


async def _blob_refs(session: AsyncSession, report: Report) -> None:
    expected: dict[int, int] = {}
    for query in _REFERENCES.values():
        for blob_id, count in (await session.execute(query())).all():
            expected[blob_id] = expected.get(blob_id, 0) + count
    rows = (await session.execute(select(Blob.id, Blob.ref_count, Blob.zero_since))).all()
    report.checked["blobs"] = len(rows)
    known = set()
    for blob_id, ref_count, zero_since in rows:
        known.add(blob_id)
        want = expected.get(blob_id, 0)
        if ref_count != want:
            report.problems.append(f"blob {blob_id}: ref_count {ref_count}, references {want}")
        if ref_count <= 0 and zero_since is None:
            report.problems.append(f"blob {blob_id}: unreferenced but no zero_since (never GCed)")
    for blob_id in set(expected) - known:
        report.problems.append(f"blob {blob_id}: referenced but missing")


async def _drive_usage(session: AsyncSession, report: Report) -> None:
    used: dict[int, int] = dict(
        (
            await session.execute(
                select(FileVersion.drive_id, func.sum(FileVersion.size)).group_by(
                    FileVersion.drive_id
                )
            )
        )
        .tuples()
        .all()
    )
    reserved: dict[int, int] = dict(
        (
            await session.execute(
                select(UploadTask.drive_id, func.sum(UploadTaskFile.size))
                .join(UploadTaskFile, UploadTaskFile.task_id == UploadTask.id)
                .where(UploadTaskFile.reserved.is_(True))
                .group_by(UploadTask.drive_id)
            )
        )
        .tuples()
        .all()
    )
    drives = (
        await session.execute(
            select(Drive.id, Drive.used_bytes, Drive.reserved_bytes, Drive.quota_bytes)
        )
    ).all()
    report.checked["drives"] = len(drives)
    for drive_id, used_bytes, reserved_bytes, _quota in drives:
        if used_bytes != int(used.get(drive_id) or 0):
            report.problems.append(
                f"drive {drive_id}: used_bytes {used_bytes}, versions sum {used.get(drive_id) or 0}"
            )
        if reserved_bytes != int(reserved.get(drive_id) or 0):
            report.problems.append(
                f"drive {drive_id}: reserved_bytes {reserved_bytes}, "
                f"reserving files sum {reserved.get(drive_id) or 0}"
            )


async def _current_versions(session: AsyncSession, report: Report) -> None:
    mismatched = (
        await session.execute(
            select(DriveFile.id)
            .outerjoin(
                FileVersion,
                (FileVersion.file_id == DriveFile.id) & (FileVersion.version == DriveFile.version),
            )
            .where((FileVersion.id.is_(None)) | (FileVersion.blob_id != DriveFile.blob_id))
        )
    ).scalars()
    for file_id in mismatched:
        report.problems.append(f"file {file_id}: current version row missing or blob differs")
    report.checked["files"] = int(await session.scalar(select(func.count(DriveFile.id))) or 0)


_COUNTERS = {
    "completed": "completed_files",
    "instant": "instant_files",
    "failed": "failed_files",
    "cancelled": "cancelled_files",
}


async def _task_counters(session: AsyncSession, report: Report) -> None:
    counts: dict[int, dict[str, int]] = {}
    rows = await session.execute(
        select(
            UploadTaskFile.task_id,
            UploadTaskFile.status,
            func.count(),
            func.sum(UploadTaskFile.size),
        ).group_by(UploadTaskFile.task_id, UploadTaskFile.status)
    )
    for task_id, status, count, size in rows.all():
        entry = counts.setdefault(task_id, {"files": 0, "bytes": 0, "done_bytes": 0})
        entry[status] = count
        entry["files"] += count
        entry["bytes"] += int(size or 0)
        if status in ("completed", "instant"):
            entry["done_bytes"] += int(size or 0)
    reserved: dict[int, int] = dict(
        (
            await session.execute(
                select(UploadTaskFile.task_id, func.sum(UploadTaskFile.size))
                .where(UploadTaskFile.reserved.is_(True))
                .group_by(UploadTaskFile.task_id)
            )
        )
        .tuples()
        .all()
    )
    tasks = (await session.scalars(select(UploadTask))).all()
    report.checked["upload_tasks"] = len(tasks)
    for task in tasks:
        entry = counts.get(task.id, {"files": 0, "bytes": 0, "done_bytes": 0})
        expected = {
            "total_files": entry["files"],
            "total_bytes": entry["bytes"],
            "done_bytes": entry["done_bytes"],
            "reserved_bytes": int(reserved.get(task.id) or 0),
            **{column: entry.get(status, 0) for status, column in _COUNTERS.items()},
        }
        for column, want in expected.items():
            have = getattr(task, column)
            if have != want:
                report.problems.append(f"upload task {task.id}: {column} {have}, recount {want}")


async def _storage(session: AsyncSession, db: Database, report: Report, deep: bool) -> None:
    store = db.storage
    if store is None:
        return
    keys = {
        key: (blob_id, size)
        for blob_id, key, size in (
            await session.execute(select(Blob.id, Blob.storage_key, Blob.size))
        ).all()
    }
    open_uploads = set((await session.scalars(select(MultipartUpload.storage_key))).all())
    try:
        stored = [key async for key in store.list_keys()]
    except StorageError as exc:
        report.problems.append(f"storage: cannot list objects ({type(exc).__name__})")
        return
    report.checked["objects"] = len(stored)
    present = set(stored)
    for key, (blob_id, size) in keys.items():
        if key not in present:
            report.problems.append(f"blob {blob_id}: object {key} missing from storage")
        elif deep:
            actual = await store.size(key)
            if actual != size:
                report.problems.append(f"blob {blob_id}: object is {actual} bytes, row {size}")
    for key in stored:
        if key in keys or key in open_uploads:
            continue
        report.orphans.append(key)


async def run(db: Database, *, storage: bool = True, deep: bool = False) -> Report:
    report = Report()
    async with db.read_sessionmaker() as session:
        await _blob_refs(session, report)
        await _drive_usage(session, report)
        await _current_versions(session, report)
        await _task_counters(session, report)
        if storage:
            await _storage(session, db, report, deep)
    return report


async def delete_orphans(db: Database, report: Report) -> int:
    """Remove orphan objects found by `run` (re-checked against the rows first)."""
    deleted = 0
    async with db.read_sessionmaker() as session:
        for key in report.orphans:
            referenced = await session.scalar(select(Blob.id).where(Blob.storage_key == key))
            in_use = await session.scalar(
                select(MultipartUpload.id).where(MultipartUpload.storage_key == key)
            )
            if referenced is None and in_use is None:
                await db.storage.delete(key)
                deleted += 1
    return deleted


__all__ = ["PENDING_PREFIX", "Report", "delete_orphans", "register_reference", "run"]
