"""Helpers for the drive tests: files put in place straight through the services (no upload
endpoint needed), short request wrappers, and the accounting check that asserts the invariants
with plain SQL at the end of every test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import text

from tests.conftest import API, bearer, register
from yuntu.drive import tree
from yuntu.drive.paths import Conflict
from yuntu.models.drive import Drive
from yuntu.storage import blobs


async def put_file(
    app: Any,
    drive_id: str | int,
    name: str,
    data: bytes,
    *,
    folder_id: str | int | None = None,
    actor_id: str | int | None = None,
    conflict: str = "error",
) -> str:
    """Store `data` and place it at `folder/name` in one transaction, as an upload would:
    ingest (server-side digests), adopt (one blob reference), place_file (quota, version, log).
    Returns the file id as a string."""

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    async with app.state.db.transaction() as session:
        staged = await blobs.ingest(blobs.store_of(session), chunks())
        blob = await blobs.adopt_staged(session, staged)
        drive = await session.get(Drive, int(drive_id))
        assert drive is not None
        folder = await tree.get_folder(session, drive, int(folder_id) if folder_id else None)
        file = await tree.place_file(
            session,
            drive,
            folder,
            name,
            blob,
            int(actor_id) if actor_id else None,
            conflict=Conflict(conflict),
        )
        return str(file.id)


async def sql(app: Any, statement: str, **params: Any) -> list[Any]:
    async with app.state.db.sessionmaker() as session:
        return list((await session.execute(text(statement), params)).all())


async def sql_value(app: Any, statement: str, **params: Any) -> Any:
    rows = await sql(app, statement, **params)
    return rows[0][0] if rows else None


def data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == 0 and body["message"] == "success", body
    return body["data"]


def error(response: httpx.Response, status: int, name: str | None = None) -> dict[str, Any]:
    """The documented error shape, with this status (and machine name)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "error", "data", "details"}, body
    assert body["data"] is None and body["code"] // 1000 == status
    if name is not None:
        assert body["error"] == name, body
    return body


class User:
    """A registered user with shortcuts for the drive API."""

    def __init__(self, client: httpx.AsyncClient, tokens: dict[str, Any]) -> None:
        self.client = client
        self.tokens = tokens
        self.id = tokens["user"]["id"]
        self.username = tokens["user"]["username"]
        self.headers = bearer(tokens)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.client.request(method, f"{API}{path}", headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def put(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PUT", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    async def drive(self, drive_id: str) -> dict[str, Any]:
        return data(await self.get(f"/drives/{drive_id}"))

    async def new_drive(self, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "Work")
        return data(await self.post("/drives", json=body), 201)

    async def mkdir(self, drive_id: str, name: str, parent_id: str | None = None) -> dict:
        response = await self.post(
            f"/drives/{drive_id}/folders", json={"parent_id": parent_id, "name": name}
        )
        return data(response, 201)

    async def children(self, drive_id: str, folder_id: str | None = None, **params: Any) -> dict:
        if folder_id is not None:
            params["folder_id"] = folder_id
        return data(await self.get(f"/drives/{drive_id}/children", params=params))

    async def names(self, drive_id: str, folder_id: str | None = None) -> list[str]:
        page = await self.children(drive_id, folder_id, page_size=100)
        return [item["name"] for item in page["items"]]


async def user(client: httpx.AsyncClient, username: str) -> User:
    return User(client, await register(client, username))


async def check_accounting(app: Any) -> None:
    """The invariants, asserted directly with SQL:
    - every blob's ref_count equals the file versions pointing at it, and an unreferenced
      blob carries zero_since (so the GC will find it);
    - every drive's used_bytes equals the sum of its versions' sizes, reserved_bytes the sum of
      its reserving upload-task files;
    - every file's current version row exists and matches the file's blob and size;
    - the tree: live folders' paths are their parent's path joined with their name, no live
      item sits in a trashed or missing folder, trashed items carry a trash root."""
    refs = await sql(
        app,
        "SELECT b.id, b.ref_count, b.zero_since, "
        "(SELECT count(*) FROM file_versions v WHERE v.blob_id = b.id) FROM blobs b",
    )
    for blob_id, ref_count, zero_since, versions in refs:
        assert ref_count == versions, f"blob {blob_id}: ref_count {ref_count} != {versions}"
        assert ref_count > 0 or zero_since is not None, f"blob {blob_id}: zero without zero_since"
    usage = await sql(
        app,
        "SELECT d.id, d.used_bytes, d.reserved_bytes, "
        "(SELECT coalesce(sum(v.size), 0) FROM file_versions v WHERE v.drive_id = d.id), "
        "(SELECT coalesce(sum(f.size), 0) FROM upload_task_files f "
        " JOIN upload_tasks t ON t.id = f.task_id WHERE t.drive_id = d.id AND f.reserved) "
        "FROM drives d",
    )
    for drive_id, used, reserved, versions_sum, reserving in usage:
        assert used == versions_sum, f"drive {drive_id}: used_bytes {used} != {versions_sum}"
        assert reserved == reserving, f"drive {drive_id}: reserved {reserved} != {reserving}"
    bad_current = await sql(
        app,
        "SELECT f.id FROM files f LEFT JOIN file_versions v "
        "ON v.file_id = f.id AND v.version = f.version "
        "WHERE v.id IS NULL OR v.blob_id <> f.blob_id OR v.size <> f.size "
        "OR v.drive_id <> f.drive_id",
    )
    assert not bad_current, f"files whose current version is wrong: {bad_current}"
    bad_paths = await sql(
        app,
        "SELECT c.id, c.path, p.path, c.name FROM folders c JOIN folders p ON p.id = c.parent_id "
        "WHERE c.trashed_at IS NULL AND c.path <> "
        "(CASE WHEN p.path = '/' THEN '/' || c.name ELSE p.path || '/' || c.name END)",
    )
    assert not bad_paths, f"live folders whose path is not parent/name: {bad_paths}"
    live_in_trash = await sql(
        app,
        "SELECT 'folder', c.id FROM folders c JOIN folders p ON p.id = c.parent_id "
        "WHERE c.trashed_at IS NULL AND p.trashed_at IS NOT NULL "
        "UNION ALL SELECT 'file', f.id FROM files f JOIN folders p ON p.id = f.folder_id "
        "WHERE f.trashed_at IS NULL AND p.trashed_at IS NOT NULL",
    )
    assert not live_in_trash, f"live items inside trashed folders: {live_in_trash}"
    cross_drive = await sql(
        app,
        "SELECT f.id FROM files f JOIN folders p ON p.id = f.folder_id WHERE p.drive_id <> "
        "f.drive_id UNION ALL SELECT c.id FROM folders c JOIN folders p ON p.id = c.parent_id "
        "WHERE p.drive_id <> c.drive_id",
    )
    assert not cross_drive, f"items whose folder is in another drive: {cross_drive}"
    rootless = await sql(
        app,
        "SELECT id FROM files WHERE (trashed_at IS NULL) <> (trash_root_id IS NULL) "
        "UNION ALL SELECT id FROM folders WHERE (trashed_at IS NULL) <> (trash_root_id IS NULL)",
    )
    assert not rootless, f"trash marks half set: {rootless}"
    roots = await sql(app, "SELECT id FROM folders WHERE parent_id IS NULL AND path <> '/'")
    assert not roots, f"parentless folders that are not roots: {roots}"
