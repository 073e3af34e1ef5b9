"""Files over HTTP: metadata and versions, rename and move with error | rename | overwrite,
copy that shares the blob (reference count 2, used bytes doubled, stored bytes unchanged) into
the same or another drive, type policy, hostile names and foreign ids."""

from __future__ import annotations

import hashlib

import pytest

from tests.drive.helpers import User, check_accounting, data, error, put_file, sql, sql_value, user

pytestmark = pytest.mark.anyio


async def blob_refs(app) -> list[tuple[int, int]]:
    return sorted(await sql(app, "SELECT size, ref_count FROM blobs"))


async def setup(client, app) -> tuple[User, str, dict]:
    alice = await user(client, "alice")
    drive = data(await alice.get("/drives/default"))
    return alice, drive["id"], drive


async def test_metadata_and_versions(client, app) -> None:
    alice, did, _ = await setup(client, app)
    docs = await alice.mkdir(did, "docs")
    fid = await put_file(app, did, "Report.PDF", b"v1", folder_id=docs["id"], actor_id=alice.id)
    await put_file(app, did, "Report.PDF", b"version 2", folder_id=docs["id"], conflict="overwrite")
    meta = data(await alice.get(f"/drives/{did}/files/{fid}"))
    assert meta["path"] == "/docs/Report.PDF" and meta["extension"] == "pdf"
    assert meta["mime_type"] == "application/pdf" and meta["version"] == 2
    assert meta["size"] == 9 and meta["md5"] == hashlib.md5(b"version 2").hexdigest()
    assert meta["sha256"] == hashlib.sha256(b"version 2").hexdigest()
    assert meta["type"] == "file" and meta["folder_id"] == docs["id"]
    versions = data(await alice.get(f"/drives/{did}/files/{fid}/versions"))
    assert [(v["version"], v["size"], v["current"]) for v in versions] == [
        (2, 9, True),
        (1, 2, False),
    ]
    assert (await alice.drive(did))["used_bytes"] == 11
    await check_accounting(app)


async def test_rename_conflict_policies(client, app) -> None:
    alice, did, _ = await setup(client, app)
    a = await put_file(app, did, "a.txt", b"A content")
    x = await put_file(app, did, "x.txt", b"X content!")
    y = await put_file(app, did, "y.txt", b"Y")
    url = f"/drives/{did}/files"
    error(await alice.patch(f"{url}/{x}", json={"name": "a.txt"}), 409, "NAME_CONFLICT")
    first = data(await alice.patch(f"{url}/{x}", json={"name": "a.txt", "conflict": "rename"}))
    assert first["name"] == "a (1).txt" and first["path"] == "/a (1).txt"
    second = data(await alice.patch(f"{url}/{y}", json={"name": "a.txt", "conflict": "rename"}))
    assert second["name"] == "a (2).txt"
    # Renaming a numbered file to its own base with rename lands on the next free number.
    again = data(await alice.patch(f"{url}/{x}", json={"name": "a (2).txt", "conflict": "rename"}))
    assert again["name"] == "a (1).txt"  # its own name is free for itself
    assert await alice.names(did) == ["a (1).txt", "a (2).txt", "a.txt"]

    used = (await alice.drive(did))["used_bytes"]
    over = data(await alice.patch(f"{url}/{x}", json={"name": "a.txt", "conflict": "overwrite"}))
    assert over["id"] == a and over["version"] == 2 and over["size"] == len(b"X content!")
    error(await alice.get(f"{url}/{x}"), 404, "NOT_FOUND")  # the moved file went away
    assert await alice.names(did) == ["a (2).txt", "a.txt"]
    versions = data(await alice.get(f"{url}/{a}/versions"))
    assert [v["size"] for v in versions] == [10, 9]
    assert (await alice.drive(did))["used_bytes"] == used  # x's bytes now count as a's v2
    assert await blob_refs(app) == [(1, 1), (9, 1), (10, 1)]
    ops = data(await alice.get(f"/drives/{did}/operations"))["items"]
    assert ops[0]["op"] == "move" and ops[0]["before_path"] == "/a (1).txt"
    assert ops[0]["after_path"] == "/a.txt"
    await check_accounting(app)


