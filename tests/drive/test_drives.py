"""Drives over HTTP: create, list (the default drive appears on first use), detail with usage
figures, settings and quota, delete (every blob reference released), and who may do what."""

from __future__ import annotations

from typing import Any

import pytest

from tests.drive.helpers import check_accounting, data, error, put_file, sql, sql_value, user

pytestmark = pytest.mark.anyio


async def test_default_drive_created_on_first_list(client, app) -> None:
    alice = await user(client, "alice")
    page = data(await alice.get("/drives"))
    assert page["total"] == 1 and page["pages"] == 1
    default = page["items"][0]
    assert default["is_default"] and default["role"] == "owner"
    assert default["owner_user_id"] == alice.id and default["team_id"] is None
    assert default["quota_bytes"] is None and default["available_bytes"] == -1
    again = data(await alice.get("/drives/default"))
    assert again["id"] == default["id"] and again["usage"]["files"] == 0
    assert data(await alice.get("/drives"))["total"] == 1  # not created twice
    await check_accounting(app)


async def test_usage_numbers(client, app) -> None:
    alice = await user(client, "alice")
    drive = await alice.new_drive(name="Renders", quota_bytes=1000, icon="film")
    assert drive["quota_bytes"] == 1000 and drive["available_bytes"] == 1000
    assert drive["usage_percentage"] == 0.0 and drive["role"] == "owner"
    assert not drive["is_default"] and drive["root_folder_id"]
    folder = await alice.mkdir(drive["id"], "shots")
    await put_file(app, drive["id"], "a.bin", b"x" * 100)
    await put_file(app, drive["id"], "b.bin", b"x" * 100, folder_id=folder["id"])  # same blob
    doomed = await put_file(app, drive["id"], "c.bin", b"y" * 50)
    data(await alice.delete(f"/drives/{drive['id']}/files/{doomed}"))

    detail = await alice.drive(drive["id"])
    usage = detail["usage"]
    assert usage == {
        "files": 2,
        "folders": 1,
        "used_bytes": 250,  # trashed files count until purged
        "reserved_bytes": 0,
        "quota_bytes": 1000,
        "available_bytes": 750,
        "usage_percentage": 25.0,
        "logical_bytes": 250,
        "stored_bytes": 150,  # a.bin and b.bin share one blob
        "trash_bytes": 50,
        "trash_files": 1,
    }
    assert detail["used_bytes"] == 250 and detail["available_bytes"] == 750
    await check_accounting(app)


async def test_update_settings_and_quota_floor(client, app) -> None:
    alice = await user(client, "alice")
    drive = await alice.new_drive(name="Work", denied_types=[".EXE", "bat", "exe"])
    assert drive["denied_types"] == ["exe", "bat"]
    await put_file(app, drive["id"], "a.bin", b"z" * 300)
    path = f"/drives/{drive['id']}"

    changed = data(await alice.put(path, json={"name": "Work 2", "quota_bytes": 300}))
    assert changed["name"] == "Work 2" and changed["quota_bytes"] == 300
    assert changed["available_bytes"] == 0 and changed["usage_percentage"] == 100.0
    assert changed["denied_types"] == ["exe", "bat"]  # untouched: not in the body

    body = error(await alice.put(path, json={"quota_bytes": 299}), 413, "QUOTA_EXCEEDED")
    assert body["details"]["used_bytes"] == 300
    assert (await alice.drive(drive["id"]))["quota_bytes"] == 300  # nothing changed

    unlimited = data(await alice.put(path, json={"quota_bytes": None, "max_file_size": 10}))
    assert unlimited["quota_bytes"] is None and unlimited["available_bytes"] == -1
    assert unlimited["max_file_size"] == 10
    error(await alice.put(path, json={"name": None}), 422, "VALIDATION_ERROR")
    error(await alice.put(path, json={"name": ""}), 422, "VALIDATION_ERROR")
    error(await alice.put(path, json={"colour": "red"}), 422, "VALIDATION_ERROR")
    await check_accounting(app)


