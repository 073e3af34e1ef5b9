"""Helpers shared by the upload tests: manifests, tasks over HTTP, content stored through the
services, team drives, and the accounting invariants checked with direct SQL."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import text

from tests.conftest import API
from tests.drive.helpers import check_accounting
from yuntu.drive import service as drives
from yuntu.drive import tree
from yuntu.drive.paths import Conflict, split_path
from yuntu.models.drive import Team, TeamMember
from yuntu.storage import blobs


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def entry(path: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """A manifest entry describing `data`."""
    return {"path": path, "size": len(data), "md5": md5(data), **extra}


async def create_task(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    files: list[dict[str, Any]],
    *,
    expect: int = 201,
    **extra: Any,
) -> dict[str, Any]:
    """POST /upload-tasks with `files` (manifest entries, see `entry`); returns `data` (or the
    whole error body when `expect` is not 201)."""
    response = await client.post(
        f"{API}/upload-tasks", json={"files": files, **extra}, headers=headers
    )
    assert response.status_code == expect, response.text
    body = response.json()
    return body["data"] if expect == 201 else body


def ids_by_path(task: dict[str, Any]) -> dict[str, str]:
    return {item["path"]: item["id"] for item in task["files"]}


def user_id(tokens: dict[str, Any]) -> int:
    return int(tokens["user"]["id"])


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def store_file(
    app: Any, owner_id: int, path: str, data: bytes, *, drive_id: int | None = None
) -> dict[str, int]:
    """Put `data` at `path` in a drive (default: the owner's default drive) through the
    services, as an earlier upload would have. Returns drive, file and blob ids."""
    async with app.state.db.transaction() as session:
        if drive_id is None:
            drive = await drives.ensure_default_drive(session, owner_id, writable=True)
        else:
            drive = await drives.get_drive(session, drive_id, owner_id, drives.Level.WRITE)
        segments = split_path(path, allow_root=False)
        root = await tree.get_folder(session, drive, None)
        folder = await tree.mkdir_p(session, drive, root, segments[:-1], owner_id)
        staged = await blobs.ingest(blobs.store_of(session), _one(data))
        blob = await blobs.adopt_staged(session, staged)
        placed = await tree.place_file(
            session, drive, folder, segments[-1], blob, owner_id, conflict=Conflict.RENAME
        )
        return {"drive_id": drive.id, "file_id": placed.id, "blob_id": blob.id}


async def default_drive_id(app: Any, owner_id: int) -> int:
    async with app.state.db.transaction() as session:
        return (await drives.ensure_default_drive(session, owner_id, writable=True)).id


async def make_drive(app: Any, owner_id: int, **options: Any) -> int:
    """A personal drive with options (quota_bytes, denied_types, max_file_size...)."""
    async with app.state.db.transaction() as session:
        drive = await drives.create_drive(
            session, name="extra", owner_user_id=owner_id, created_by=owner_id, **options
        )
        return drive.id


async def make_team_drive(app: Any, owner_id: int, members: dict[int, str]) -> tuple[int, int]:
    """A team owned by `owner_id` with `members` ({user id: role}) and a drive; returns
    (team id, drive id)."""
    async with app.state.db.transaction() as session:
        team = Team(name="studio", created_by=owner_id)
        session.add(team)
        await session.flush()
        session.add(TeamMember(team_id=team.id, user_id=owner_id, role="owner"))
        for member, role in members.items():
            session.add(TeamMember(team_id=team.id, user_id=member, role=role))
        drive = await drives.create_drive(
            session, name="team", team_id=team.id, created_by=owner_id
        )
        return team.id, drive.id


async def sql(app: Any, statement: str, **params: Any) -> list[Any]:
    async with app.state.db.transaction() as session:
        result = await session.execute(text(statement), params)
        return list(result.all()) if result.returns_rows else []


async def scalar(app: Any, statement: str, **params: Any) -> Any:
    rows = await sql(app, statement, **params)
    return rows[0][0] if rows else None


async def drive_usage(app: Any, drive_id: int) -> tuple[int, int]:
    rows = await sql(
        app, "SELECT used_bytes, reserved_bytes FROM drives WHERE id = :id", id=drive_id
    )
    return int(rows[0][0]), int(rows[0][1])


async def assert_accounting(app: Any) -> None:
    """The invariants, recounted with plain SQL: the drive checker (blob references, used and
    reserved bytes, the tree), plus each task's reserved bytes."""
    await check_accounting(app)
    tasks_rows = await sql(
        app,
        "SELECT t.id, t.reserved_bytes,"
        " (SELECT COALESCE(SUM(f.size), 0) FROM upload_task_files f"
        "   WHERE f.task_id = t.id AND f.reserved) FROM upload_tasks t",
    )
    assert all(row[1] == row[2] for row in tasks_rows), tasks_rows