async def test_move_between_folders(client, app) -> None:
    alice, did, _ = await setup(client, app)
    src = await alice.mkdir(did, "src")
    dst = await alice.mkdir(did, "dst")
    f1 = await put_file(app, did, "clip.mp4", b"clip one", folder_id=src["id"])
    await put_file(app, did, "clip.mp4", b"clip two!", folder_id=dst["id"])
    await alice.mkdir(did, "held.mp4", dst["id"])
    url = f"/drives/{did}/files/{f1}"
    error(await alice.patch(url, json={"folder_id": dst["id"]}), 409, "NAME_CONFLICT")
    # A folder holds the name: overwrite cannot apply.
    error(
        await alice.patch(
            url, json={"folder_id": dst["id"], "name": "held.mp4", "conflict": "overwrite"}
        ),
        409,
        "NAME_CONFLICT",
    )
    moved = data(await alice.patch(url, json={"folder_id": dst["id"], "conflict": "rename"}))
    assert moved["path"] == "/dst/clip (1).mp4" and moved["id"] == f1
    to_root = data(await alice.patch(url, json={"folder_id": None, "name": "top.mp4"}))
    assert to_root["path"] == "/top.mp4"
    ops = data(await alice.get(f"/drives/{did}/operations", params={"op": "move"}))["items"]
    assert [(o["before_path"], o["after_path"]) for o in ops] == [
        ("/dst/clip (1).mp4", "/top.mp4"),
        ("/src/clip.mp4", "/dst/clip (1).mp4"),
    ]
    error(await alice.patch(url, json={"folder_id": "999999999"}), 404, "NOT_FOUND")
    error(await alice.patch(url, json={"folder_id": "abc"}), 422, "VALIDATION_ERROR")
    error(await alice.patch(url, json={"conflict": "rename"}), 422, "VALIDATION_ERROR")
    error(await alice.patch(url, json={"name": "x", "conflict": "merge"}), 422)
    await check_accounting(app)


async def test_overwrite_on_move_keeps_accounting_exact(client, app) -> None:
    alice, did, _ = await setup(client, app)
    dst = await alice.mkdir(did, "dst")
    target = await put_file(app, did, "t.bin", b"target v1", folder_id=dst["id"])
    moved = await put_file(app, did, "t.bin", b"moved v1")
    await put_file(app, did, "t.bin", b"moved v2 longer", conflict="overwrite")
    assert (await alice.drive(did))["used_bytes"] == 9 + 8 + 15
    result = data(
        await alice.patch(
            f"/drives/{did}/files/{moved}", json={"folder_id": dst["id"], "conflict": "overwrite"}
        )
    )
    assert result["id"] == target and result["version"] == 2 and result["size"] == 15
    # The moved file's old version is gone with it; its current content is target's v2.
    assert (await alice.drive(did))["used_bytes"] == 9 + 15
    assert await blob_refs(app) == [(8, 0), (9, 1), (15, 1)]
    assert await sql_value(app, "SELECT count(*) FROM files") == 1
    await check_accounting(app)


async def test_type_policy_on_new_names(client, app) -> None:
    alice = await user(client, "alice")
    drive = await alice.new_drive(name="Media", allowed_types=["mp4", "txt"], denied_types=["exe"])
    did = drive["id"]
    fid = await put_file(app, did, "a.txt", b"text")
    url = f"/drives/{did}/files/{fid}"
    body = error(await alice.patch(url, json={"name": "a.exe"}), 400, "FILE_TYPE_NOT_ALLOWED")
    assert body["details"] == {"extension": "exe"}
    error(await alice.patch(url, json={"name": "a.png"}), 400, "FILE_TYPE_NOT_ALLOWED")
    error(await alice.patch(url, json={"name": "noext"}), 400, "FILE_TYPE_NOT_ALLOWED")
    renamed = data(await alice.patch(url, json={"name": "b.MP4"}))
    assert renamed["extension"] == "mp4" and renamed["mime_type"] == "video/mp4"
    error(await alice.post(f"{url}/copy", json={"name": "c.exe"}), 400, "FILE_TYPE_NOT_ALLOWED")
    await check_accounting(app)


@pytest.mark.parametrize("name", ["..", "a/b", "bad\x00.txt", "é" * 150, "", "x\n.txt"])
async def test_hostile_file_names(client, app, name) -> None:
    alice, did, _ = await setup(client, app)
    fid = await put_file(app, did, "a.txt", b"a")
    url = f"/drives/{did}/files/{fid}"
    error(await alice.patch(url, json={"name": name}), 400, "INVALID_PATH")
    error(await alice.post(f"{url}/copy", json={"name": name}), 400, "INVALID_PATH")
    assert await alice.names(did) == ["a.txt"]
    await check_accounting(app)


