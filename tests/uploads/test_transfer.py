"""Sending bytes: direct upload, multipart (in order, out of order, resumed, presigned), retry,
faults. Every test ends with fsck clean (the `app` fixture checks), so nothing half-written."""

from __future__ import annotations

import base64
import hashlib
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from tests.conftest import API, bearer, register
from yuntu.models.drive import Blob, Drive
from yuntu.models.uploads import MultipartUpload, UploadTaskFile

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


@pytest.fixture(params=["local", "s3"])
def storage_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def settings_overrides(storage_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    if storage_kind == "s3":
        return {"storage_url": request.getfixturevalue("s3_storage_url")}
    return {}


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def make_task(
    client: httpx.AsyncClient, headers: dict[str, str], files: dict[str, bytes], **extra: Any
) -> dict[str, Any]:
    manifest = [{"path": path, "size": len(data), "md5": md5(data)} for path, data in files.items()]
    response = await client.post(
        f"{API}/upload-tasks", json={"name": "t", "files": manifest, **extra}, headers=headers
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def file_ids(task: dict[str, Any]) -> dict[str, str]:
    return {entry["path"]: entry["id"] for entry in task["files"]}


async def stored_bytes(app: Any, task_file_id: str) -> bytes:
    async with app.state.db.read_sessionmaker() as session:
        row = await session.get(UploadTaskFile, int(task_file_id))
        assert row is not None and row.sha256 is not None
        blob = await session.scalar(select(Blob).where(Blob.sha256 == row.sha256))
        assert blob is not None
    chunks = [chunk async for chunk in app.state.storage.read(blob.storage_key)]
    return b"".join(chunks)


async def drive_usage(app: Any) -> tuple[int, int]:
    async with app.state.db.read_sessionmaker() as session:
        used, reserved = (
            await session.execute(
                select(func.sum(Drive.used_bytes), func.sum(Drive.reserved_bytes))
            )
        ).one()
    return int(used or 0), int(reserved or 0)


async def test_direct_upload_raw_and_form(client: httpx.AsyncClient, app: Any) -> None:
    headers = bearer(await register(client))
    raw, form = os.urandom(1000), "你好 form body".encode() * 50
    task = await make_task(client, headers, {"a/raw.bin": raw, "b/form.txt": form})
    ids = file_ids(task)
    base = f"{API}/upload-tasks/{task['id']}/files"

    response = await client.post(
        f"{base}/{ids['a/raw.bin']}/upload",
        content=raw,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    result = response.json()["data"]
    assert result["status"] == "completed"
    assert result["sha256"] == hashlib.sha256(raw).hexdigest()
    assert result["file_id"] is not None

    response = await client.post(
        f"{base}/{ids['b/form.txt']}/upload", files={"file": ("form.txt", form)}, headers=headers
    )
    assert response.status_code == 200, response.text
    assert await stored_bytes(app, ids["b/form.txt"]) == form
    assert await stored_bytes(app, ids["a/raw.bin"]) == raw

    detail = (await client.get(f"{API}/upload-tasks/{task['id']}", headers=headers)).json()
    assert detail["data"]["status"] == "completed"
    assert detail["data"]["completed_files"] == 2
    assert await drive_usage(app) == (len(raw) + len(form), 0)

    # sending it again: the file is finished
    again = await client.post(f"{base}/{ids['a/raw.bin']}/upload", content=raw, headers=headers)
    assert again.status_code == 409
    assert again.json()["error"] == "INVALID_STATE"


async def test_wrong_md5_fails_the_file_keeps_nothing_and_retry_works(
    client: httpx.AsyncClient, app: Any
) -> None:
    headers = bearer(await register(client))
    data = os.urandom(4096)
    task = await make_task(client, headers, {"x.bin": data})
    file_id = file_ids(task)["x.bin"]
    url = f"{API}/upload-tasks/{task['id']}/files/{file_id}"

    bad = await client.post(f"{url}/upload", content=os.urandom(4096), headers=headers)
    assert bad.status_code == 400
    assert bad.json()["error"] == "CHECKSUM_MISMATCH"
    truncated_retry = await client.put(f"{url}/retry", headers=headers)
    assert truncated_retry.status_code == 200
    short = await client.post(f"{url}/upload", content=data[:-1], headers=headers)
    assert short.json()["error"] == "SIZE_MISMATCH"
    async with app.state.db.read_sessionmaker() as session:
        assert await session.scalar(select(func.count(Blob.id))) == 0
    assert await drive_usage(app) == (0, 0)  # the failed file gave its reservation back

    assert (await client.put(f"{url}/retry", headers=headers)).status_code == 200
    assert await drive_usage(app) == (0, len(data))  # reserved again
    ok = await client.post(f"{url}/upload", content=data, headers=headers)
    assert ok.status_code == 200
    assert ok.json()["data"]["attempts"] == 3
    assert await drive_usage(app) == (len(data), 0)


async def test_retry_limit(client: httpx.AsyncClient) -> None:
    headers = bearer(await register(client))
    task = await make_task(client, headers, {"x.bin": b"abc"})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['x.bin']}"
    for attempt in range(3):
        response = await client.post(f"{url}/upload", content=b"abd", headers=headers)
        assert response.json()["error"] == "CHECKSUM_MISMATCH"
        retry = await client.put(f"{url}/retry", headers=headers)
        if attempt < 2:
            assert retry.status_code == 200
        else:
            assert retry.status_code == 409
            assert retry.json()["error"] == "RETRY_LIMIT"
    status = await client.get(f"{API}/upload-tasks/{task['id']}", headers=headers)
    assert status.json()["data"]["status"] == "failed"


async def test_direct_upload_limit(client: httpx.AsyncClient) -> None:
    headers = bearer(await register(client))
    big = b"\0" * (5 * MiB + 1)
    task = await make_task(client, headers, {"big.bin": big})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['big.bin']}/upload"
    response = await client.post(url, content=big, headers=headers)
    assert response.status_code == 413


async def send_part(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], n: int, data: bytes, **extra: str
) -> httpx.Response:
    return await client.post(
        f"{url}/multipart/upload",
        params={"part_number": n},
        content=data,
        headers={**headers, **extra},
    )


