"""Folders over HTTP: create (one, a path, mkdir -p), conflicts, hostile names, rename and move
(descendants' paths follow, exactly: no LIKE wildcards), moves into their own subtree refused,
the root protected, listings sorted and paginated, foreign ids 404."""

from __future__ import annotations

import unicodedata

import pytest

from tests.drive.helpers import User, check_accounting, data, error, put_file, sql, user

pytestmark = pytest.mark.anyio


async def folder(who: User, drive_id: str, folder_id: str) -> dict:
    return data(await who.get(f"/drives/{drive_id}/folders/{folder_id}"))


async def test_create_with_conflict_policies(client, app) -> None:
    alice = await user(client, "alice")
    drive = data(await alice.get("/drives/default"))
    did = drive["id"]
    docs = await alice.mkdir(did, "docs")
    assert docs["path"] == "/docs" and docs["parent_id"] == drive["root_folder_id"]
    assert docs["type"] == "folder" and docs["created_by"] == alice.id
    sub = await alice.mkdir(did, "2026", docs["id"])
    assert sub["path"] == "/docs/2026"
    assert (await folder(alice, did, sub["id"]))["path"] == "/docs/2026"
    root = await folder(alice, did, drive["root_folder_id"])
    assert root["path"] == "/" and root["parent_id"] is None

    url = f"/drives/{did}/folders"
    error(await alice.post(url, json={"name": "docs"}), 409, "NAME_CONFLICT")
    renamed = data(await alice.post(url, json={"name": "docs", "conflict": "rename"}), 201)
    assert renamed["name"] == "docs (1)" and renamed["path"] == "/docs (1)"
    again = data(await alice.post(url, json={"name": "docs", "conflict": "rename"}), 201)
    assert again["name"] == "docs (2)"
    await put_file(app, did, "notes.txt", b"n")
    error(await alice.post(url, json={"name": "notes.txt"}), 409, "NAME_CONFLICT")
    clash = data(await alice.post(url, json={"name": "notes.txt", "conflict": "rename"}), 201)
    assert clash["name"] == "notes.txt (1)"  # folders are numbered at the end
    error(await alice.post(url, json={"name": "x", "conflict": "overwrite"}), 422)
    error(await alice.post(url, json={"name": "x", "path": "/x"}), 422)
    error(await alice.post(url, json={}), 422)
    error(await alice.post(url, json={"name": "x", "parent_id": "999999999"}), 404)
    await check_accounting(app)