async def test_copy_shares_the_blob(client, app) -> None:
    alice, did, _ = await setup(client, app)
    content = b"render frame " * 100
    fid = await put_file(app, did, "frame.exr", content)
    before = await alice.drive(did)
    copy = data(
        await alice.post(f"/drives/{did}/files/{fid}/copy", json={"conflict": "rename"}), 201
    )
    assert copy["name"] == "frame (1).exr" and copy["id"] != fid
    assert copy["sha256"] == hashlib.sha256(content).hexdigest()
    after = await alice.drive(did)
    assert await blob_refs(app) == [(len(content), 2)]
    assert after["used_bytes"] == 2 * before["used_bytes"] == 2 * len(content)
    assert after["usage"]["stored_bytes"] == before["usage"]["stored_bytes"] == len(content)
    assert after["usage"]["logical_bytes"] == 2 * len(content)
    assert len(await sql(app, "SELECT id FROM blobs")) == 1  # no bytes copied
    objects = [key async for key in app.state.storage.list_keys()]
    assert len(objects) == 1

    sub = await alice.mkdir(did, "sub")
    named = data(
        await alice.post(
            f"/drives/{did}/files/{fid}/copy", json={"folder_id": sub["id"], "name": "renamed.exr"}
        ),
        201,
    )
    assert named["path"] == "/sub/renamed.exr"
    error(await alice.post(f"/drives/{did}/files/{fid}/copy", json={}), 409, "NAME_CONFLICT")
    over = data(
        await alice.post(
            f"/drives/{did}/files/{fid}/copy",
            json={"folder_id": sub["id"], "name": "renamed.exr", "conflict": "overwrite"},
        ),
        201,
    )
    assert over["id"] == named["id"] and over["version"] == 2
    assert await blob_refs(app) == [(len(content), 4)]
    ops = data(await alice.get(f"/drives/{did}/operations", params={"op": "copy"}))["items"]
    assert len(ops) == 3 and all(o["before_path"] == "/frame.exr" for o in ops)
    assert ops[-1]["after_path"] == "/frame (1).exr"
    await check_accounting(app)


async def test_copy_to_another_drive_charges_its_quota(client, app) -> None:
    alice, did, _ = await setup(client, app)
    bob = await user(client, "bob")
    small = await alice.new_drive(name="Small", quota_bytes=150, max_file_size=120)
    fid = await put_file(app, did, "a.bin", b"a" * 100)
    big = await put_file(app, did, "big.bin", b"b" * 130)
    url = f"/drives/{did}/files/{fid}/copy"
    copy = data(await alice.post(url, json={"target_drive_id": small["id"]}), 201)
    assert copy["drive_id"] == small["id"] and copy["path"] == "/a.bin"
    assert (await alice.drive(small["id"]))["used_bytes"] == 100
    assert (await alice.drive(did))["used_bytes"] == 230
    body = error(
        await alice.post(url, json={"target_drive_id": small["id"], "conflict": "rename"}),
        413,
        "QUOTA_EXCEEDED",
    )
    assert body["details"] is None or body["details"]
    error(
        await alice.post(f"/drives/{did}/files/{big}/copy", json={"target_drive_id": small["id"]}),
        413,
        "FILE_TOO_LARGE",
    )
    assert await blob_refs(app) == [(100, 2), (130, 1)]  # the refused copies left nothing
    assert await alice.names(small["id"]) == ["a.bin"]
    bob_drive = data(await bob.get("/drives/default"))["id"]
    error(await alice.post(url, json={"target_drive_id": bob_drive}), 404, "NOT_FOUND")
    error(await bob.post(url, json={"target_drive_id": bob_drive}), 404, "NOT_FOUND")
    folder_elsewhere = await alice.mkdir(did, "here")
    error(
        await alice.post(
            url, json={"target_drive_id": small["id"], "folder_id": folder_elsewhere["id"]}
        ),
        404,
        "NOT_FOUND",
    )
    await check_accounting(app)


async def test_trash_a_file_and_foreign_ids(client, app) -> None:
    alice, did, _ = await setup(client, app)
    bob = await user(client, "bob")
    b_did = data(await bob.get("/drives/default"))["id"]
    other = (await alice.new_drive(name="Other"))["id"]
    fid = await put_file(app, did, "a.txt", b"alice")
    for who, drive_id in ((bob, b_did), (alice, other), (bob, did)):
        url = f"/drives/{drive_id}/files/{fid}"
        error(await who.get(url), 404, "NOT_FOUND")
        error(await who.get(f"{url}/versions"), 404, "NOT_FOUND")
        error(await who.patch(url, json={"name": "b.txt"}), 404, "NOT_FOUND")
        error(await who.post(f"{url}/copy", json={}), 404, "NOT_FOUND")
        error(await who.delete(url), 404, "NOT_FOUND")
    gone = data(await alice.delete(f"/drives/{did}/files/{fid}"))
    assert gone == {"type": "file", "id": fid, "trashed": True, "purged": False}
    error(await alice.get(f"/drives/{did}/files/{fid}"), 404, "NOT_FOUND")
    error(await alice.delete(f"/drives/{did}/files/{fid}"), 404, "NOT_FOUND")
    assert await alice.names(did) == []
    assert (await alice.drive(did))["used_bytes"] == 5  # still counted until purged
    op = data(await alice.get(f"/drives/{did}/operations", params={"op": "delete"}))["items"][0]
    assert op["before_path"] == "/a.txt" and op["item_id"] == fid
    await check_accounting(app)