async def test_delete_drive_releases_every_reference(client, app) -> None:
    alice = await user(client, "alice")
    default = data(await alice.get("/drives/default"))
    drive = await alice.new_drive(name="Temp")
    shared = await put_file(app, default["id"], "keep.bin", b"shared" * 10)
    await put_file(app, drive["id"], "copy.bin", b"shared" * 10)
    folder = await alice.mkdir(drive["id"], "deep")
    await put_file(app, drive["id"], "only.bin", b"only here", folder_id=folder["id"])
    await put_file(
        app,
        drive["id"],
        "only.bin",
        b"second version",
        folder_id=folder["id"],
        conflict="overwrite",
    )
    trashed = await put_file(app, drive["id"], "gone.bin", b"in the trash")
    data(await alice.delete(f"/drives/{drive['id']}/files/{trashed}"))
    assert await sql_value(app, "SELECT count(*) FROM blobs WHERE ref_count = 0") == 0

    result = data(await alice.delete(f"/drives/{drive['id']}"))
    assert result["purged_files"] == 3 and result["freed_bytes"] == 60 + 9 + 14 + 12
    error(await alice.get(f"/drives/{drive['id']}"), 404, "NOT_FOUND")
    # The shared blob keeps the default drive's reference; the others reached zero.
    rows = await sql(app, "SELECT size, ref_count FROM blobs ORDER BY size")
    assert sorted(rows) == [(9, 0), (12, 0), (14, 0), (60, 1)]
    assert (
        await sql_value(
            app, "SELECT count(*) FROM blobs WHERE ref_count = 0 AND zero_since IS NULL"
        )
        == 0
    )
    for table in ("files", "file_versions", "folders", "drive_operations"):
        count = await sql_value(
            app, f"SELECT count(*) FROM {table} WHERE drive_id = :d", d=int(drive["id"])
        )
        assert count == 0, table
    data(await alice.get(f"/drives/{default['id']}/files/{shared}"))
    await check_accounting(app)


async def test_default_drive_and_busy_drive_cannot_be_deleted(client, app) -> None:
    from yuntu.models.uploads import UploadTask

    alice = await user(client, "alice")
    default = data(await alice.get("/drives/default"))
    error(await alice.delete(f"/drives/{default['id']}"), 409, "INVALID_STATE")
    drive = await alice.new_drive(name="Busy")
    async with app.state.db.transaction() as session:
        task = UploadTask(
            user_id=int(alice.id),
            drive_id=int(drive["id"]),
            folder_id=int(drive["root_folder_id"]),
            name="in flight",
            status="uploading",
        )
        session.add(task)
    error(await alice.delete(f"/drives/{drive['id']}"), 409, "INVALID_STATE")
    await sql(app, "SELECT 1")  # the drive is still there
    data(await alice.get(f"/drives/{drive['id']}"))
    async with app.state.db.transaction() as session:
        row = await session.get(UploadTask, task.id)
        row.status = "completed"
    data(await alice.delete(f"/drives/{drive['id']}"))
    assert await sql_value(app, "SELECT count(*) FROM upload_tasks") == 0  # cascaded
    await check_accounting(app)


async def test_other_users_drives_answer_404(client, app) -> None:
    alice = await user(client, "alice")
    bob = await user(client, "bob")
    drive = await alice.new_drive(name="Private")
    file_id = await put_file(app, drive["id"], "secret.txt", b"secret")
    base = f"/drives/{drive['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("PUT", base, {"name": "mine"}),
        ("DELETE", base, None),
        ("GET", f"{base}/operations", None),
        ("GET", f"{base}/children", None),
        ("GET", f"{base}/files/{file_id}", None),
        ("GET", f"{base}/trash", None),
        ("POST", f"{base}/folders", {"name": "x"}),
        ("DELETE", f"{base}/files/{file_id}", None),
    ]:
        kwargs: dict[str, Any] = {"json": body} if body is not None else {}
        error(await bob.request(method, path, **kwargs), 404, "NOT_FOUND")
    error(await bob.get("/drives/999999999"), 404, "NOT_FOUND")
    assert [d["id"] for d in data(await bob.get("/drives"))["items"]] != [drive["id"]]
    assert (await alice.drive(drive["id"]))["name"] == "Private"
    await check_accounting(app)


@pytest.mark.parametrize(
    "body",
    [
        {"name": ""},
        {"name": "x" * 101},
        {"name": "ok", "quota_bytes": -1},
        {"name": "ok", "quota_bytes": "lots"},
        {"name": "ok", "max_file_size": 0},
        {"name": "ok", "allowed_types": ["../exe"]},
        {"name": "ok", "team_id": "abc"},
        {"name": "bad\x00name"},
        {"name": ["list"]},
        {"name": "ok", "owner_user_id": "1"},
    ],
)
async def test_create_drive_bad_input_is_422(client, app, body) -> None:
    alice = await user(client, "alice")
    body_out = error(await alice.post("/drives", json=body), 422, "VALIDATION_ERROR")
    assert body_out["details"]
    assert await sql_value(app, "SELECT count(*) FROM drives") == 0


async def test_malformed_json_and_bad_ids(client, app) -> None:
    alice = await user(client, "alice")
    response = await alice.post(
        "/drives", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    error(response, 400, "MALFORMED_JSON")
    error(await alice.get("/drives/abc"), 422, "VALIDATION_ERROR")
    error(await alice.get("/drives/0"), 422, "VALIDATION_ERROR")
    error(await alice.get("/drives/99999999999999999999"), 422, "VALIDATION_ERROR")
    error(await client.get("/api/v1/drives"), 401, "UNAUTHENTICATED")
    await check_accounting(app)