async def test_mkdir_p_and_paths(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    url = f"/drives/{did}/folders"
    error(await alice.post(url, json={"path": "/a/b/c"}), 404, "NOT_FOUND")
    deep = data(await alice.post(url, json={"path": "/a/b/c", "parents": True}), 201)
    assert deep["path"] == "/a/b/c" and deep["name"] == "c"
    same = data(await alice.post(url, json={"path": "a/b/c/", "parents": True}), 201)
    assert same["id"] == deep["id"]  # mkdir -p: an existing folder is fine
    error(await alice.post(url, json={"path": "/a/b/c"}), 409, "NAME_CONFLICT")
    d = data(await alice.post(url, json={"path": "/a/b/d"}), 201)  # parents exist: fine
    assert d["path"] == "/a/b/d"
    a = (await alice.children(did))["items"][0]
    rel = data(
        await alice.post(url, json={"path": "x/y", "parent_id": a["id"], "parents": True}), 201
    )
    assert rel["path"] == "/a/x/y"
    await put_file(app, did, "file", b"f", folder_id=a["id"])
    error(await alice.post(url, json={"path": "/a/file/z", "parents": True}), 409, "NAME_CONFLICT")
    for bad in ("/", "", "a//b", "/a/../b", "/a/./b", "/a/\x00/b"):
        error(await alice.post(url, json={"path": bad, "parents": True}), 400, "INVALID_PATH")
    long_path = "/" + "/".join(["x" * 200] * 11)  # > 2000 bytes
    error(await alice.post(url, json={"path": long_path, "parents": True}), 400, "INVALID_PATH")
    paths = {row[0] for row in await sql(app, "SELECT path FROM folders")}
    assert paths == {"/", "/a", "/a/b", "/a/b/c", "/a/b/d", "/a/x", "/a/x/y"}
    await check_accounting(app)


@pytest.mark.parametrize(
    "name",
    [
        "..",
        ".",
        "a/b",
        "a\\b",
        "bad\x00",
        "tab\tname",
        "\x7f",
        "",
        " lead",
        "trail ",
        "é" * 128,
        "x" * 256,
    ],
)
async def test_hostile_names_are_400(client, app, name) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    body = error(
        await alice.post(f"/drives/{did}/folders", json={"name": name}), 400, "INVALID_PATH"
    )
    assert body["message"]
    assert (await alice.children(did))["total"] == 0
    await check_accounting(app)


async def test_name_bounds_and_nfc(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    url = f"/drives/{did}/folders"
    data(await alice.post(url, json={"name": "x" * 255}), 201)  # 255 bytes: fine
    error(await alice.post(url, json={"name": "x" * 2000}), 422, "VALIDATION_ERROR")
    nfc = unicodedata.normalize("NFC", "café")
    nfd = unicodedata.normalize("NFD", "café")
    assert nfc != nfd
    made = data(await alice.post(url, json={"name": nfd}), 201)
    assert made["name"] == nfc  # stored normalized
    error(await alice.post(url, json={"name": nfc}), 409, "NAME_CONFLICT")
    error(await alice.post(url, json={"name": nfd}), 409, "NAME_CONFLICT")
    other = data(await alice.post(url, json={"name": nfd, "conflict": "rename"}), 201)
    assert other["name"] == f"{nfc} (1)"
    await check_accounting(app)


async def test_rename_and_move_update_descendants(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    url = f"/drives/{did}/folders"
    c = data(await alice.post(url, json={"path": "/a%/b_/c", "parents": True}), 201)
    ab = data(await alice.post(url, json={"path": "/ab/bx/c", "parents": True}), 201)
    target = await alice.mkdir(did, "target")
    a_pct = (await alice.children(did))["items"][0]
    assert a_pct["name"] == "a%"
    file_id = await put_file(app, did, "deep.txt", b"deep", folder_id=c["id"])

    renamed = data(await alice.patch(f"{url}/{a_pct['id']}", json={"name": "a"}))
    assert renamed["path"] == "/a"
    assert (await folder(alice, did, c["id"]))["path"] == "/a/b_/c"
    assert (await folder(alice, did, ab["id"]))["path"] == "/ab/bx/c"  # a look-alike: untouched
    moved = data(await alice.patch(f"{url}/{a_pct['id']}", json={"parent_id": target["id"]}))
    assert moved["path"] == "/target/a" and moved["parent_id"] == target["id"]
    assert (await folder(alice, did, c["id"]))["path"] == "/target/a/b_/c"
    file = data(await alice.get(f"/drives/{did}/files/{file_id}"))
    assert file["path"] == "/target/a/b_/c/deep.txt"
    both = data(await alice.patch(f"{url}/{a_pct['id']}", json={"parent_id": None, "name": "top"}))
    assert both["path"] == "/top"
    assert (await folder(alice, did, c["id"]))["path"] == "/top/b_/c"
    ops = data(await alice.get(f"/drives/{did}/operations", params={"op": "move"}))["items"]
    assert ops[0]["before_path"] == "/target/a" and ops[0]["after_path"] == "/top"
    assert ops[0]["item_type"] == "folder" and ops[0]["actor_id"] == alice.id
    renames = data(await alice.get(f"/drives/{did}/operations", params={"op": "rename"}))
    assert [(o["before_path"], o["after_path"]) for o in renames["items"]] == [("/a%", "/a")]
    await check_accounting(app)


async def test_move_conflicts_and_refusals(client, app) -> None:
    alice = await user(client, "alice")
    drive = data(await alice.get("/drives/default"))
    did = drive["id"]
    url = f"/drives/{did}/folders"
    x = await alice.mkdir(did, "x")
    inner = await alice.mkdir(did, "inner", x["id"])
    deeper = await alice.mkdir(did, "deeper", inner["id"])
    other = await alice.mkdir(did, "other")
    await alice.mkdir(did, "inner", other["id"])

    error(
        await alice.patch(f"{url}/{inner['id']}", json={"parent_id": other["id"]}),
        409,
        "NAME_CONFLICT",
    )
    moved = data(
        await alice.patch(
            f"{url}/{inner['id']}", json={"parent_id": other["id"], "conflict": "rename"}
        )
    )
    assert moved["path"] == "/other/inner (1)"
    assert (await folder(alice, did, deeper["id"]))["path"] == "/other/inner (1)/deeper"
    error(await alice.patch(f"{url}/{other['id']}", json={"name": "x"}), 409, "NAME_CONFLICT")
    error(
        await alice.patch(f"{url}/{other['id']}", json={"parent_id": other["id"]}),
        409,
        "INVALID_STATE",
    )
    error(
        await alice.patch(f"{url}/{other['id']}", json={"parent_id": deeper["id"]}),
        409,
        "INVALID_STATE",
    )
    root = drive["root_folder_id"]
    error(await alice.patch(f"{url}/{root}", json={"name": "r"}), 409, "INVALID_STATE")
    error(await alice.patch(f"{url}/{root}", json={"parent_id": x["id"]}), 409, "INVALID_STATE")
    error(await alice.delete(f"{url}/{root}"), 409, "INVALID_STATE")
    error(await alice.patch(f"{url}/{x['id']}", json={"name": ".."}), 400, "INVALID_PATH")
    error(await alice.patch(f"{url}/{x['id']}", json={"name": "a/b"}), 400, "INVALID_PATH")
    error(await alice.patch(f"{url}/{x['id']}", json={}), 422, "VALIDATION_ERROR")
    error(await alice.patch(f"{url}/{x['id']}", json={"name": 5}), 422, "VALIDATION_ERROR")
    unchanged = data(await alice.patch(f"{url}/{x['id']}", json={"name": "x"}))
    assert unchanged["path"] == "/x"
    assert (await folder(alice, did, other["id"]))["path"] == "/other"
    await check_accounting(app)


async def test_children_sorting_and_pages(client, app) -> None:
    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    for name in ("beta", "alpha"):
        await alice.mkdir(did, name)
    sizes = {"c.txt": 30, "a.bin": 10, "b.png": 20}
    for name, size in sizes.items():
        await put_file(app, did, name, bytes([size]) * size)

    page = await alice.children(did)
    assert [(i["type"], i["name"]) for i in page["items"]] == [
        ("folder", "alpha"),
        ("folder", "beta"),
        ("file", "a.bin"),
        ("file", "b.png"),
        ("file", "c.txt"),
    ]
    assert page["total"] == 5 and page["pages"] == 1
    first_file = page["items"][2]
    assert first_file["path"] == "/a.bin" and first_file["size"] == 10
    assert first_file["md5"] and first_file["version"] == 1
    assert first_file["mime_type"] == "application/octet-stream"
    assert page["items"][3]["mime_type"] == "image/png"
    assert page["items"][0]["size"] is None and page["items"][0]["md5"] is None

    names = lambda p: [i["name"] for i in p["items"]]  # noqa: E731
    assert names(await alice.children(did, sort="-name")) == [
        "beta",
        "alpha",
        "c.txt",
        "b.png",
        "a.bin",
    ]
    assert names(await alice.children(did, sort="-size"))[2:] == ["c.txt", "b.png", "a.bin"]
    assert names(await alice.children(did, sort="size"))[2:] == ["a.bin", "b.png", "c.txt"]
    assert names(await alice.children(did, sort="updated"))[2:] == ["c.txt", "a.bin", "b.png"]
    assert names(await alice.children(did, sort="-updated"))[2:] == ["b.png", "a.bin", "c.txt"]
    # Pages across the folders/files boundary.
    pages = [await alice.children(did, page=n, page_size=2) for n in (1, 2, 3, 4)]
    assert [names(p) for p in pages] == [["alpha", "beta"], ["a.bin", "b.png"], ["c.txt"], []]
    assert pages[0]["pages"] == 3 and pages[3]["total"] == 5
    error(await alice.get(f"/drives/{did}/children", params={"sort": "colour"}), 422)
    error(await alice.get(f"/drives/{did}/children", params={"page_size": 101}), 422)
    error(await alice.get(f"/drives/{did}/children", params={"page": 0}), 422)
    error(await alice.get(f"/drives/{did}/children", params={"folder_id": "x"}), 422)
    await check_accounting(app)


async def test_foreign_folder_ids_are_404(client, app) -> None:
    alice = await user(client, "alice")
    bob = await user(client, "bob")
    a_drive = data(await alice.get("/drives/default"))["id"]
    a_second = (await alice.new_drive(name="second"))["id"]
    b_drive = data(await bob.get("/drives/default"))["id"]
    a_folder = await alice.mkdir(a_drive, "mine")
    b_folder = await bob.mkdir(b_drive, "bobs")
    # Bob's folder id through Bob's own drive path but Alice's folder: 404 everywhere.
    for who, drive_id, folder_id in (
        (bob, b_drive, a_folder["id"]),
        (alice, a_second, a_folder["id"]),
        (alice, a_drive, b_folder["id"]),
    ):
        url = f"/drives/{drive_id}/folders"
        error(await who.get(f"{url}/{folder_id}"), 404, "NOT_FOUND")
        error(await who.patch(f"{url}/{folder_id}", json={"name": "z"}), 404, "NOT_FOUND")
        error(await who.delete(f"{url}/{folder_id}"), 404, "NOT_FOUND")
        error(await who.post(url, json={"parent_id": folder_id, "name": "z"}), 404)
        error(
            await who.get(f"/drives/{drive_id}/children", params={"folder_id": folder_id}),
            404,
            "NOT_FOUND",
        )
    mine = await alice.mkdir(a_drive, "target")
    error(
        await alice.patch(
            f"/drives/{a_drive}/folders/{mine['id']}", json={"parent_id": b_folder["id"]}
        ),
        404,
        "NOT_FOUND",
    )
    assert (await folder(bob, b_drive, b_folder["id"]))["name"] == "bobs"
    assert (await folder(alice, a_drive, a_folder["id"]))["name"] == "mine"
    await check_accounting(app)


async def test_concurrent_opposite_moves_never_build_a_cycle(client, app) -> None:
    import asyncio

    alice = await user(client, "alice")
    did = data(await alice.get("/drives/default"))["id"]
    url = f"/drives/{did}/folders"
    for round_ in range(3):
        a = await alice.mkdir(did, f"a{round_}")
        b = await alice.mkdir(did, f"b{round_}")
        await alice.mkdir(did, "child", a["id"])
        first, second = await asyncio.gather(
            alice.patch(f"{url}/{a['id']}", json={"parent_id": b["id"]}),
            alice.patch(f"{url}/{b['id']}", json={"parent_id": a["id"]}),
        )
        statuses = sorted([first.status_code, second.status_code])
        assert statuses == [200, 409], (first.text, second.text)
        loser = first if first.status_code == 409 else second
        error(loser, 409, "INVALID_STATE")
    await check_accounting(app)
