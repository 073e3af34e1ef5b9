"""The operation log records every change with its actor and paths, newest first; and bad
input on every drive endpoint gets the documented error shape and changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from tests.drive.helpers import check_accounting, data, error, put_file, sql_value, user

pytestmark = pytest.mark.anyio


async def test_every_change_is_logged_newest_first(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    base = f"/drives/{did}"
    docs = await alice.mkdir(did, "docs")
    fid = await put_file(app, did, "a.txt", b"a", actor_id=alice.id)
    data(await alice.patch(f"{base}/files/{fid}", json={"name": "b.txt"}))
    data(await alice.patch(f"{base}/files/{fid}", json={"folder_id": docs["id"]}))
    copy = data(await alice.post(f"{base}/files/{fid}/copy", json={}), 201)
    data(await alice.delete(f"{base}/files/{copy['id']}"))
    data(await alice.post(f"{base}/trash/file/{copy['id']}/restore"))
    data(await alice.delete(f"{base}/files/{copy['id']}"))
    data(await alice.delete(f"{base}/trash/file/{copy['id']}"))

    page = data(await alice.get(f"{base}/operations", params={"page_size": 100}))
    got = [(o["op"], o["item_type"], o["before_path"], o["after_path"]) for o in page["items"]]
    assert got == [
        ("purge", "file", "/b.txt", None),
        ("delete", "file", "/b.txt", None),
        ("restore", "file", "/b.txt", "/b.txt"),
        ("delete", "file", "/b.txt", None),
        ("copy", "file", "/docs/b.txt", "/b.txt"),
        ("move", "file", "/b.txt", "/docs/b.txt"),
        ("rename", "file", "/a.txt", "/b.txt"),
        ("upload", "file", None, "/a.txt"),
        ("create", "folder", None, "/docs"),
    ]
    assert {o["actor_id"] for o in page["items"]} == {alice.id}
    assert all(o["created_at"].endswith("Z") for o in page["items"])
    assert page["items"][-1]["item_id"] == docs["id"]
    only = data(await alice.get(f"{base}/operations", params={"op": "delete"}))
    assert only["total"] == 2 and {o["op"] for o in only["items"]} == {"delete"}
    second = data(await alice.get(f"{base}/operations", params={"page": 2, "page_size": 4}))
    assert [o["op"] for o in second["items"]] == ["copy", "move", "rename", "upload"]
    assert second["total"] == 9 and second["pages"] == 3
    error(await alice.get(f"{base}/operations", params={"op": "hack"}), 422, "VALIDATION_ERROR")
    await check_accounting(app)


WRITES = [
    ("POST", "/drives"),
    ("PUT", "/drives/{did}"),
    ("POST", "/drives/{did}/folders"),
    ("PATCH", "/drives/{did}/folders/{folder}"),
    ("PATCH", "/drives/{did}/files/{file}"),
    ("POST", "/drives/{did}/files/{file}/copy"),
    ("POST", "/drives/{did}/trash/file/{trashed}/restore"),
    ("POST", "/teams"),
    ("PUT", "/teams/{team}"),
    ("POST", "/teams/{team}/members"),
]


async def fixture_ids(app, alice) -> dict[str, str]:
    did = data(await alice.get("/drives/default"))["id"]
    folder = await alice.mkdir(did, "f")
    file_id = await put_file(app, did, "a.txt", b"a")
    trashed = await put_file(app, did, "t.txt", b"t")
    data(await alice.delete(f"/drives/{did}/files/{trashed}"))
    team = data(await alice.post("/teams", json={"name": "T"}), 201)
    return {
        "did": did,
        "folder": folder["id"],
        "file": file_id,
        "trashed": trashed,
        "team": team["id"],
    }


async def snapshot(app) -> tuple[Any, ...]:
    return tuple(
        [
            await sql_value(app, f"SELECT count(*) FROM {t}")
            for t in (
                "drives",
                "folders",
                "files",
                "file_versions",
                "drive_operations",
                "teams",
                "team_members",
            )
        ]
        + [await sql_value(app, "SELECT coalesce(sum(ref_count), 0) FROM blobs")]
        + [await sql_value(app, "SELECT max(updated_at) FROM folders")]
        + [await sql_value(app, "SELECT max(updated_at) FROM files")]
    )


@pytest.mark.parametrize("raw", [b'{"name": ', b"[1, 2", b"\xff\xfe", b"nul\x00"])
async def test_malformed_json_everywhere(client, app, raw) -> None:
    alice = await user(client, "alice")
    ids = await fixture_ids(app, alice)
    before = await snapshot(app)
    for method, template in WRITES:
        response = await alice.request(
            method,
            template.format(**ids),
            content=raw,
            headers={"Content-Type": "application/json"},
        )
        body = error(response, 400)
        assert body["error"] in ("MALFORMED_JSON", "BAD_REQUEST"), (template, body)
    assert await snapshot(app) == before
    await check_accounting(app)


async def test_wrong_types_everywhere(client, app) -> None:
    alice = await user(client, "alice")
    ids = await fixture_ids(app, alice)
    before = await snapshot(app)
    wrong: dict[str, Any] = {
        "/drives": {"name": 5},
        "/drives/{did}": {"quota_bytes": "a lot"},
        "/drives/{did}/folders": {"name": ["x"]},
        "/drives/{did}/folders/{folder}": {"parent_id": {"id": 1}},
        "/drives/{did}/files/{file}": {"name": 1.5},
        "/drives/{did}/files/{file}/copy": {"target_drive_id": "drive-1"},
        "/drives/{did}/trash/file/{trashed}/restore": {"conflict": 3},
        "/teams": {"name": None},
        "/teams/{team}": {"description": []},
        "/teams/{team}/members": {"username": "bob", "role": 1},
    }
    for method, template in WRITES:
        response = await alice.request(method, template.format(**ids), json=wrong[template])
        body = error(response, 422, "VALIDATION_ERROR")
        assert body["details"] and all("field" in d for d in body["details"]), template
        # A JSON array or string where an object is expected: 422 as well.
        error(await alice.request(method, template.format(**ids), json=["x"]), 422)
    assert await snapshot(app) == before
    await check_accounting(app)


async def test_oversized_strings_are_refused(client, app) -> None:
    alice = await user(client, "alice")
    ids = await fixture_ids(app, alice)
    before = await snapshot(app)
    huge = "x" * 10_000
    for method, path, body, status in [
        ("POST", "/drives", {"name": huge}, 422),
        ("POST", f"/drives/{ids['did']}/folders", {"name": huge}, 422),
        ("POST", f"/drives/{ids['did']}/folders", {"path": "/" + huge, "parents": True}, 422),
        ("PATCH", f"/drives/{ids['did']}/files/{ids['file']}", {"name": huge}, 422),
        ("POST", "/teams", {"name": "t", "description": huge}, 422),
        ("POST", f"/drives/{ids['did']}/folders", {"path": "/" + "y" * 3000}, 400),
    ]:
        error(await alice.request(method, path, json=body), status)
    assert await snapshot(app) == before
    await check_accounting(app)