async def test_multipart_out_of_order_resend_resume_and_complete(
    client: httpx.AsyncClient, app: Any
) -> None:
    headers = bearer(await register(client))
    data = os.urandom(12 * MiB + 12345)
    task = await make_task(client, headers, {"video/big.mov": data})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['video/big.mov']}"

    init = await client.post(f"{url}/multipart/init", json={}, headers=headers)
    assert init.status_code == 200, init.text
    plan = init.json()["data"]
    assert (plan["part_size"], plan["part_count"]) == (5 * MiB, 3)
    ps = plan["part_size"]
    parts = [data[i * ps : (i + 1) * ps] for i in range(3)]

    assert (await send_part(client, url, headers, 3, parts[2])).status_code == 200
    # a part sent with garbage, then re-sent: the second copy replaces the first
    assert (await send_part(client, url, headers, 1, os.urandom(ps))).status_code == 200
    checked = base64.b64encode(hashlib.md5(parts[0]).digest()).decode()
    resent = await send_part(client, url, headers, 1, parts[0], **{"Content-MD5": checked})
    assert resent.status_code == 200

    # the client "restarts": init again returns the same upload; the listing says what is left
    again = await client.post(f"{url}/multipart/init", json={}, headers=headers)
    assert again.json()["data"]["upload_id"] == plan["upload_id"]
    listing = (await client.get(f"{url}/multipart", headers=headers)).json()["data"]
    assert listing["missing"] == [2]
    assert listing["received_bytes"] == ps + len(parts[2])

    early = await client.post(f"{url}/multipart/complete", headers=headers)
    assert early.status_code == 400
    assert early.json()["error"] == "PARTS_MISSING"
    assert early.json()["details"]["missing"] == [2]

    assert (await send_part(client, url, headers, 2, parts[1])).status_code == 200
    done = await client.post(f"{url}/multipart/complete", headers=headers)
    assert done.status_code == 200, done.text
    assert done.json()["data"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert await stored_bytes(app, file_ids(task)["video/big.mov"]) == data

    twice = await client.post(f"{url}/multipart/complete", headers=headers)
    assert twice.status_code == 409


async def test_multipart_bad_parts(client: httpx.AsyncClient) -> None:
    headers = bearer(await register(client))
    data = os.urandom(6 * MiB)
    task = await make_task(client, headers, {"f.bin": data})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['f.bin']}"
    before_init = await send_part(client, url, headers, 1, data[: 5 * MiB])
    assert before_init.status_code == 404
    assert (await client.post(f"{url}/multipart/init", json={}, headers=headers)).status_code == 200

    out_of_range = await send_part(client, url, headers, 3, b"x")
    assert out_of_range.json()["error"] == "INVALID_PART"
    zero = await send_part(client, url, headers, 0, b"x")
    assert zero.status_code == 422
    short = await send_part(client, url, headers, 1, data[:1000])
    assert short.json()["error"] == "INVALID_PART"
    long_last = await send_part(client, url, headers, 2, data[5 * MiB :] + b"extra")
    assert long_last.json()["error"] == "INVALID_PART"
    wrong_md5 = await send_part(
        client,
        url,
        headers,
        1,
        data[: 5 * MiB],
        **{"Content-MD5": base64.b64encode(b"0" * 16).decode()},
    )
    assert wrong_md5.json()["error"] == "CHECKSUM_MISMATCH"
    not_b64 = await send_part(client, url, headers, 1, data[: 5 * MiB], **{"Content-MD5": "%%"})
    assert not_b64.status_code == 400

    # whole-file checksum mismatch on complete: the file fails and nothing is kept
    assert (await send_part(client, url, headers, 1, data[: 5 * MiB])).status_code == 200
    wrong_tail = os.urandom(MiB)
    assert (await send_part(client, url, headers, 2, wrong_tail)).status_code == 200
    complete = await client.post(f"{url}/multipart/complete", headers=headers)
    assert complete.json()["error"] == "CHECKSUM_MISMATCH"
    state = (await client.get(f"{API}/upload-tasks/{task['id']}", headers=headers)).json()["data"]
    assert state["failed_files"] == 1


