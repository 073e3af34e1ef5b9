"""The trash over HTTP: trashing a folder takes its subtree, restore brings it back (into the
root when the original parent is gone, renamed when the name is taken), purge releases every
reference and byte, the purge job honours the retention, the blob GC deletes only unreferenced
content after the grace period. Reference counts and used_bytes are checked after each step."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from tests.drive.helpers import User, check_accounting, data, error, put_file, sql, sql_value, user
from yuntu.drive import jobs as drive_jobs
from yuntu.jobs import cron, registry

pytestmark = pytest.mark.anyio


@pytest.fixture
def storage_kind() -> str:
    return "local"  # the GC test parametrizes this to run on S3 too


@pytest.fixture
def settings_overrides(storage_kind: str, request: pytest.FixtureRequest) -> dict[str, Any]:
    overrides: dict[str, Any] = {"blob_gc_grace_hours": 0, "trash_retention_days": 7}
    if storage_kind == "s3":
        overrides["storage_url"] = request.getfixturevalue("s3_storage_url")
    return overrides


class FakeJobContext:
    """What a handler uses of JobContext: the job's payload, sessions, logs, checkpoints."""

    def __init__(self, app: Any, payload: dict[str, Any] | None = None) -> None:
        self.db = app.state.db
        self.job = SimpleNamespace(id=1, payload=payload or {})
        self.logs: list[str] = []
        self.checkpoints = 0

    def session(self) -> Any:
        return self.db.transaction()

    async def log(self, level: str, message: str) -> None:
        self.logs.append(message)

    async def checkpoint(self) -> None:
        self.checkpoints += 1


async def trash_names(who: User, did: str) -> list[tuple[str, str, str]]:
    page = data(await who.get(f"/drives/{did}/trash"))
    return [(i["type"], i["name"], i["original_path"]) for i in page["items"]]


async def refs(app) -> list[tuple[int, int]]:
    return sorted(await sql(app, "SELECT size, ref_count FROM blobs"))


async def tree_of(app, did: str) -> dict[str, Any]:
    folders = await sql(
        app,
        "SELECT path, trashed_at IS NOT NULL FROM folders WHERE drive_id = :d ORDER BY path",
        d=int(did),
    )
    return {path: bool(trashed) for path, trashed in folders}


