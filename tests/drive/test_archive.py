"""Streaming ZIP archives (checked with zipfile and `unzip -t`) and the archive job that saves a
task's ZIP into its drive with exact accounting, or fails leaving nothing behind."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import zipfile
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import func, select, update

from tests.conftest import API, bearer, register
from tests.drive.download_helpers import (
    accounting,
    make_task,
    md5,
    pending_keys,
    put_file,
    storage_kind,
    storage_overrides,
    user_id,
)
from yuntu.drive import scenes
from yuntu.drive.zipstream import (
    ArchiveError,
    Member,
    archive_size,
    member_name,
    unique_names,
    zip_stream,
)
from yuntu.kit.errors import AppError
from yuntu.models.drive import Blob, Drive, DriveFile, Folder
from yuntu.storage import blobs
from yuntu.storage.base import BlobStore

pytestmark = pytest.mark.anyio
__all__ = ["storage_kind"]
UNZIP = shutil.which("unzip")
MTIME = "2024-02-29T13:45:30Z"


@pytest.fixture
def settings_overrides(storage_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    return {"workers": 1, "worker_poll_interval_seconds": 0.1} | storage_overrides(
        storage_kind, request
    )


local_only = pytest.mark.parametrize("storage_kind", ["local"], indirect=True)

FILES = {
    "shots/a.bin": os.urandom(3 * 1024 * 1024 + 5),  # several store chunks
    "shots/镜头 二/ü 文件.txt": "内容 content".encode() * 300,
    "empty.txt": b"",
    "notes/readme.md": b"# hello\n",
}


def check_zip(body: bytes, expected: dict[str, bytes], tmp_path: Path) -> zipfile.ZipFile:
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    infos = archive.infolist()
    assert [info.filename for info in infos] == list(expected)
    for info in infos:
        data = expected[info.filename]
        assert archive.read(info) == data
        assert zlib.crc32(data) == info.CRC
        assert info.file_size == info.compress_size == len(data)
        assert info.compress_type == zipfile.ZIP_STORED
        assert info.extract_version == 45  # ZIP64
        assert info.flag_bits & 0x0800  # UTF-8 names
        assert (info.external_attr >> 16) == 0o100644
    # ZIP64 end record and locator right before the classic end record
    assert body[-22:-18] == b"PK\x05\x06"
    assert body[-42:-38] == b"PK\x06\x07"
    (zip64_end,) = struct.unpack("<Q", body[-34:-26])
    assert body[zip64_end : zip64_end + 4] == b"PK\x06\x06"
    if UNZIP:
        path = tmp_path / "check.zip"
        path.write_bytes(body)
        result = subprocess.run([UNZIP, "-t", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "No errors detected" in result.stdout
    return archive


async def test_task_zip_streams_every_finished_file(
    client: httpx.AsyncClient, app: Any, storage_kind: str, tmp_path: Path
) -> None:
    tokens = await register(client)
    headers = bearer(tokens)
    files = {**FILES, "failed.bin": b"never arrives"}
    task = await make_task(
        client,
        headers,
        files,
        app=app,
        fail=frozenset({"failed.bin"}),
        name="素材 第1批",
        mtime=MTIME,
    )
    response = await client.get(f"{API}/upload-tasks/{task['id']}/archive.zip", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Length"] == str(len(response.content))
    disposition = response.headers["Content-Disposition"]
    assert disposition.endswith("''%E7%B4%A0%E6%9D%90%20%E7%AC%AC1%E6%89%B9.zip")
    archive = check_zip(response.content, FILES, tmp_path)
    for info in archive.infolist():
        assert info.date_time == (2024, 2, 29, 13, 45, 30)


@local_only
async def test_task_zip_rules(client: httpx.AsyncClient, app: Any, storage_kind: str) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    task = await make_task(client, bearer(alice), {"a.txt": b"a"}, app=app)
    url = f"{API}/upload-tasks/{task['id']}/archive.zip"
    foreign = await client.get(url, headers=bearer(bob))
    missing = await client.get(f"{API}/upload-tasks/987654321/archive.zip", headers=bearer(bob))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    assert (await client.get(url)).status_code == 401

    pending = await make_task(
        client, bearer(alice), {"p.txt": b"p"}, app=app, skip=frozenset({"p.txt"}), name="p"
    )
    refused = await client.get(
        f"{API}/upload-tasks/{pending['id']}/archive.zip", headers=bearer(alice)
    )
    assert refused.status_code == 409 and refused.json()["error"] == "INVALID_STATE"

    # the only finished file was deleted from the drive since: nothing left to archive
    async with app.state.db.transaction() as session:
        await session.execute(
            update(DriveFile).values(trashed_at=DriveFile.created_at, trash_root_id=DriveFile.id)
        )
    gone = await client.get(url, headers=bearer(alice))
    assert gone.status_code == 409


@local_only
async def test_folder_zip(
    client: httpx.AsyncClient, app: Any, storage_kind: str, tmp_path: Path
) -> None:
    alice, bob = await register(client, "alice"), await register(client, "bob")
    owner = user_id(alice)
    first = await put_file(app, owner, "one.txt", b"1", folder="/项目/a_b%")
    await put_file(app, owner, "two.bin", b"22" * 5000, folder="/项目/a_b%/deep")
    await put_file(app, owner, "outside.txt", b"not included", folder="/项目/a_bX")
    await put_file(app, owner, "root.txt", b"root file")
    folder_id = first["folder_id"]
    url = f"{API}/drives/{first['drive_id']}/folders/{folder_id}/archive.zip"
    response = await client.get(url, headers=bearer(alice))
    assert response.status_code == 200, response.text
    check_zip(
        response.content,
        {"a_b%/one.txt": b"1", "a_b%/deep/two.bin": b"22" * 5000},
        tmp_path,
    )
    assert (await client.get(url, headers=bearer(bob))).status_code == 404

    async with app.state.db.read_sessionmaker() as session:
        root_id = await session.scalar(
            select(Drive.root_folder_id).where(Drive.id == first["drive_id"])
        )
    whole = await client.get(
        f"{API}/drives/{first['drive_id']}/folders/{root_id}/archive.zip", headers=bearer(alice)
    )
    names = zipfile.ZipFile(io.BytesIO(whole.content)).namelist()
    assert sorted(names) == sorted(
        [
            "默认盘/root.txt",
            "默认盘/项目/a_b%/one.txt",
            "默认盘/项目/a_b%/deep/two.bin",
            "默认盘/项目/a_bX/outside.txt",
        ]
    )


# -- the writer itself ----------------------------------------------------------------------------
class MemoryStore:
    """Just enough of a BlobStore for zip_stream: objects in a dict, read in small chunks."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        return self.objects[key][offset : offset + length]

    async def read(self, key: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        data = self.objects[key][start:end]
        for offset in range(0, len(data), 7000):
            yield data[offset : offset + 7000]


async def collect(members: list[Member], store: Any) -> bytes:
    return b"".join([chunk async for chunk in zip_stream(members, store)])


async def test_writer_sizes_names_and_times(tmp_path: Path) -> None:
    # small members (read at once) and large ones (streamed in 7000-byte chunks)
    objects = {f"k{i}": os.urandom(i * 3001 + (i % 2) * 300_000) for i in range(40)}
    when = datetime(1975, 1, 1, tzinfo=UTC)  # before DOS time: clamped, still readable
    members = [
        Member(name=f"d/{i % 3}/f{i}.bin", size=len(data), storage_key=key, modified=when)
        for i, (key, data) in enumerate(objects.items())
    ]
    body = await collect(members, MemoryStore(objects))
    assert len(body) == archive_size(members)
    expected = {m.name: objects[m.storage_key] for m in members}
    archive = check_zip(body, expected, tmp_path)
    assert archive.infolist()[0].date_time == (1980, 1, 1, 0, 0, 0)


@pytest.mark.parametrize("actual", [3, 5, 299_999, 300_001])
async def test_writer_refuses_an_object_of_the_wrong_size(actual: int) -> None:
    recorded = 4 if actual < 10 else 300_000
    store = MemoryStore({"k": b"x" * actual})
    member = Member(name="x", size=recorded, storage_key="k", modified=datetime.now(UTC))
    with pytest.raises(ArchiveError):
        await collect([member], store)


def test_member_names_are_safe_and_unique() -> None:
    assert member_name("/../a/./b//c.txt") == "a/b/c.txt"
    assert member_name("..\\..\\x") == "x"
    assert member_name("../..") == "file"
    assert unique_names(["a.txt", "d/a.txt", "a.txt", "a.txt", "d/a.txt"]) == [
        "a.txt",
        "d/a.txt",
        "a (1).txt",
        "a (2).txt",
        "d/a (1).txt",
    ]


# -- the archive job ------------------------------------------------------------------------------
async def wait_job(client: httpx.AsyncClient, headers: dict[str, str], job_id: str) -> dict:
    with anyio.fail_after(30):
        while True:
            response = await client.get(f"{API}/jobs/{job_id}", headers=headers)
            assert response.status_code == 200, response.text
            job = response.json()["data"]
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            await anyio.sleep(0.1)


async def test_archive_job_saves_the_zip_into_the_drive(
    client: httpx.AsyncClient, app: Any, storage_kind: str, tmp_path: Path
) -> None:
    tokens = await register(client)
    headers = bearer(tokens)
    task = await make_task(client, headers, FILES, app=app, name="batch", mtime=MTIME)
    before = await accounting(app)

    queued = await client.post(f"{API}/upload-tasks/{task['id']}/archive", headers=headers)
    assert queued.status_code == 202, queued.text
    assert queued.json()["data"]["status"] == "queued"
    job = await wait_job(client, headers, queued.json()["data"]["job_id"])
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert result["path"] == "/archives/batch.zip" and result["files"] == len(FILES)

    response = await client.get(result["download_url"]) if storage_kind == "local" else None
    if response is None:
        async with httpx.AsyncClient() as http:
            response = await http.get(result["download_url"])
    assert response.status_code == 200
    check_zip(response.content, FILES, tmp_path)
    assert result["size"] == len(response.content) and result["md5"] == md5(response.content)

    after = await accounting(app)
    assert after["files"] == before["files"] + 1
    assert after["blobs"] == before["blobs"] + 1
    assert after["refs"] == before["refs"] + 1
    assert after["used"] == before["used"] + result["size"] == after["version_bytes"]
    assert after["reserved"] == 0
    assert await pending_keys(app) == []

    # the same archive again, named: identical bytes share the blob, counted twice
    again = await client.post(
        f"{API}/upload-tasks/{task['id']}/archive",
        headers=headers,
        json={"archive_name": "batch"},
    )
    second = await wait_job(client, headers, again.json()["data"]["job_id"])
    assert second["status"] == "succeeded", second
    assert second["result"]["path"] == "/archives/batch (1).zip"
    assert second["result"]["sha256"] == result["sha256"]
    final = await accounting(app)
    assert final["blobs"] == after["blobs"] and final["refs"] == after["refs"] + 1
    assert final["used"] == after["used"] + result["size"]
    async with app.state.db.read_sessionmaker() as session:
        refs = await session.scalar(select(Blob.ref_count).where(Blob.sha256 == result["sha256"]))
    assert refs == 2


@local_only
async def test_archive_job_over_quota_leaves_nothing(
    client: httpx.AsyncClient, app: Any, storage_kind: str
) -> None:
    tokens = await register(client)
    headers = bearer(tokens)
    task = await make_task(client, headers, FILES, app=app)
    async with app.state.db.transaction() as session:
        await session.execute(update(Drive).values(quota_bytes=Drive.used_bytes + 1000))
    before = await accounting(app)
    queued = await client.post(f"{API}/upload-tasks/{task['id']}/archive", headers=headers)
    assert queued.status_code == 202
    job = await wait_job(client, headers, queued.json()["data"]["job_id"])
    assert job["status"] == "failed"
    assert "QUOTA_EXCEEDED" in job["last_error"]
    assert job["attempts"] == 1  # a permanent failure: no retry
    assert await accounting(app) == before
    assert await pending_keys(app) == []
    async with app.state.db.read_sessionmaker() as session:
        archives = await session.scalar(
            select(func.count(Folder.id)).where(Folder.path == "/archives")
        )
    assert archives == 0


@local_only
async def test_save_staged_refusal_discards_the_bytes(
    client: httpx.AsyncClient, app: Any, storage_kind: str
) -> None:
    """The quota race: the job's early check passed but the drive filled up meanwhile."""
    tokens = await register(client)
    placed = await put_file(app, user_id(tokens), "seed.txt", b"seed")
    async with app.state.db.transaction() as session:
        await session.execute(update(Drive).values(quota_bytes=Drive.used_bytes + 10))
    store: BlobStore = app.state.storage
    before = await accounting(app)

    async def body() -> AsyncIterator[bytes]:
        yield os.urandom(100)

    staged = await blobs.ingest(store, body())
    with pytest.raises(AppError) as caught:
        await scenes.save_staged(
            app.state.db,
            staged,
            drive_id=placed["drive_id"],
            user_id=user_id(tokens),
            folder_segments=["archives"],
            name="x.zip",
        )
    assert caught.value.spec.name == "QUOTA_EXCEEDED"
    assert await pending_keys(app) == []
    assert await accounting(app) == before


@local_only
async def test_archive_request_rules(client: httpx.AsyncClient, app: Any, storage_kind: str):
    alice, bob = await register(client, "alice"), await register(client, "bob")
    task = await make_task(client, bearer(alice), {"a.txt": b"a"}, app=app)
    url = f"{API}/upload-tasks/{task['id']}/archive"
    assert (await client.post(url, headers=bearer(bob))).status_code == 404
    missing = await client.post(
        f"{API}/upload-tasks/7262149437321216/archive",
        headers=bearer(alice),
        json={"archive_name": None, "format": "zip"},
    )
    assert missing.status_code == 404
    bad = await client.post(url, headers=bearer(alice), json={"archive_name": "a\x00b"})
    assert bad.status_code == 422
    wrong = await client.post(url, headers=bearer(alice), json={"format": "tar"})
    assert wrong.status_code == 422
    slashed = await client.post(url, headers=bearer(alice), json={"archive_name": "../x/y.ZIP"})
    assert slashed.status_code == 202
    job = await wait_job(client, bearer(alice), slashed.json()["data"]["job_id"])
    assert job["result"]["path"] == "/archives/.._x_y.zip"
