"""Helpers for the download, archive and render-client tests: files put into a drive through
the services, upload tasks made through the API, storage and accounting probes."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.conftest import API
from yuntu.drive import service as drives
from yuntu.drive import tree
from yuntu.drive.paths import Conflict, split_path
from yuntu.models.drive import Blob, Drive, DriveFile, FileVersion
from yuntu.models.uploads import UploadTask, UploadTaskFile
from yuntu.storage import blobs
from yuntu.storage.base import PENDING_PREFIX
from yuntu.uploads import states
from yuntu.uploads.states import FileStatus

MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def storage_kind(request: pytest.FixtureRequest) -> str:
    return request.param


def storage_overrides(storage_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if storage_kind == "s3":
        return {"storage_url": request.getfixturevalue("s3_storage_url")}
    return {}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def user_id(tokens: dict[str, Any]) -> int:
    return int(tokens["user"]["id"])


async def _one(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), MiB):
        yield data[start : start + MiB]


async def put_file(
    app: Any,
    owner_id: int,
    name: str,
    data: bytes,
    *,
    folder: str = "/",
    mtime: datetime | None = None,
    conflict: Conflict = Conflict.RENAME,
) -> dict[str, int]:
    """Store `data` as `folder/name` in the user's default drive (services, no HTTP)."""
    store = app.state.storage
    staged = await blobs.ingest(store, _one(data))
    async with app.state.db.transaction() as session:
        drive = await drives.ensure_default_drive(session, owner_id, writable=True)
        root = await tree.get_folder(session, drive, None)
        target = await tree.mkdir_p(session, drive, root, split_path(folder), owner_id)
        blob = await blobs.adopt_staged(session, staged)
        file = await tree.place_file(
            session, drive, target, name, blob, owner_id, conflict=conflict, mtime=mtime
        )
        return {
            "drive_id": drive.id,
            "file_id": file.id,
            "blob_id": blob.id,
            "folder_id": target.id,
            "version": file.version,
        }


async def finish_file(app: Any, task_id: str, task_file_id: str, data: bytes | None) -> None:
    """Move a task file through uploading to completed (its bytes stored and placed, as the
    transfer endpoints do) or, with `data` None, to failed: services only, so these tests do
    not depend on the transfer endpoints."""
    db = app.state.db
    async with db.transaction() as session:
        task = await session.get(UploadTask, int(task_id))
        row = await session.get(UploadTaskFile, int(task_file_id))
        assert task is not None and row is not None
        await states.move_file(session, task, row, FileStatus.UPLOADING)
    if data is None:
        async with db.transaction() as session:
            task = await session.get(UploadTask, int(task_id))
            row = await session.get(UploadTaskFile, int(task_file_id))
            assert task is not None and row is not None
            await states.move_file(session, task, row, FileStatus.FAILED, error="bad bytes")
        return
    staged = await blobs.ingest(app.state.storage, _one(data))
    assert (staged.size, staged.md5) == (len(data), md5(data))
    async with db.transaction() as session:
        task = await session.get(UploadTask, int(task_id))
        row = await session.get(UploadTaskFile, int(task_file_id))
        assert task is not None and row is not None
        drive = await session.get(Drive, task.drive_id)
        assert drive is not None
        folder = await tree.get_folder(session, drive, row.folder_id)
        blob = await blobs.adopt_staged(session, staged)
        file = await tree.place_file(
            session,
            drive,
            folder,
            row.name,
            blob,
            task.user_id,
            conflict=Conflict(task.conflict),
            reserved=row.size,
            mtime=row.mtime,
            mime_type=row.mime_type,
            source="client",
        )
        row.file_id, row.sha256 = file.id, staged.sha256
        await session.flush()
        await states.move_file(session, task, row, FileStatus.COMPLETED, consumed_reservation=True)


async def make_task(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    files: dict[str, bytes],
    *,
    app: Any,
    fail: frozenset[str] = frozenset(),
    skip: frozenset[str] = frozenset(),
    name: str = "t",
    mtime: str | None = None,
) -> dict[str, Any]:
    """An upload task created through the API, its files finished through the services.
    Paths in `fail` fail, paths in `skip` stay pending. Returns the task with `ids` (path ->
    task file id)."""
    manifest = [
        {"path": path, "size": len(data), "md5": md5(data), **({"mtime": mtime} if mtime else {})}
        for path, data in files.items()
    ]
    response = await client.post(
        f"{API}/upload-tasks", json={"name": name, "files": manifest}, headers=headers
    )
    assert response.status_code == 201, response.text
    task = response.json()["data"]
    ids = {entry["path"]: entry["id"] for entry in task["files"]}
    for path, data in files.items():
        if path not in skip:
            await finish_file(app, task["id"], ids[path], None if path in fail else data)
    task["ids"] = ids
    return task


async def read_object(app: Any, key: str) -> bytes:
    return b"".join([chunk async for chunk in app.state.storage.read(key)])


async def pending_keys(app: Any) -> list[str]:
    """Unfinished objects: pending keys no blob row records (S3 blobs keep their pending key)."""
    async with app.state.db.read_sessionmaker() as session:
        recorded = set((await session.scalars(select(Blob.storage_key))).all())
    keys = [key async for key in app.state.storage.list_keys(PENDING_PREFIX)]
    return [key for key in keys if key not in recorded]


async def accounting(app: Any) -> dict[str, int]:
    """Totals to compare before and after an operation."""
    async with app.state.db.read_sessionmaker() as session:
        blobs_count, refs = (
            await session.execute(select(func.count(Blob.id), func.sum(Blob.ref_count)))
        ).one()
        used, reserved = (
            await session.execute(
                select(func.sum(Drive.used_bytes), func.sum(Drive.reserved_bytes))
            )
        ).one()
        versions, version_bytes = (
            await session.execute(select(func.count(FileVersion.id), func.sum(FileVersion.size)))
        ).one()
        files = await session.scalar(select(func.count(DriveFile.id)))
    return {
        "blobs": int(blobs_count or 0),
        "refs": int(refs or 0),
        "used": int(used or 0),
        "reserved": int(reserved or 0),
        "versions": int(versions or 0),
        "version_bytes": int(version_bytes or 0),
        "files": int(files or 0),
    }