async def test_abort_and_cancel_drop_parts(client: httpx.AsyncClient, app: Any) -> None:
    headers = bearer(await register(client))
    data = os.urandom(6 * MiB)
    task = await make_task(client, headers, {"f.bin": data, "g.bin": data[:100]})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['f.bin']}"
    await client.post(f"{url}/multipart/init", json={}, headers=headers)
    await send_part(client, url, headers, 1, data[: 5 * MiB])
    aborted = await client.post(f"{url}/multipart/abort", headers=headers)
    assert aborted.status_code == 200
    assert aborted.json()["data"]["status"] == "pending"
    # start again, then cancel the whole task mid-upload
    await client.post(f"{url}/multipart/init", json={}, headers=headers)
    await send_part(client, url, headers, 1, data[: 5 * MiB])
    cancelled = await client.put(f"{API}/upload-tasks/{task['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    late = await send_part(client, url, headers, 2, data[5 * MiB :])
    assert late.status_code == 404
    async with app.state.db.read_sessionmaker() as session:
        assert await session.scalar(select(func.count(MultipartUpload.id))) == 0
    assert await drive_usage(app) == (0, 0)


async def test_quota_exceeded_on_retry(client: httpx.AsyncClient, app: Any) -> None:
    headers = bearer(await register(client))
    drive = (await client.get(f"{API}/drives/default", headers=headers)).json()["data"]
    async with app.state.db.transaction() as session:
        await session.execute(
            update(Drive).where(Drive.id == int(drive["id"])).values(quota_bytes=1000)
        )
    first = await make_task(client, headers, {"a.bin": b"a" * 600})
    url = f"{API}/upload-tasks/{first['id']}/files/{file_ids(first)['a.bin']}"
    assert (
        await client.post(f"{url}/upload", content=b"b" * 600, headers=headers)
    ).status_code == 400
    second = await make_task(client, headers, {"b.bin": b"c" * 600})
    surl = f"{API}/upload-tasks/{second['id']}/files/{file_ids(second)['b.bin']}"
    assert (
        await client.post(f"{surl}/upload", content=b"c" * 600, headers=headers)
    ).status_code == 200
    retry = await client.put(f"{url}/retry", headers=headers)
    assert retry.status_code == 413
    assert retry.json()["error"] == "QUOTA_EXCEEDED"
    assert await drive_usage(app) == (600, 0)


async def test_foreign_user_gets_404_everywhere(client: httpx.AsyncClient) -> None:
    owner = bearer(await register(client, "owner"))
    other = bearer(await register(client, "intruder"))
    task = await make_task(client, owner, {"f.bin": b"hello"})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['f.bin']}"
    calls = [
        client.post(f"{url}/upload", content=b"hello", headers=other),
        client.post(f"{url}/multipart/init", json={}, headers=other),
        client.post(
            f"{url}/multipart/upload", params={"part_number": 1}, content=b"x", headers=other
        ),
        client.get(f"{url}/multipart", headers=other),
        client.post(f"{url}/multipart/complete", headers=other),
        client.post(f"{url}/multipart/abort", headers=other),
        client.put(f"{url}/retry", headers=other),
    ]
    for call in calls:
        response = await call
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "NOT_FOUND"
    ok = await client.post(f"{url}/upload", content=b"hello", headers=owner)
    assert ok.status_code == 200


