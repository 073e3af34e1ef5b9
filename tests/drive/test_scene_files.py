"""The render client's paths: `POST /files/upload` into `/scenes/...` of the default drive and
`GET /files/download/{task_id}/{filename}` redirecting to a signed link."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from tests.conftest import API, bearer, register
from tests.drive.download_helpers import (
    accounting,
    make_task,
    md5,
    pending_keys,
    sha256,
    storage_kind,
    storage_overrides,
)
from yuntu.models.drive import Drive

pytestmark = pytest.mark.anyio
__all__ = ["storage_kind"]


@pytest.fixture
def settings_overrides(storage_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    return storage_overrides(storage_kind, request)


local_only = pytest.mark.parametrize("storage_kind", ["local"], indirect=True)


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    name: str,
    data: bytes,
    task_id: str | None = None,
    query: dict[str, str] | None = None,
) -> httpx.Response:
    form = {"task_id": task_id} if task_id is not None else None
    return await client.post(
        f"{API}/files/upload",
        files={"file": (name, data, "application/octet-stream")},
        data=form,
        headers=headers,
        params=query,
    )


async def follow(client: httpx.AsyncClient, response: httpx.Response) -> httpx.Response:
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    if location.startswith("http://yuntu.test/"):
        return await client.get(location)
    async with httpx.AsyncClient() as http:
        return await http.get(location)


async def test_upload_then_download(client: httpx.AsyncClient, app: Any, storage_kind: str):
    tokens = await register(client)
    headers = bearer(tokens)
    data = os.urandom(2 * 1024 * 1024 + 3)
    response = await upload(client, headers, "scene 场景.blend", data, task_id="local_1700000000")
    assert response.status_code == 200, response.text
    body = response.json()["data"]
    assert body["path"] == "/scenes/local_1700000000/scene 场景.blend"
    assert (body["size"], body["md5"], body["sha256"]) == (len(data), md5(data), sha256(data))
    assert body["is_duplicated"] is False

    fetched = await follow(
        client,
        await client.get(
            f"{API}/files/download/local_1700000000/scene 场景.blend", headers=headers
        ),
    )
    assert fetched.status_code == 200 and fetched.content == data

    # same content under another name: stored once; same name: renamed
    again = await upload(client, headers, "copy.blend", data, task_id="local_1700000000")
    assert again.json()["data"]["is_duplicated"] is True
    clash = await upload(client, headers, "scene 场景.blend", b"v2", task_id="local_1700000000")
    assert clash.json()["data"]["path"] == "/scenes/local_1700000000/scene 场景 (1).blend"
    totals = await accounting(app)
    assert totals["blobs"] == 2 and totals["refs"] == 3
    assert totals["used"] == 2 * len(data) + 2

    # the task id may follow the file in the form; the part's own Content-Type is optional
    body = (
        b'--b0undary\r\nContent-Disposition: form-data; name="file"; filename="late.txt"'
        b"\r\n\r\nfile first\r\n--b0undary\r\nContent-Disposition: form-data; "
        b'name="task_id"\r\n\r\nlate-task\r\n--b0undary--\r\n'
    )
    late = await client.post(
        f"{API}/files/upload",
        content=body,
        headers={**headers, "Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert late.status_code == 200, late.text
    assert late.json()["data"]["path"] == "/scenes/late-task/late.txt"
    assert late.json()["data"]["size"] == len(b"file first")

    plain = await upload(client, headers, "x.txt", b"no task")
    assert plain.json()["data"]["path"] == "/scenes/x.txt"
    queried = await upload(client, headers, "q.txt", b"query", query={"task_id": "r-9"})
    assert queried.json()["data"]["path"] == "/scenes/r-9/q.txt"


@local_only
async def test_download_from_an_upload_task(client, app, storage_kind):
    alice, bob = await register(client, "alice"), await register(client, "bob")
    files = {"renders/frame_0001.png": b"png 1", "renders/sub/frame_0001.png": b"png 2"}
    task = await make_task(client, bearer(alice), files, app=app)
    base = f"{API}/files/download/{task['id']}"
    by_path = await follow(
        client, await client.get(f"{base}/renders/sub/frame_0001.png", headers=bearer(alice))
    )
    assert by_path.content == b"png 2"
    by_name = await follow(
        client, await client.get(f"{base}/frame_0001.png", headers=bearer(alice))
    )
    assert by_name.content == b"png 1"  # the first in manifest order

    foreign = await client.get(f"{base}/frame_0001.png", headers=bearer(bob))
    assert foreign.status_code == 404 and foreign.json()["error"] == "NOT_FOUND"
    missing = await client.get(f"{base}/nope.png", headers=bearer(alice))
    assert missing.status_code == 404
    assert (await client.get(f"{base}/frame_0001.png")).status_code == 401


@local_only
async def test_bad_input(client, app, storage_kind):
    tokens = await register(client)
    headers = bearer(tokens)
    no_file = await client.post(f"{API}/files/upload", data={"task_id": "t1"}, headers=headers)
    assert no_file.status_code == 422 and no_file.json()["error"] == "VALIDATION_ERROR"
    assert no_file.json()["details"][0]["field"] == "body.file"
    other_part = await client.post(
        f"{API}/files/upload", files={"other": ("a.txt", b"a")}, headers=headers
    )
    assert other_part.status_code == 422
    assert other_part.json()["details"][0]["field"] == "body.file"
    as_json = await client.post(f"{API}/files/upload", json={"file": "x"}, headers=headers)
    assert as_json.status_code == 415 and as_json.json()["error"] == "UNSUPPORTED_MEDIA_TYPE"
    broken = await client.post(
        f"{API}/files/upload",
        content=b"--xyz\r\nContent-Disposition: form-data; name=file; filename=a\r\n\r\nab",
        headers={**headers, "Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code in (400, 422), broken.text

    for task_id in ("", "..", "a/b", "bad\x01id", "x" * 129, "a b", "镜头"):
        refused = await upload(client, headers, "a.txt", b"a", task_id=task_id)
        assert refused.status_code in (400, 422), task_id
        assert refused.json()["error"] in ("INVALID_PATH", "VALIDATION_ERROR")
    by_query = await upload(client, headers, "a.txt", b"a", query={"task_id": "../x"})
    assert by_query.status_code == 422

    # a client-sent directory part is dropped; `..` alone is not a name
    stripped = await upload(client, headers, "../../etc/passwd", b"root:x")
    assert stripped.json()["data"]["path"] == "/scenes/passwd"
    dots = await upload(client, headers, "..", b"x")
    assert dots.status_code == 400 and dots.json()["error"] == "INVALID_PATH"

    await upload(client, headers, "ok.txt", b"ok", task_id="t1")
    for path in ("t1/..%2Fok.txt", "t1/a%2F..%2F..%2Fok.txt", "..%2Ft1/ok.txt", "t1/%00"):
        response = await client.get(f"{API}/files/download/{path}", headers=headers)
        assert response.status_code in (400, 404), path
        assert response.json()["error"] in ("INVALID_PATH", "NOT_FOUND")
    traversal = await client.get(f"{API}/files/download/t1/..%2Fok.txt", headers=headers)
    assert traversal.status_code == 400
    assert (await client.get(f"{API}/files/download/t2/ok.txt", headers=headers)).status_code == 404
    assert await pending_keys(app) == []


@local_only
async def test_upload_over_quota_keeps_nothing(client, app, storage_kind):
    tokens = await register(client)
    headers = bearer(tokens)
    first = await upload(client, headers, "a.bin", b"a" * 100)
    assert first.status_code == 200
    async with app.state.db.transaction() as session:
        await session.execute(update(Drive).values(quota_bytes=150))
    before = await accounting(app)
    refused = await upload(client, headers, "b.bin", os.urandom(100))
    assert refused.status_code == 413
    assert refused.json()["error"] == "QUOTA_EXCEEDED"
    assert await accounting(app) == before
    assert await pending_keys(app) == []
