"""Signed download links: round trips on local disk and S3, forged and expired links, Range,
If-None-Match, If-Range, HEAD, RFC 5987 names, upload-task link lists, and access rules."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import pytest
from sqlalchemy import update

from tests.conftest import API, bearer, register
from tests.drive.download_helpers import (
    make_task,
    md5,
    put_file,
    sha256,
    storage_kind,
    storage_overrides,
    user_id,
)
from yuntu.drive import tree
from yuntu.drive.downloads import RangeNotSatisfiable, parse_range, signer_of
from yuntu.models.drive import DriveFile
from yuntu.storage.s3 import content_disposition

pytestmark = pytest.mark.anyio
__all__ = ["storage_kind"]


@pytest.fixture
def settings_overrides(storage_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    return storage_overrides(storage_kind, request)


local_only = pytest.mark.parametrize("storage_kind", ["local"], indirect=True)


async def link_for(
    client: httpx.AsyncClient, headers: dict[str, str], placed: dict[str, int], **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"{API}/drives/{placed['drive_id']}/files/{placed['file_id']}/download",
        headers=headers,
        params=params,
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def fetch(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """Our own links go through the app; presigned S3 links to the storage server."""
    if url.startswith("http://yuntu.test/"):
        return await client.request(kwargs.pop("method", "GET"), url, **kwargs)
    async with httpx.AsyncClient() as http:
        return await http.request(kwargs.pop("method", "GET"), url, **kwargs)


async def test_signed_link_round_trip(client: httpx.AsyncClient, app: Any, storage_kind: str):
    tokens = await register(client)
    data = os.urandom(3 * 1024 * 1024 + 17)
    name = '报告 "final"; 100%.bin'
    placed = await put_file(app, user_id(tokens), name, data)
    link = await link_for(client, bearer(tokens), placed)
    assert link["filename"] == name
    assert (link["size"], link["md5"], link["sha256"]) == (len(data), md5(data), sha256(data))
    expires_at = datetime.fromisoformat(link["expires_at"].replace("Z", "+00:00"))
    assert 3590 <= (expires_at - datetime.now(UTC)).total_seconds() <= 3601
    response = await fetch(client, link["url"])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Disposition"] == content_disposition(name)
    if storage_kind == "local":
        assert link["url"].startswith("http://yuntu.test/dl/")
        assert response.headers["ETag"] == f'"{sha256(data)}"'
        assert response.headers["Accept-Ranges"] == "bytes"
        assert response.headers["Content-Length"] == str(len(data))
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert response.headers["Cache-Control"].startswith("private, max-age=")
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "code" not in response.headers.get("Content-Type", "")
    else:
        query = parse_qs(urlsplit(link["url"]).query)
        assert "X-Amz-Signature" in query
        assert query["X-Amz-Expires"] == ["3600"]

    redirect = await client.get(
        f"{API}/drives/{placed['drive_id']}/files/{placed['file_id']}/download",
        headers=bearer(tokens),
        params={"redirect": "true", "expires_in": 120},
    )
    assert redirect.status_code == 302
    followed = await fetch(client, redirect.headers["Location"])
    assert followed.status_code == 200 and followed.content == data


@local_only
async def test_content_disposition_keeps_unicode_and_quotes(client, app, storage_kind):
    tokens = await register(client)
    name = '镜头 "A\'s" 100% ü.mp4'
    placed = await put_file(app, user_id(tokens), name, b"x" * 10)
    link = await link_for(client, bearer(tokens), placed)
    response = await client.get(link["url"])
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith('attachment; filename="')
    fallback = disposition.split('filename="', 1)[1].split('"', 1)[0]
    assert fallback.isascii() and '"' not in fallback and "%" not in fallback
    encoded = disposition.split("filename*=UTF-8''", 1)[1]
    assert unquote(encoded) == name
    assert response.headers["Content-Type"] == "video/mp4"


@local_only
async def test_expired_and_tampered_links_are_refused(client, app, storage_kind):
    tokens = await register(client)
    data = b"secret bytes"
    placed = await put_file(app, user_id(tokens), "a.txt", data)
    link = await link_for(client, bearer(tokens), placed)
    url = urlsplit(link["url"])
    query = {key: values[0] for key, values in parse_qs(url.query).items()}
    good = await client.get(link["url"])
    assert good.status_code == 200 and good.content == data

    signer = signer_of(app.state.db)
    past = int(time.time()) - 5
    expired = signer.path(placed["blob_id"], "a.txt", past, query["ct"])
    response = await client.get(expired)
    assert response.status_code == 403
    assert response.json()["error"] == "FORBIDDEN"
    assert response.json()["message"] == "download link expired"

    other = await put_file(app, user_id(tokens), "b.txt", b"other content")
    variants = [
        url.path.replace("a.txt", "b.txt") + "?" + url.query,  # another name
        url.path.replace(str(placed["blob_id"]), str(other["blob_id"])) + "?" + url.query,
        url.path + "?" + url.query.replace(f"exp={query['exp']}", f"exp={int(query['exp']) + 9}"),
        url.path + "?" + url.query.replace("ct=text%2Fplain", "ct=text%2Fhtml"),
        url.path + "?" + url.query.replace(query["sig"], "0" * 64),
        url.path + "?" + url.query.replace(f"sig={query['sig']}", "sig=zz"),
        url.path,  # no query at all
        "/dl/abc/a.txt?" + url.query,
        "/dl/0/a.txt?" + url.query,
        "/dl/99999999999999999999/a.txt?" + url.query,
    ]
    for variant in variants:
        refused = await client.get(variant)
        assert refused.status_code == 403, variant
        assert refused.json()["error"] == "FORBIDDEN"
        assert refused.json()["data"] is None


@local_only
async def test_ranges(client, app, storage_kind):
    tokens = await register(client)
    data = bytes(range(256)) * 8192  # 2 MiB: ranges cross the store's 1 MiB chunks
    placed = await put_file(app, user_id(tokens), "r.bin", data)
    url = (await link_for(client, bearer(tokens), placed))["url"]
    size = len(data)
    cases = {
        "bytes=0-9": (0, 10),
        "bytes=10-": (10, size),
        "bytes=-5": (size - 5, size),
        "bytes=1048570-1048590": (1048570, 1048591),
        f"bytes=5-{size * 4}": (5, size),
        f"bytes=-{size * 2}": (0, size),
        f"bytes={size - 1}-": (size - 1, size),
        "BYTES = 3 - 4": (3, 5),
    }
    for header, (start, end) in cases.items():
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 206, header
        assert response.content == data[start:end], header
        assert response.headers["Content-Range"] == f"bytes {start}-{end - 1}/{size}"
        assert response.headers["Content-Length"] == str(end - start)

    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 416, header
        assert response.headers["Content-Range"] == f"bytes */{size}"
        assert response.json()["error"] == "RANGE_NOT_SATISFIABLE"
        assert response.json()["code"] == 416001

    # ignored: several ranges, bad syntax, reversed, other units -> the whole body
    for header in ("bytes=0-1,4-5", "bytes=a-b", "bytes=9-2", "items=0-1", "bytes=-", "bytes"):
        response = await client.get(url, headers={"Range": header})
        assert response.status_code == 200, header
        assert response.content == data


@local_only
async def test_conditional_requests_and_head(client, app, storage_kind):
    tokens = await register(client)
    data = os.urandom(5000)
    placed = await put_file(app, user_id(tokens), "c.bin", data)
    url = (await link_for(client, bearer(tokens), placed))["url"]
    first = await client.get(url)
    etag, last_modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag == f'"{sha256(data)}"'

    for value in (etag, "*", f"W/{etag}", f'"nope", {etag}'):
        response = await client.get(url, headers={"If-None-Match": value})
        assert response.status_code == 304, value
        assert response.content == b""
        assert response.headers["ETag"] == etag
    assert (await client.get(url, headers={"If-None-Match": '"other"'})).status_code == 200

    ranged = {"Range": "bytes=100-199"}
    same = await client.get(url, headers={**ranged, "If-Range": etag})
    assert same.status_code == 206 and same.content == data[100:200]
    by_date = await client.get(url, headers={**ranged, "If-Range": last_modified})
    assert by_date.status_code == 206 and by_date.content == data[100:200]
    for stale in ('"another-version"', f"W/{etag}", "Mon, 01 Jan 2001 00:00:00 GMT"):
        changed = await client.get(url, headers={**ranged, "If-Range": stale})
        assert changed.status_code == 200, stale
        assert changed.content == data

    head = await client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["ETag"] == etag
    head_range = await client.head(url, headers={"Range": "bytes=-10"})
    assert head_range.status_code == 206
    assert head_range.headers["Content-Range"] == f"bytes {len(data) - 10}-{len(data) - 1}/5000"
    assert head_range.content == b""


@local_only
async def test_empty_file(client, app, storage_kind):
    tokens = await register(client)
    placed = await put_file(app, user_id(tokens), "empty.txt", b"")
    url = (await link_for(client, bearer(tokens), placed))["url"]
    response = await client.get(url)
    assert response.status_code == 200 and response.content == b""
    assert response.headers["Content-Length"] == "0"
    assert (await client.get(url, headers={"Range": "bytes=0-"})).status_code == 416
    assert (await client.get(url, headers={"Range": "bytes=-1"})).status_code == 416


@local_only
async def test_access_rules_and_versions(client, app, storage_kind):
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    old, new = b"version one", b"version two!"
    placed = await put_file(app, user_id(alice), "v.txt", old)
    await put_file(app, user_id(alice), "v.txt", new, conflict=tree.Conflict.OVERWRITE)

    current = await link_for(client, bearer(alice), placed)
    assert (await client.get(current["url"])).content == new
    first = await link_for(client, bearer(alice), placed, version=1)
    assert (await client.get(first["url"])).content == old and first["md5"] == md5(old)
    missing_version = await client.get(
        f"{API}/drives/{placed['drive_id']}/files/{placed['file_id']}/download",
        headers=bearer(alice),
        params={"version": 7},
    )
    assert missing_version.status_code == 404

    base = f"{API}/drives/{placed['drive_id']}/files"
    foreign = await client.get(f"{base}/{placed['file_id']}/download", headers=bearer(bob))
    missing = await client.get(f"{base}/123456789/download", headers=bearer(alice))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()
    bobs = await put_file(app, user_id(bob), "b.txt", b"bob's")
    crossed = await client.get(
        f"{API}/drives/{bobs['drive_id']}/files/{placed['file_id']}/download",
        headers=bearer(bob),
    )
    assert crossed.status_code == 404
    assert (await client.get(f"{base}/{placed['file_id']}/download")).status_code == 401
    bad = await client.get(f"{base}/not-an-id/download", headers=bearer(alice))
    assert bad.status_code == 422


@local_only
async def test_purged_content_answers_404(client, app, storage_kind):
    tokens = await register(client)
    placed = await put_file(app, user_id(tokens), "gone.txt", b"soon gone")
    url = (await link_for(client, bearer(tokens), placed))["url"]
    async with app.state.db.transaction() as session:
        await tree.purge_files(session, placed["drive_id"], [placed["file_id"]])
    response = await client.get(url)
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


@local_only
async def test_trashed_file_has_no_link(client, app, storage_kind):
    tokens = await register(client)
    placed = await put_file(app, user_id(tokens), "t.txt", b"in the trash")
    async with app.state.db.transaction() as session:
        await session.execute(
            update(DriveFile)
            .where(DriveFile.id == placed["file_id"])
            .values(trashed_at=DriveFile.created_at, trash_root_id=placed["file_id"])
        )
    response = await client.get(
        f"{API}/drives/{placed['drive_id']}/files/{placed['file_id']}/download",
        headers=bearer(tokens),
    )
    assert response.status_code == 404


async def test_upload_task_links(client, app, storage_kind):
    alice = await register(client, "alice")
    headers = bearer(alice)
    files = {
        "shots/a.bin": os.urandom(2000),
        "shots/子目录/b 文件.txt": "内容".encode() * 100,
        "c.bin": os.urandom(10),
    }
    task = await make_task(client, headers, files, app=app, fail=frozenset({"c.bin"}))
    response = await client.get(f"{API}/upload-tasks/{task['id']}/download", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()["data"]
    assert body["task_id"] == task["id"]
    assert body["total"] == 2 and body["pages"] == 1 and body["page_size"] == 1000
    assert [item["path"] for item in body["files"]] == ["shots/a.bin", "shots/子目录/b 文件.txt"]
    for item in body["files"]:
        data = files[item["path"]]
        assert item["task_file_id"] == task["ids"][item["path"]]
        assert (item["size"], item["md5"]) == (len(data), md5(data))
        fetched = await fetch(client, item["url"])
        assert fetched.status_code == 200 and fetched.content == data
        name = item["path"].rsplit("/", 1)[-1]
        assert fetched.headers["Content-Disposition"] == content_disposition(name)

    paged = await client.get(
        f"{API}/upload-tasks/{task['id']}/download",
        headers=headers,
        params={"page": 2, "page_size": 1},
    )
    data = paged.json()["data"]
    assert data["pages"] == 2 and [f["path"] for f in data["files"]] == ["shots/子目录/b 文件.txt"]
    too_big = await client.get(
        f"{API}/upload-tasks/{task['id']}/download", headers=headers, params={"page_size": 1001}
    )
    assert too_big.status_code == 422


@local_only
async def test_upload_task_links_rules(client, app, storage_kind):
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    done = await make_task(client, bearer(alice), {"a.txt": b"a"}, app=app)
    foreign = await client.get(f"{API}/upload-tasks/{done['id']}/download", headers=bearer(bob))
    missing = await client.get(f"{API}/upload-tasks/424242/download", headers=bearer(bob))
    assert foreign.status_code == missing.status_code == 404
    assert foreign.json() == missing.json()

    waiting = await make_task(
        client, bearer(alice), {"b.txt": b"b"}, app=app, skip=frozenset({"b.txt"}), name="w"
    )
    response = await client.get(
        f"{API}/upload-tasks/{waiting['id']}/download", headers=bearer(alice)
    )
    assert response.status_code == 409
    assert response.json()["error"] == "INVALID_STATE"
    failed = await make_task(
        client, bearer(alice), {"c.txt": b"c"}, app=app, fail=frozenset({"c.txt"})
    )
    response = await client.get(
        f"{API}/upload-tasks/{failed['id']}/download", headers=bearer(alice)
    )
    assert response.status_code == 409


def test_parse_range_unit():
    assert parse_range(None, 10) is None
    assert parse_range("bytes=0-0", 10) == (0, 1)
    assert parse_range("bytes=2-", 10) == (2, 10)
    assert parse_range("bytes=-3", 10) == (7, 10)
    assert parse_range("bytes=-30", 10) == (0, 10)
    assert parse_range("bytes=0-1, 2-3", 10) is None
    assert parse_range("bytes=" + "9" * 300, 10) is None
    for header in ("bytes=10-", "bytes=-0", "bytes=11-12"):
        with pytest.raises(RangeNotSatisfiable):
            parse_range(header, 10)