async def test_idle_multipart_expires(client: httpx.AsyncClient, app: Any) -> None:
    from yuntu.uploads.transfer import expire_idle_uploads

    headers = bearer(await register(client))
    data = os.urandom(6 * MiB)
    task = await make_task(client, headers, {"f.bin": data})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['f.bin']}"
    await client.post(f"{url}/multipart/init", json={}, headers=headers)
    await send_part(client, url, headers, 1, data[: 5 * MiB])
    assert await expire_idle_uploads(app.state.db, timedelta(hours=24)) == 0
    async with app.state.db.transaction() as session:
        await session.execute(
            update(MultipartUpload).values(last_activity_at=datetime.now(UTC) - timedelta(hours=25))
        )
    assert await expire_idle_uploads(app.state.db, timedelta(hours=24)) == 1
    files = (await client.get(f"{API}/upload-tasks/{task['id']}/files", headers=headers)).json()
    assert files["data"]["items"][0]["status"] == "failed"
    assert await drive_usage(app) == (0, 0)


async def test_presigned_direct_parts(
    client: httpx.AsyncClient, app: Any, storage_kind: str
) -> None:
    headers = bearer(await register(client))
    data = os.urandom(5 * MiB + 10)
    task = await make_task(client, headers, {"d.bin": data})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['d.bin']}"
    init = await client.post(f"{url}/multipart/init", json={"direct": True}, headers=headers)
    if storage_kind == "local":
        assert init.status_code == 400
        assert init.json()["error"] == "DIRECT_PARTS_UNAVAILABLE"
        return
    plan = init.json()["data"]
    assert [p["part_number"] for p in plan["part_urls"]] == [1, 2]
    async with httpx.AsyncClient() as raw:
        for part in plan["part_urls"]:
            start = (part["part_number"] - 1) * plan["part_size"]
            put = await raw.put(part["url"], content=data[start : start + part["size"]])
            assert put.status_code == 200, put.text
    listing = (await client.get(f"{url}/multipart", headers=headers)).json()["data"]
    assert listing["missing"] == []
    done = await client.post(f"{url}/multipart/complete", headers=headers)
    assert done.status_code == 200, done.text
    assert await stored_bytes(app, file_ids(task)["d.bin"]) == data