async def test_trash_and_restore_a_folder(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    url = f"/drives/{did}/folders"
    c = data(await alice.post(url, json={"path": "/a/b/c", "parents": True}), 201)
    a_id = (await alice.children(did))["items"][0]["id"]
    await put_file(app, did, "one.bin", b"1" * 10, folder_id=c["id"])
    await put_file(app, did, "two.bin", b"2" * 20, folder_id=a_id)
    gone = data(await alice.delete(f"{url}/{a_id}"))
    assert gone == {"type": "folder", "id": a_id, "trashed": True, "purged": False}
    assert await alice.names(did) == []
    error(await alice.get(f"{url}/{c['id']}"), 404, "NOT_FOUND")
    assert await tree_of(app, did) == {"/": False, "/a": True, "/a/b": True, "/a/b/c": True}
    page = data(await alice.get(f"/drives/{did}/trash"))
    assert page["total"] == 1
    item = page["items"][0]
    assert (item["type"], item["original_path"], item["size"]) == ("folder", "/a", 30)
    assert item["trashed_by"] == alice.id and item["trashed_at"].endswith("Z")
    assert (await alice.drive(did))["used_bytes"] == 30  # still counted

    restored = data(await alice.post(f"/drives/{did}/trash/folder/{a_id}/restore"))
    assert restored == {"type": "folder", "id": a_id, "name": "a", "path": "/a"}
    assert await tree_of(app, did) == {"/": False, "/a": False, "/a/b": False, "/a/b/c": False}
    assert await alice.names(did, c["id"]) == ["one.bin"]
    assert data(await alice.get(f"/drives/{did}/trash"))["total"] == 0
    ops = data(await alice.get(f"/drives/{did}/operations"))["items"]
    assert (ops[0]["op"], ops[0]["before_path"], ops[0]["after_path"]) == ("restore", "/a", "/a")
    assert ops[1]["op"] == "delete" and ops[1]["before_path"] == "/a"
    await check_accounting(app)


async def test_restore_into_root_and_name_conflicts(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    url = f"/drives/{did}/folders"
    docs = await alice.mkdir(did, "docs")
    inner = await alice.mkdir(did, "inner", docs["id"])
    fid = await put_file(app, did, "a.txt", b"a", folder_id=docs["id"])
    await put_file(app, did, "deep.txt", b"deep", folder_id=inner["id"])
    data(await alice.delete(f"/drives/{did}/files/{fid}"))  # its own trash root
    data(await alice.delete(f"{url}/{inner['id']}"))  # another root
    data(await alice.delete(f"{url}/{docs['id']}"))  # the parent of both
    assert await trash_names(alice, did) == [
        ("folder", "docs", "/docs"),
        ("folder", "inner", "/docs/inner"),
        ("file", "a.txt", "/docs/a.txt"),
    ]
    # The original parent is trashed: the file comes back into the root.
    restored = data(await alice.post(f"/drives/{did}/trash/file/{fid}/restore"))
    assert restored["path"] == "/a.txt"
    # A folder named like the trashed one now exists: rename is the default.
    await alice.mkdir(did, "docs")
    body = {"conflict": "error"}
    error(
        await alice.post(f"/drives/{did}/trash/folder/{docs['id']}/restore", json=body),
        409,
        "NAME_CONFLICT",
    )
    back = data(await alice.post(f"/drives/{did}/trash/folder/{docs['id']}/restore"))
    assert back["path"] == "/docs (1)"
    # inner was trashed on its own before: it stays in the trash, its parent is live again.
    assert await trash_names(alice, did) == [("folder", "inner", "/docs/inner")]
    again = data(await alice.post(f"/drives/{did}/trash/folder/{inner['id']}/restore"))
    assert again["path"] == "/docs (1)/inner"
    file_path = await sql_value(app, "SELECT count(*) FROM files WHERE trashed_at IS NULL")
    assert file_path == 2
    deep = (await alice.children(did, inner["id"]))["items"][0]
    assert deep["path"] == "/docs (1)/inner/deep.txt"
    error(await alice.post(f"/drives/{did}/trash/folder/{inner['id']}/restore"), 404)
    error(await alice.post(f"/drives/{did}/trash/thing/{inner['id']}/restore"), 422)
    error(
        await alice.post(
            f"/drives/{did}/trash/folder/{inner['id']}/restore", json={"conflict": "overwrite"}
        ),
        422,
    )
    await check_accounting(app)


async def test_restore_follows_a_moved_parent(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    src = await alice.mkdir(did, "src")
    sub = await alice.mkdir(did, "sub", src["id"])
    dst = await alice.mkdir(did, "dst")
    fid = await put_file(app, did, "f.txt", b"f", folder_id=src["id"])
    data(await alice.delete(f"/drives/{did}/files/{fid}"))
    data(await alice.delete(f"/drives/{did}/folders/{sub['id']}"))
    data(await alice.patch(f"/drives/{did}/folders/{src['id']}", json={"parent_id": dst["id"]}))
    file = data(await alice.post(f"/drives/{did}/trash/file/{fid}/restore"))
    assert file["path"] == "/dst/src/f.txt"
    folder = data(await alice.post(f"/drives/{did}/trash/folder/{sub['id']}/restore"))
    assert folder["path"] == "/dst/src/sub"
    await check_accounting(app)


async def test_purge_one_item_and_empty(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    box = await alice.mkdir(did, "box")
    inner = await alice.mkdir(did, "inner", box["id"])
    keep = await put_file(app, did, "keep.bin", b"k" * 7)
    f1 = await put_file(app, did, "f1.bin", b"1" * 11)
    await put_file(app, did, "f1.bin", b"1" * 12, conflict="overwrite")  # two versions
    in_box = await put_file(app, did, "b.bin", b"b" * 13, folder_id=inner["id"])
    await put_file(app, did, "dup.bin", b"k" * 7, folder_id=box["id"])  # shares keep's blob
    data(await alice.delete(f"/drives/{did}/files/{in_box}"))  # a root inside box
    data(await alice.delete(f"/drives/{did}/files/{f1}"))
    data(await alice.delete(f"/drives/{did}/folders/{box['id']}"))
    assert (await alice.drive(did))["used_bytes"] == 7 + 11 + 12 + 13 + 7

    error(await alice.delete(f"/drives/{did}/trash/file/{keep}"), 404, "NOT_FOUND")  # live
    error(await alice.delete(f"/drives/{did}/trash/folder/{inner['id']}"), 404)  # not a root
    gone = data(await alice.delete(f"/drives/{did}/trash/file/{f1}"))
    assert gone == {"type": "file", "id": f1, "trashed": False, "purged": True}
    assert (await alice.drive(did))["used_bytes"] == 7 + 13 + 7
    assert await refs(app) == [(7, 2), (11, 0), (12, 0), (13, 1)]
    error(await alice.post(f"/drives/{did}/trash/file/{f1}/restore"), 404)

    emptied = data(await alice.delete(f"/drives/{did}/trash"))
    assert emptied == {"purged_files": 2, "purged_folders": 2, "skipped": 0}
    detail = await alice.drive(did)
    assert detail["used_bytes"] == 7 and detail["usage"]["trash_bytes"] == 0
    assert await refs(app) == [(7, 1), (11, 0), (12, 0), (13, 0)]
    assert await trash_names(alice, did) == []
    assert await tree_of(app, did) == {"/": False}
    purges = data(await alice.get(f"/drives/{did}/operations", params={"op": "purge"}))
    # b.bin's own trash root went with box (folders are purged first).
    assert [(o["item_type"], o["before_path"], o["detail"]["files"]) for o in purges["items"]] == [
        ("folder", "/box", 2),
        ("file", "/f1.bin", 1),
    ]
    await check_accounting(app)


async def test_purge_refused_while_an_upload_targets_the_folder(client, app) -> None:
    from yuntu.models.uploads import UploadTask

    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    box = await alice.mkdir(did, "box")
    await put_file(app, did, "x.bin", b"x", folder_id=box["id"])
    async with app.state.db.transaction() as session:
        task = UploadTask(
            user_id=int(alice.id),
            drive_id=int(did),
            folder_id=int(box["id"]),
            name="busy",
            status="pending",
        )
        session.add(task)
    data(await alice.delete(f"/drives/{did}/folders/{box['id']}"))
    error(await alice.delete(f"/drives/{did}/trash/folder/{box['id']}"), 409, "INVALID_STATE")
    emptied = data(await alice.delete(f"/drives/{did}/trash"))
    assert emptied == {"purged_files": 0, "purged_folders": 0, "skipped": 1}
    assert await sql_value(app, "SELECT count(*) FROM upload_tasks") == 1
    ctx = FakeJobContext(app, {"retention_days": 0})
    assert await drive_jobs.purge_trash(ctx) == {"files": 0, "folders": 0, "skipped": 1}
    async with app.state.db.transaction() as session:
        (await session.get(UploadTask, task.id)).status = "cancelled"
    assert await drive_jobs.purge_trash(ctx) == {"files": 1, "folders": 1, "skipped": 0}
    await check_accounting(app)


async def test_purge_trash_job_honours_retention(client, app) -> None:
    assert registry.get("drive.purge_trash") is not None
    assert registry.get("drive.gc_blobs") is not None
    schedules = cron.schedules()
    assert schedules["drive.purge_trash"].kind == "drive.purge_trash"
    assert schedules["drive.gc_blobs"].cron.split()[1:] == ["*", "*", "*", "*"]  # hourly

    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    old_dir = await alice.mkdir(did, "old")
    await put_file(app, did, "in-old.bin", b"o" * 5, folder_id=old_dir["id"])
    old_file = await put_file(app, did, "old.bin", b"p" * 6)
    new_file = await put_file(app, did, "new.bin", b"n" * 8)
    for item in (f"folders/{old_dir['id']}", f"files/{old_file}", f"files/{new_file}"):
        data(await alice.delete(f"/drives/{did}/{item}"))
    # Age the old ones past the 7-day retention.
    for table in ("folders", "files"):
        await sql_exec(
            app,
            f"UPDATE {table} SET trashed_at = trashed_at - INTERVAL_8_DAYS "
            "WHERE trashed_at IS NOT NULL AND id <> :keep",
            keep=int(new_file),
        )
    ctx = FakeJobContext(app)
    result = await drive_jobs.purge_trash(ctx)
    assert result == {"files": 2, "folders": 1, "skipped": 0}
    assert await trash_names(alice, did) == [("file", "new.bin", "/new.bin")]
    assert (await alice.drive(did))["used_bytes"] == 8
    assert await refs(app) == [(5, 0), (6, 0), (8, 1)]
    assert ctx.logs and "purged 2 files" in ctx.logs[-1]
    assert await drive_jobs.purge_trash(FakeJobContext(app)) == {
        "files": 0,
        "folders": 0,
        "skipped": 0,
    }
    ops = data(await alice.get(f"/drives/{did}/operations", params={"op": "purge"}))["items"]
    assert {o["actor_id"] for o in ops} == {None}
    await check_accounting(app)


async def sql_exec(app, statement: str, **params: Any) -> None:
    from sqlalchemy import text

    async with app.state.db.transaction() as session:
        if session.bind.dialect.name == "postgresql":
            statement = statement.replace("INTERVAL_8_DAYS", "INTERVAL '8 days'")
            await session.execute(text(statement), params)
        else:
            # SQLite stores the UTC time as text: shift it with datetime().
            statement = statement.replace(
                "trashed_at = trashed_at - INTERVAL_8_DAYS",
                "trashed_at = strftime('%Y-%m-%d %H:%M:%f', trashed_at, '-8 days')",
            )
            await session.execute(text(statement), params)


@pytest.mark.parametrize("storage_kind", ["local", "s3"])
async def test_blob_gc_deletes_only_unreferenced_content(client, app, storage_kind) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    kept = await put_file(app, did, "kept.bin", b"kept content")
    doomed = await put_file(app, did, "doomed.bin", b"doomed content")
    data(await alice.delete(f"/drives/{did}/files/{doomed}"))
    keys = dict(await sql(app, "SELECT size, storage_key FROM blobs"))
    store = app.state.storage
    # Trashed content is still referenced: the GC leaves it.
    assert await drive_jobs.gc_blobs(FakeJobContext(app)) == {"deleted": 0}
    data(await alice.delete(f"/drives/{did}/trash/file/{doomed}"))
    # A long grace keeps it a while longer.
    assert await drive_jobs.gc_blobs(FakeJobContext(app, {"grace_hours": 1})) == {"deleted": 0}
    assert await store.exists(keys[14])
    assert await drive_jobs.gc_blobs(FakeJobContext(app)) == {"deleted": 1}  # grace 0
    assert not await store.exists(keys[14])
    assert await store.exists(keys[12])
    assert await sql(app, "SELECT size, ref_count FROM blobs") == [(12, 1)]
    data(await alice.get(f"/drives/{did}/files/{kept}"))
    await check_accounting(app)


async def test_trash_of_another_drive_is_404(client, app) -> None:
    alice = await user(client, "alice")
    bob = await user(client, "bob")
    did = data(await alice.get("/drives/default"))["id"]
    b_did = data(await bob.get("/drives/default"))["id"]
    fid = await put_file(app, did, "a.txt", b"a")
    data(await alice.delete(f"/drives/{did}/files/{fid}"))
    error(await bob.get(f"/drives/{did}/trash"), 404, "NOT_FOUND")
    error(await bob.delete(f"/drives/{did}/trash"), 404, "NOT_FOUND")
    for drive_id in (did, b_did):  # Alice's drive, or Alice's item through Bob's own drive
        base = f"/drives/{drive_id}/trash/file/{fid}"
        error(await bob.post(f"{base}/restore"), 404, "NOT_FOUND")
        error(await bob.delete(base), 404, "NOT_FOUND")
    assert data(await bob.delete(f"/drives/{b_did}/trash")) == {
        "purged_files": 0,
        "purged_folders": 0,
        "skipped": 0,
    }
    assert await trash_names(alice, did) == [("file", "a.txt", "/a.txt")]
    await check_accounting(app)


async def test_purge_keeps_finished_upload_history_consistent(client, app) -> None:
    from yuntu.models.uploads import UploadTask, UploadTaskFile

    alice = await user(client, "alice")
    drive = data(await alice.get("/drives/default"))
    did, root = drive["id"], drive["root_folder_id"]
    box = await alice.mkdir(did, "box")
    inbox = await alice.mkdir(did, "inbox")
    fid = await put_file(app, did, "up.bin", b"u" * 4, folder_id=box["id"])
    async with app.state.db.transaction() as session:
        # A finished task rooted at / whose file landed in /box, and one rooted in /inbox.
        kept = UploadTask(
            user_id=int(alice.id),
            drive_id=int(did),
            folder_id=int(root),
            name="kept",
            status="completed",
            total_files=1,
            total_bytes=4,
            completed_files=1,
            done_bytes=4,
        )
        doomed = UploadTask(
            user_id=int(alice.id),
            drive_id=int(did),
            folder_id=int(inbox["id"]),
            name="doomed",
            status="completed",
            total_files=1,
            total_bytes=4,
            completed_files=1,
            done_bytes=4,
        )
        session.add_all([kept, doomed])
        await session.flush()
        for task in (kept, doomed):
            session.add(
                UploadTaskFile(
                    task_id=task.id,
                    position=0,
                    relative_path="box/up.bin",
                    folder_id=int(box["id"]) if task is kept else int(inbox["id"]),
                    name="up.bin",
                    size=4,
                    md5="0" * 32,
                    status="completed",
                    reserved=False,
                    file_id=int(fid),
                )
            )
    for folder in (box, inbox):
        data(await alice.delete(f"/drives/{did}/folders/{folder['id']}"))
    emptied = data(await alice.delete(f"/drives/{did}/trash"))
    assert emptied == {"purged_files": 1, "purged_folders": 2, "skipped": 0}
    rows = await sql(
        app,
        "SELECT t.name, f.folder_id, f.file_id FROM upload_task_files f "
        "JOIN upload_tasks t ON t.id = f.task_id",
    )
    assert rows == [("kept", int(root), None)]  # re-pointed; the purged file unlinked
    await check_accounting(app)
