"""Upload tasks over HTTP: the manifest (validation matrix, folders, quota), listings,
progress, cancel, delete and the exported storage manifest. Each test ends with the accounting
invariants recounted in SQL (and the `app` fixture's fsck)."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.conftest import API, bearer, register
from tests.uploads.helpers import (
    assert_accounting,
    create_task,
    default_drive_id,
    drive_usage,
    entry,
    ids_by_path,
    make_drive,
    make_team_drive,
    scalar,
    sql,
    store_file,
    user_id,
)

pytestmark = pytest.mark.anyio
MD5_X = "0" * 32


def blank(path: str, size: int = 10) -> dict[str, Any]:
    return {"path": path, "size": size, "md5": MD5_X}


async def upload(client: httpx.AsyncClient, headers: dict, task: dict, file_id: str, data: bytes):
    return await client.post(
        f"{API}/upload-tasks/{task['id']}/files/{file_id}/upload",
        content=data,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )


async def test_manifest_creates_task_folders_and_reservation(client, app) -> None:
    tokens = await register(client)
    headers = bearer(tokens)
    files = [
        entry("shots/a/b.png", b"x" * 100, mtime="2026-01-02T03:04:05Z", mime_type="image/png"),
        entry("shots/a/c.png", b"y" * 50),
        entry("shots/d/e.txt", b"z" * 7),
        entry("readme.md", b""),  # zero bytes are allowed
        {"path": "/Shots/A/F.PNG", "size": 3, "md5": "ABCDEF0123456789ABCDEF0123456789"},
    ]
    task = await create_task(
        client, headers, files, target_path="/projects/2026", client_info={"app": "desktop"}
    )
    assert task["status"] == "pending" and task["name"] == "shots"
    assert task["total_files"] == 5 and task["total_bytes"] == 160
    assert task["reserved_bytes"] == 160 and task["conflict"] == "rename"
    assert task["client_info"] == {"app": "desktop"}
    assert [f["position"] for f in task["files"]] == [0, 1, 2, 3, 4]
    assert [f["path"] for f in task["files"]] == [
        "shots/a/b.png",
        "shots/a/c.png",
        "shots/d/e.txt",
        "readme.md",
        "Shots/A/F.PNG",
    ]
    assert all(f["status"] == "pending" and f["id"].isdigit() for f in task["files"])

    drive_id = await default_drive_id(app, user_id(tokens))
    assert task["drive_id"] == str(drive_id)
    assert await drive_usage(app, drive_id) == (0, 160)
    paths = {row[0] for row in await sql(app, "SELECT path FROM folders")}
    assert paths == {
        "/",
        "/projects",
        "/projects/2026",
        "/projects/2026/shots",
        "/projects/2026/shots/a",
        "/projects/2026/shots/d",
        "/projects/2026/Shots",
        "/projects/2026/Shots/A",
    }
    rows = await sql(
        app,
        "SELECT f.name, f.md5, f.reserved, d.path, f.mime_type FROM upload_task_files f"
        " JOIN folders d ON d.id = f.folder_id ORDER BY f.position",
    )
    assert rows[0][0] == "b.png" and rows[0][3] == "/projects/2026/shots/a"
    assert rows[0][4] == "image/png" and all(row[2] for row in rows)
    assert rows[4][1] == "abcdef0123456789abcdef0123456789"  # lower-cased

    # the same folders again: reused, not duplicated
    again = await create_task(
        client, headers, [blank("shots/a/new.png")], target_path="projects/2026"
    )
    assert again["folder_id"] == task["folder_id"]
    assert await scalar(app, "SELECT COUNT(*) FROM folders") == 8
    await assert_accounting(app)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../x.png", "dotdot"),
        ("a/../x.png", "dotdot-inside"),
        ("a//b.png", "empty segment"),
        ("a/b\x01.png", "control char"),
        ("a/b\x00.png", "nul"),
        ("x" * 256 + ".png", "long name"),
        ("/".join(["d" * 200] * 11) + "/x.png", "long path"),
        ("a/ b.png", "leading space"),
        ("/", "root"),
        ("a/./b.png", "dot"),
    ],
)
async def test_bad_paths_answer_400_with_the_entry_index(client, app, path, reason) -> None:
    headers = bearer(await register(client))
    body = await create_task(
        client, headers, [blank("ok/1.png"), blank(path)], expect=400, name="bad"
    )
    assert body["error"] == "INVALID_PATH", reason
    assert body["details"][0]["index"] == 1 and body["details"][0]["field"] == "files.1.path"
    assert await scalar(app, "SELECT COUNT(*) FROM upload_tasks") == 0
    assert await scalar(app, "SELECT COUNT(*) FROM folders WHERE path <> '/'") == 0
    await assert_accounting(app)


async def test_manifest_validation_matrix(client, app) -> None:
    headers = bearer(await register(client))
    dup = await create_task(
        client, headers, [blank("a/b.png"), blank("c.png"), blank("/a/b.png")], expect=400
    )
    assert dup["error"] == "INVALID_PATH" and dup["details"][0]["index"] == 2
    assert dup["details"][0]["duplicate_of"] == 0
    clash = await create_task(client, headers, [blank("a"), blank("a/b.png")], expect=400)
    assert clash["error"] == "INVALID_PATH" and clash["details"][0]["index"] == 1

    bad_md5 = await create_task(
        client, headers, [blank("a.png"), {"path": "b", "size": 1, "md5": "xyz"}], expect=422
    )
    assert bad_md5["error"] == "VALIDATION_ERROR"
    assert any(d["field"] == "body.files.1.md5" for d in bad_md5["details"])
    negative = await create_task(
        client, headers, [{"path": "b", "size": -1, "md5": MD5_X}], expect=422
    )
    assert any(d["field"] == "body.files.0.size" for d in negative["details"])
    assert (await create_task(client, headers, [], expect=422))["error"] == "VALIDATION_ERROR"
    extra = await create_task(client, headers, [{**blank("a"), "evil": 1}], expect=422)
    assert extra["error"] == "VALIDATION_ERROR"
    naive = await create_task(
        client, headers, [blank("a.bin") | {"mtime": "2026-01-01T00:00:00"}], name="naive"
    )
    assert naive["total_files"] == 1  # a time without offset is read as UTC
    for bad_info in ({"x": "a" * 9000}, {"x": "\u0000"}):
        body = await create_task(client, headers, [blank("z")], client_info=bad_info, expect=422)
        assert body["error"] == "VALIDATION_ERROR"
    conflict = await create_task(client, headers, [blank("z")], conflict="merge", expect=422)
    assert conflict["error"] == "VALIDATION_ERROR"
    await assert_accounting(app)


@pytest.mark.parametrize("settings_overrides", [{"upload_max_manifest_files": 3}])
async def test_too_many_files(client, app) -> None:
    headers = bearer(await register(client))
    body = await create_task(client, headers, [blank(f"f{i}") for i in range(4)], expect=400)
    assert body["error"] == "BAD_REQUEST" and body["details"]["max_files"] == 3
    assert len((await create_task(client, headers, [blank(f"f{i}") for i in range(3)]))["files"])
    await assert_accounting(app)


async def test_drive_policy_access_and_quota(client, app) -> None:
    alice_tokens, bob_tokens = await register(client, "alice"), await register(client, "bob")
    alice, bob = user_id(alice_tokens), user_id(bob_tokens)
    headers = bearer(alice_tokens)

    policy = await make_drive(app, alice, denied_types=["exe"], max_file_size=1000)
    denied = await create_task(
        client, headers, [blank("a.png"), blank("b/setup.EXE")], drive_id=str(policy), expect=400
    )
    assert denied["error"] == "FILE_TYPE_NOT_ALLOWED" and denied["details"][0]["index"] == 1
    too_big = await create_task(
        client, headers, [blank("big.bin", 1001)], drive_id=str(policy), expect=413
    )
    assert too_big["error"] == "FILE_TOO_LARGE" and too_big["details"][0]["index"] == 0

    bobs = await default_drive_id(app, bob)
    foreign = await create_task(client, headers, [blank("x")], drive_id=str(bobs), expect=404)
    assert foreign["error"] == "NOT_FOUND"
    missing = await create_task(client, headers, [blank("x")], drive_id="123456789", expect=404)
    assert missing == foreign | {"message": missing["message"]}
    bobs_root = await scalar(app, "SELECT root_folder_id FROM drives WHERE id = :id", id=bobs)
    wrong_folder = await create_task(
        client, headers, [blank("x")], folder_id=str(bobs_root), expect=404
    )
    assert wrong_folder["error"] == "NOT_FOUND"

    _team, team_drive = await make_team_drive(app, bob, {alice: "viewer"})
    viewer = await create_task(client, headers, [blank("x")], drive_id=str(team_drive), expect=403)
    assert viewer["error"] == "FORBIDDEN"
    await sql(app, "UPDATE team_members SET role = 'member' WHERE user_id = :u", u=alice)
    member = await create_task(client, headers, [blank("x")], drive_id=str(team_drive))
    assert member["drive_id"] == str(team_drive)

    small = await make_drive(app, alice, quota_bytes=1000)
    first = await create_task(client, headers, [blank("keep/a", 600)], drive_id=str(small))
    folders_before = await scalar(app, "SELECT COUNT(*) FROM folders WHERE drive_id = :d", d=small)
    tasks_before = await scalar(app, "SELECT COUNT(*) FROM upload_tasks")
    over = await create_task(
        client,
        headers,
        [blank("new/deep/a", 300), blank("new/b", 101)],
        drive_id=str(small),
        expect=413,
    )
    assert over["error"] == "QUOTA_EXCEEDED"
    assert await scalar(app, "SELECT COUNT(*) FROM upload_tasks") == tasks_before
    assert (
        await scalar(app, "SELECT COUNT(*) FROM folders WHERE drive_id = :d", d=small)
        == folders_before
    )
    assert await drive_usage(app, small) == (0, 600)
    fits = await create_task(client, headers, [blank("new/b", 400)], drive_id=str(small))
    assert fits["reserved_bytes"] == 400 and first["reserved_bytes"] == 600
    assert await drive_usage(app, small) == (0, 1000)
    await assert_accounting(app)


async def test_listing_filter_pagination_and_ownership(client, app) -> None:
    alice, bob = bearer(await register(client, "alice")), bearer(await register(client, "bob"))
    created = [
        await create_task(client, alice, [blank(f"t{i}/f")], name=f"task {i}") for i in range(3)
    ]
    cancel = await client.put(f"{API}/upload-tasks/{created[1]['id']}/cancel", headers=alice)
    assert cancel.status_code == 200, cancel.text

    listing = (await client.get(f"{API}/upload-tasks", headers=alice)).json()["data"]
    assert [t["name"] for t in listing["items"]] == ["task 2", "task 1", "task 0"]
    assert listing["total"] == 3 and listing["pages"] == 1
    page = (await client.get(f"{API}/upload-tasks?page=2&page_size=2", headers=alice)).json()
    assert [t["name"] for t in page["data"]["items"]] == ["task 0"]
    assert page["data"]["pages"] == 2
    cancelled = (await client.get(f"{API}/upload-tasks?status=cancelled", headers=alice)).json()[
        "data"
    ]
    assert [t["id"] for t in cancelled["items"]] == [created[1]["id"]]
    bad = await client.get(f"{API}/upload-tasks?status=bogus", headers=alice)
    assert bad.status_code == 422

    assert (await client.get(f"{API}/upload-tasks", headers=bob)).json()["data"]["total"] == 0
    task_url = f"{API}/upload-tasks/{created[0]['id']}"
    for method, suffix in [
        ("GET", ""),
        ("GET", "/files"),
        ("GET", "/progress"),
        ("PUT", "/cancel"),
        ("DELETE", ""),
        ("POST", "/export-manifest"),
    ]:
        response = await client.request(method, task_url + suffix, headers=bob)
        assert response.status_code == 404, (method, suffix)
        assert response.json()["error"] == "NOT_FOUND"
    unknown = await client.get(f"{API}/upload-tasks/99999999", headers=alice)
    assert unknown.status_code == 404
    assert (await client.get(f"{API}/upload-tasks/abc", headers=alice)).status_code == 422
    assert (await client.get(f"{API}/upload-tasks")).status_code == 401
    await assert_accounting(app)


async def test_files_detail_and_progress(client, app) -> None:
    headers = bearer(await register(client))
    good, bad = os.urandom(1000), os.urandom(3000)
    task = await create_task(
        client, headers, [entry("a.bin", good), entry("b.bin", bad), entry("c.bin", b"")]
    )
    ids = ids_by_path(task)
    assert (await upload(client, headers, task, ids["a.bin"], good)).status_code == 200
    wrong = await upload(client, headers, task, ids["b.bin"], os.urandom(3000))
    assert wrong.status_code == 400

    url = f"{API}/upload-tasks/{task['id']}"
    files = (await client.get(f"{url}/files", headers=headers)).json()["data"]
    by_path = {f["path"]: f for f in files["items"]}
    assert [f["position"] for f in files["items"]] == [0, 1, 2]
    assert by_path["a.bin"]["status"] == "completed" and by_path["a.bin"]["file_id"]
    assert by_path["a.bin"]["attempts"] == 1 and by_path["a.bin"]["can_retry"] is False
    assert by_path["b.bin"]["status"] == "failed" and by_path["b.bin"]["can_retry"] is True
    assert by_path["b.bin"]["error"]
    assert by_path["c.bin"]["status"] == "pending" and by_path["c.bin"]["file_id"] is None
    failed = (await client.get(f"{url}/files?status=failed", headers=headers)).json()["data"]
    assert [f["id"] for f in failed["items"]] == [ids["b.bin"]]
    await sql(app, "UPDATE upload_task_files SET attempts = 3 WHERE id = :i", i=int(ids["b.bin"]))
    failed = (await client.get(f"{url}/files?status=failed", headers=headers)).json()["data"]
    assert failed["items"][0]["can_retry"] is False
    paged = (await client.get(f"{url}/files?page=2&page_size=2", headers=headers)).json()
    assert [f["path"] for f in paged["data"]["items"]] == ["c.bin"]

    detail = (await client.get(url, headers=headers)).json()["data"]
    assert detail["status"] == "uploading"
    assert (detail["completed_files"], detail["failed_files"]) == (1, 1)
    assert (detail["remaining_files"], detail["pending_files"]) == (1, 1)
    assert detail["remaining_bytes"] == 0 and detail["percent_files"] == 33.33
    assert detail["percent_bytes"] == 25.0 and detail["reserved_bytes"] == 0

    # ten seconds since the task started: 1000 bytes in 10 s
    started = datetime.now(UTC) - timedelta(seconds=10)
    await sql(app, "UPDATE upload_tasks SET started_at = :s", s=started)
    progress = (await client.get(f"{url}/progress", headers=headers)).json()["data"]
    assert progress["total_files"] == 3 and progress["done_files"] == 1
    assert progress["total_bytes"] == 4000 and progress["done_bytes"] == 1000
    assert progress["transferred_bytes"] == 1000 and progress["percent"] == 25.0
    assert 95 <= progress["rate_bytes_per_second"] <= 100.5
    assert progress["eta_seconds"] == 0.0  # only the empty file is left
    assert progress["counts"] == {
        "pending": 1,
        "uploading": 0,
        "completed": 1,
        "instant": 0,
        "failed": 1,
        "cancelled": 0,
    }
    await assert_accounting(app)


async def test_progress_eta_and_unknowns(client, app) -> None:
    headers = bearer(await register(client))
    first, second = os.urandom(2000), os.urandom(6000)
    task = await create_task(client, headers, [entry("1", first), entry("2", second)])
    url = f"{API}/upload-tasks/{task['id']}"
    fresh = (await client.get(f"{url}/progress", headers=headers)).json()["data"]
    assert fresh["rate_bytes_per_second"] is None and fresh["eta_seconds"] is None
    assert fresh["elapsed_seconds"] is None and fresh["percent"] == 0.0
    assert fresh["remaining_bytes"] == 8000
    ids = ids_by_path(task)
    assert (await upload(client, headers, task, ids["1"], first)).status_code == 200
    await sql(
        app, "UPDATE upload_tasks SET started_at = :s", s=datetime.now(UTC) - timedelta(seconds=20)
    )
    progress = (await client.get(f"{url}/progress", headers=headers)).json()["data"]
    assert 99 <= progress["rate_bytes_per_second"] <= 100.5  # 2000 bytes in 20 s
    assert 59 <= progress["eta_seconds"] <= 61  # 6000 bytes left
    assert progress["percent"] == 25.0 and progress["status"] == "uploading"
    await assert_accounting(app)


async def test_cancel_releases_reservations_and_aborts_multipart(client, app) -> None:
    tokens = await register(client)
    headers = bearer(tokens)
    done, broken = os.urandom(500), os.urandom(700)
    big = 6 * 1024 * 1024
    task = await create_task(
        client,
        headers,
        [entry("done.bin", done), entry("broken.bin", broken), blank("big.bin", big), blank("p")],
    )
    ids = ids_by_path(task)
    drive_id = int(task["drive_id"])
    assert await drive_usage(app, drive_id) == (0, 500 + 700 + big + 10)
    assert (await upload(client, headers, task, ids["done.bin"], done)).status_code == 200
    wrong = os.urandom(700)
    assert (await upload(client, headers, task, ids["broken.bin"], wrong)).status_code == 400
    init = await client.post(
        f"{API}/upload-tasks/{task['id']}/files/{ids['big.bin']}/multipart/init",
        json={},
        headers=headers,
    )
    assert init.status_code in (200, 201), init.text
    assert await scalar(app, "SELECT COUNT(*) FROM multipart_uploads") == 1

    url = f"{API}/upload-tasks/{task['id']}"
    response = await client.put(f"{url}/cancel", headers=headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "cancelled" and data["finished_at"]
    assert (data["completed_files"], data["cancelled_files"], data["failed_files"]) == (1, 3, 0)
    assert data["reserved_bytes"] == 0 and data["remaining_files"] == 0
    assert await drive_usage(app, drive_id) == (500, 0)
    assert await scalar(app, "SELECT COUNT(*) FROM multipart_uploads") == 0
    statuses = dict(await sql(app, "SELECT relative_path, status FROM upload_task_files"))
    assert statuses == {
        "done.bin": "completed",
        "broken.bin": "cancelled",
        "big.bin": "cancelled",
        "p": "cancelled",
    }

    twice = await client.put(f"{url}/cancel", headers=headers)
    assert twice.status_code == 409 and twice.json()["error"] == "INVALID_STATE"
    late = await upload(client, headers, task, ids["p"], b"x" * 10)
    assert late.status_code == 409

    finished = await create_task(client, headers, [entry("only.bin", done)])
    only = ids_by_path(finished)["only.bin"]
    assert (await upload(client, headers, finished, only, done)).status_code == 200
    refused = await client.put(f"{API}/upload-tasks/{finished['id']}/cancel", headers=headers)
    assert refused.status_code == 409 and refused.json()["error"] == "INVALID_STATE"
    await assert_accounting(app)


async def test_delete_cancels_and_keeps_drive_files(client, app) -> None:
    headers = bearer(await register(client))
    data = os.urandom(300)
    task = await create_task(client, headers, [entry("k/keep.bin", data), blank("k/x", 999)])
    ids = ids_by_path(task)
    drive_id = int(task["drive_id"])
    assert (await upload(client, headers, task, ids["k/keep.bin"], data)).status_code == 200
    assert await drive_usage(app, drive_id) == (300, 999)

    response = await client.delete(f"{API}/upload-tasks/{task['id']}", headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == {"id": task["id"], "deleted": True, "cancelled_files": 1}
    assert (
        await client.get(f"{API}/upload-tasks/{task['id']}", headers=headers)
    ).status_code == 404
    assert await scalar(app, "SELECT COUNT(*) FROM upload_task_files") == 0
    assert await drive_usage(app, drive_id) == (300, 0)
    assert await scalar(app, "SELECT name FROM files") == "keep.bin"
    again = await client.delete(f"{API}/upload-tasks/{task['id']}", headers=headers)
    assert again.status_code == 404

    finished = await create_task(client, headers, [entry("z.bin", data)])
    await upload(client, headers, finished, ids_by_path(finished)["z.bin"], data)
    gone = await client.delete(f"{API}/upload-tasks/{finished['id']}", headers=headers)
    assert gone.json()["data"]["cancelled_files"] == 0
    assert await scalar(app, "SELECT COUNT(*) FROM files") == 2
    await assert_accounting(app)


async def test_export_manifest(client, app) -> None:
    tokens = await register(client)
    headers = bearer(tokens)
    data = os.urandom(1234)
    task = await create_task(client, headers, [entry("a/x.bin", data), blank("a/y.bin")])
    ids = ids_by_path(task)
    assert (await upload(client, headers, task, ids["a/x.bin"], data)).status_code == 200
    response = await client.post(
        f"{API}/upload-tasks/{task['id']}/export-manifest", headers=headers
    )
    assert response.status_code == 200, response.text
    manifest = response.json()["data"]
    assert manifest["task_id"] == task["id"]
    assert manifest["summary"] == {
        "total_files": 2,
        "completed_files": 1,
        "instant_files": 0,
        "failed_files": 0,
        "cancelled_files": 0,
        "total_bytes": 1244,
        "saved_bytes": 0,
    }
    first, second = manifest["files"]
    key, sha = (await sql(app, "SELECT storage_key, sha256 FROM blobs"))[0]
    file_id = await scalar(app, "SELECT id FROM files")
    assert first == {
        "path": "a/x.bin",
        "task_file_id": ids["a/x.bin"],
        "file_id": str(file_id),
        "size": 1234,
        "md5": entry("", data)["md5"],
        "sha256": sha,
        "storage_key": key,
        "status": "completed",
    }
    assert second["status"] == "pending" and second["storage_key"] is None
    assert second["file_id"] is None and second["sha256"] is None
    await assert_accounting(app)


async def test_ten_thousand_entries_in_a_hundred_folders(client, app) -> None:
    headers = bearer(await register(client))
    files = [blank(f"shots/s{i % 100:03d}/frame{i:05d}.exr", 100) for i in range(10_000)]
    folder_queries = 0

    def count(_conn, _cursor, statement, *_args) -> None:
        nonlocal folder_queries
        if statement.lstrip().upper().startswith("SELECT") and "FROM folders" in statement:
            folder_queries += 1

    engine = app.state.db.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    started = time.perf_counter()
    try:
        task = await create_task(client, headers, files, name="big")
    finally:
        event.remove(engine, "before_cursor_execute", count)
    elapsed = time.perf_counter() - started
    print(f"10,000-file manifest: {elapsed:.2f} s, {folder_queries} folder queries")
    assert len(task["files"]) == 10_000 and task["total_bytes"] == 1_000_000
    assert folder_queries < 400  # one per folder (and per parent), not one per file
    assert elapsed < 6  # about a second on SQLite; generous for slow CI machines
    assert await scalar(app, "SELECT COUNT(*) FROM folders") == 102
    assert await scalar(app, "SELECT COUNT(*) FROM upload_task_files") == 10_000
    listing = (
        await client.get(
            f"{API}/upload-tasks/{task['id']}/files?page=100&page_size=100", headers=headers
        )
    ).json()["data"]
    assert listing["items"][-1]["path"] == "shots/s099/frame09999.exr"

    started = time.perf_counter()
    cancel = await client.put(f"{API}/upload-tasks/{task['id']}/cancel", headers=headers)
    print(f"cancelling 10,000 files: {time.perf_counter() - started:.2f} s")
    assert cancel.json()["data"]["cancelled_files"] == 10_000
    assert await drive_usage(app, int(task["drive_id"])) == (0, 0)
    await assert_accounting(app)


async def test_name_of_existing_file_blocks_folder_creation(client, app) -> None:
    tokens = await register(client)
    await store_file(app, user_id(tokens), "clash", b"content")
    body = await create_task(client, bearer(tokens), [blank("clash/a.png")], expect=409)
    assert body["error"] == "NAME_CONFLICT" and body["details"] == {"folder": "clash"}
    assert await scalar(app, "SELECT COUNT(*) FROM upload_tasks") == 0
    await assert_accounting(app)
