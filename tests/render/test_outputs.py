"""Render outputs over HTTP: the agent's PUT (placement, dedup, quota, fencing, validation,
replacement), the owner's list, ZIP and `/files/download`, other users' 404s, and deleting a
task's outputs. Tasks are rows over a real scene in the owner's default drive; agents are rows
with real tokens; frames are claimed through the scheduling service."""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from tests.conftest import API, bearer, register
from yuntu.drive import fsck
from yuntu.models.drive import Blob, Drive, DriveFile, Folder
from yuntu.models.render import FrameTask, RenderAgent, RenderOutput, RenderTask
from yuntu.render import frame_states, frames, outputs, scheduling
from yuntu.render.agent_auth import generate_token
from yuntu.render.scheduling import Outcome, Report
from yuntu.storage import blobs

pytestmark = pytest.mark.anyio

MAX_OUTPUT = 64 * 1024
PNG_A = b"\x89PNG\r\n\x1a\n" + b"A" * 300
PNG_B = b"\x89PNG\r\n\x1a\n" + b"B" * 200


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"render_max_output_bytes": MAX_OUTPUT}


@dataclass
class Farm:
    """One user with a render task in their default drive, and one agent holding a frame."""

    app: FastAPI
    client: httpx.AsyncClient
    headers: dict[str, str]
    user_id: int
    drive_id: int
    task_id: int
    agent: RenderAgent
    token: str

    @property
    def db(self) -> Any:
        return self.app.state.db

    async def claim(self, limit: int = 1) -> list[FrameTask]:
        async with self.db.transaction() as session:
            return await scheduling.claim(session, self.agent, limit=limit)

    async def put(
        self,
        frame: FrameTask,
        name: str,
        data: bytes | AsyncIterator[bytes],
        *,
        attempt: int | None = None,
        number: int | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = None,
    ) -> httpx.Response:
        return await self.client.put(
            f"{API}/agents/frames/{frame.id}/outputs/{name}",
            params={
                "attempt": attempt or frame.attempts,
                "frame": frame.frames[0] if number is None else number,
            },
            content=data,
            headers={"Authorization": f"Bearer {token or self.token}", **(headers or {})},
        )


async def make_farm(
    app: FastAPI, client: httpx.AsyncClient, username: str = "ada", name: str = "shot 010/a"
) -> Farm:
    tokens = await register(client, username)
    headers = bearer(tokens)
    user_id = int(tokens["user"]["id"])
    scene = ok(
        await client.post(
            f"{API}/files/upload",
            files={"file": ("s.blend", f"scene of {username}".encode(), "application/x-blender")},
            headers=headers,
        )
    )
    token, digest, prefix = generate_token()
    async with app.state.db.transaction() as session:
        blob_id = await session.scalar(select(Blob.id).where(Blob.sha256 == scene["sha256"]))
        assert blob_id is not None
        await blobs.add_ref(session, blob_id)  # the task's reference on its scene
        listed = frames.parse("1-4")
        task = RenderTask(
            user_id=user_id,
            name=name,
            scene_file_id=int(scene["file_id"]),
            scene_blob_id=blob_id,
            scene_name="s.blend",
            software="blender",
            renderer="cycles",
            frame_spec=frames.normalize("1-4"),
            frame_count=len(listed),
            resolution_x=64,
            resolution_y=36,
            chunk_size=2,
            drive_id=int(scene["drive_id"]),
            status="queued",
        )
        agent = RenderAgent(
            name=f"node-{username}", token_hash=digest, token_prefix=prefix, renderers=["blender"]
        )
        session.add_all([task, agent])
        await session.flush()
        await frame_states.add_frames(session, task, frames.chunk(listed, 2))
        session.expunge(agent)
        return Farm(app, client, headers, user_id, int(scene["drive_id"]), task.id, agent, token)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def error(response: httpx.Response, status: int, name: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    if name is not None:
        assert body["error"] == name, body
    return body


async def count(farm: Farm, model: Any, *where: Any) -> int:
    async with farm.db.read_sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def blob_of(farm: Farm, data: bytes) -> Blob | None:
    import hashlib

    async with farm.db.read_sessionmaker() as session:
        return await session.scalar(
            select(Blob).where(Blob.sha256 == hashlib.sha256(data).hexdigest())
        )


async def drive_row(farm: Farm) -> Drive:
    async with farm.db.read_sessionmaker() as session:
        drive = await session.get(Drive, farm.drive_id)
        assert drive is not None
        return drive


async def test_outputs_land_deduplicated_and_are_listed_zipped_and_downloadable(app, client):
    farm = await make_farm(app, client)
    first, second = await farm.claim(limit=2)
    folder = f"/renders/shot 010_a-{farm.task_id}"
    used_before = (await drive_row(farm)).used_bytes

    one = ok(await farm.put(first, "frame_0001.png", PNG_A))
    assert one["path"] == f"{folder}/frame_0001.png"
    assert (one["filename"], one["frame"], one["size"]) == ("frame_0001.png", 1, len(PNG_A))
    assert one["is_duplicated"] is False
    two = ok(await farm.put(first, "frame_0002.png", PNG_A, number=2))
    three = ok(await farm.put(second, "frame_0003.png", PNG_B))
    assert two["is_duplicated"] is True and two["sha256"] == one["sha256"]
    assert three["path"] == f"{folder}/frame_0003.png"

    blob = await blob_of(farm, PNG_A)
    assert blob is not None and blob.ref_count == 4  # two file versions, two outputs
    drive = await drive_row(farm)
    assert drive.used_bytes == used_before + 2 * len(PNG_A) + len(PNG_B)
    assert drive.reserved_bytes == 0
    async with farm.db.read_sessionmaker() as session:
        task = await session.get(RenderTask, farm.task_id)
        output_folder = await session.get(Folder, task.output_folder_id)
        file = await session.get(DriveFile, int(one["drive_file_id"]))
    assert output_folder.path == folder and file.mime_type == "image/png"

    listed = ok(await client.get(f"{API}/tasks/{farm.task_id}/outputs", headers=farm.headers))
    assert listed["total"] == 3
    assert [item["filename"] for item in listed["items"]] == [
        "frame_0001.png",
        "frame_0002.png",
        "frame_0003.png",
    ]
    item = listed["items"][2]
    assert item["path"] == three["path"] and item["frame"] == 3 and item["size"] == len(PNG_B)
    assert item["drive_file_id"] == three["drive_file_id"]
    assert item["sha256"] == three["sha256"] and item["created_at"].endswith("Z")
    got = await client.get(item["download_url"])
    assert got.status_code == 200 and got.content == PNG_B

    archive = await client.get(f"{API}/tasks/{farm.task_id}/outputs.zip", headers=farm.headers)
    assert archive.status_code == 200, archive.text
    assert archive.headers["content-type"] == "application/zip"
    assert int(archive.headers["content-length"]) == len(archive.content)
    with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
        assert opened.namelist() == ["frame_0001.png", "frame_0002.png", "frame_0003.png"]
        assert opened.read("frame_0002.png") == PNG_A
        assert opened.read("frame_0003.png") == PNG_B

    # the render client's path finds outputs by task id, even after the drive file is renamed
    rename = await client.patch(
        f"{API}/drives/{farm.drive_id}/files/{three['drive_file_id']}",
        json={"name": "renamed.png"},
        headers=farm.headers,
    )
    assert rename.status_code == 200, rename.text
    redirect = await client.get(
        f"{API}/files/download/{farm.task_id}/frame_0003.png", headers=farm.headers
    )
    assert redirect.status_code == 302, redirect.text
    assert (await client.get(redirect.headers["location"])).content == PNG_B
    error(
        await client.get(f"{API}/files/download/{farm.task_id}/nope.png", headers=farm.headers),
        404,
    )


async def test_a_retried_frame_replaces_its_output_and_the_old_attempt_is_fenced(app, client):
    farm = await make_farm(app, client)
    (frame,) = await farm.claim()
    ok(await farm.put(frame, "frame_0001.png", PNG_A))
    async with farm.db.transaction() as session:
        await scheduling.finish(
            session, frame.id, farm.agent.id, frame.attempts, Report(Outcome.FAILED, error="x")
        )
    (again,) = await farm.claim()
    assert again.id == frame.id and again.attempts == frame.attempts + 1

    error(await farm.put(frame, "frame_0001.png", PNG_B), 409, "INVALID_STATE")
    replaced = ok(await farm.put(again, "frame_0001.png", PNG_B))
    assert replaced["path"].endswith("/frame_0001.png")

    assert await count(farm, RenderOutput, RenderOutput.task_id == farm.task_id) == 1
    async with farm.db.read_sessionmaker() as session:
        names = (
            await session.scalars(
                select(DriveFile.name).where(
                    DriveFile.folder_id == Folder.id, Folder.path.like("/renders/%")
                )
            )
        ).all()
    assert names == ["frame_0001.png"]  # one file per name, no copy in the trash
    old = await blob_of(farm, PNG_A)
    assert old is not None and old.ref_count == 0 and old.zero_since is not None
    drive = await drive_row(farm)
    async with farm.db.read_sessionmaker() as session:
        versions = await session.scalar(
            select(func.sum(DriveFile.size)).where(DriveFile.drive_id == farm.drive_id)
        )
    assert drive.used_bytes == versions
    listed = ok(await client.get(f"{API}/tasks/{farm.task_id}/outputs", headers=farm.headers))
    assert [(i["filename"], i["sha256"]) for i in listed["items"]] == [
        ("frame_0001.png", replaced["sha256"])
    ]
    assert (await client.get(listed["items"][0]["download_url"])).content == PNG_B


async def test_a_quota_refusal_leaves_nothing(app, client):
    farm = await make_farm(app, client)
    (frame,) = await farm.claim()
    async with farm.db.transaction() as session:
        await session.execute(
            update(Drive)
            .where(Drive.id == farm.drive_id)
            .values(quota_bytes=Drive.used_bytes + len(PNG_A) - 1)
        )
    error(await farm.put(frame, "frame_0001.png", PNG_A), 413, "QUOTA_EXCEEDED")
    assert await count(farm, RenderOutput) == 0
    assert await blob_of(farm, PNG_A) is None
    assert (await drive_row(farm)).reserved_bytes == 0
    ok(await farm.put(frame, "frame_0001.png", PNG_A[: len(PNG_A) - 1]))  # exactly fits


async def test_an_attempt_lost_while_the_bytes_stream_keeps_nothing(app, client):
    farm = await make_farm(app, client)
    (frame,) = await farm.claim()

    async def body() -> AsyncIterator[bytes]:
        yield PNG_A[:100]
        async with farm.db.transaction() as session:  # the lease expires meanwhile
            await scheduling.finish(
                session, frame.id, farm.agent.id, frame.attempts, Report(Outcome.AGENT_FAULT)
            )
        yield PNG_A[100:]

    response = await farm.put(
        frame, "frame_0001.png", body(), headers={"Content-Length": str(len(PNG_A))}
    )
    error(response, 409, "INVALID_STATE")
    assert await count(farm, RenderOutput) == 0
    assert await blob_of(farm, PNG_A) is None
    assert await count(farm, Folder, Folder.path.like("/renders%")) == 0
    # the fixture's fsck finds no orphan object and no reservation left behind


async def test_bad_requests_are_refused_before_anything_is_stored(app, client):
    farm = await make_farm(app, client)
    (frame,) = await farm.claim()
    error(await farm.put(frame, "frame_0009.png", PNG_A, number=9), 422, "VALIDATION_ERROR")
    for hostile in (
        "%2E%2E",
        "a%2Fb.png",
        "a%5Cb.png",
        "x%01.png",
        "x%7F.png",
        "%20lead.png",
        "x" * 256,
    ):
        error(await farm.put(frame, hostile, PNG_A), 400, "INVALID_PATH")

    async def chunked() -> AsyncIterator[bytes]:
        yield PNG_A

    error(await farm.put(frame, "frame_0001.png", chunked()), 422, "VALIDATION_ERROR")
    error(await farm.put(frame, "big.png", b"x" * (MAX_OUTPUT + 1)), 413, "PAYLOAD_TOO_LARGE")
    short = await farm.put(
        frame, "frame_0001.png", chunked(), headers={"Content-Length": str(len(PNG_A) + 5)}
    )
    error(short, 400, "SIZE_MISMATCH")  # a body shorter than declared
    error(
        await farm.put(frame, "frame_0001.png", PNG_A, token="yta_00000000_nope"),
        401,
        "TOKEN_INVALID",
    )
    missing = FrameTask(id=1, frames=[1], attempts=1)
    error(await farm.put(missing, "frame_0001.png", PNG_A), 404, "NOT_FOUND")
    assert await count(farm, RenderOutput) == 0
    assert await blob_of(farm, PNG_A) is None


async def test_another_users_task_answers_404_everywhere(app, client):
    farm = await make_farm(app, client)
    (frame,) = await farm.claim()
    ok(await farm.put(frame, "frame_0001.png", PNG_A))
    other = bearer(await register(client, "eve"))
    for path in (
        f"/tasks/{farm.task_id}/outputs",
        f"/tasks/{farm.task_id}/outputs.zip",
        f"/files/download/{farm.task_id}/frame_0001.png",
        "/tasks/4242/outputs",
    ):
        error(await client.get(f"{API}{path}", headers=other), 404)
    mine = await client.get(f"{API}/tasks/{farm.task_id}/outputs.zip", headers=farm.headers)
    assert mine.status_code == 200


async def test_delete_outputs_trashes_the_files_and_releases_the_references(app, client):
    farm = await make_farm(app, client)
    first, second = await farm.claim(limit=2)
    one = ok(await farm.put(first, "frame_0001.png", PNG_A))
    ok(await farm.put(second, "frame_0003.png", PNG_B))
    # one output the user filed elsewhere: it is trashed on its own
    move = await client.patch(
        f"{API}/drives/{farm.drive_id}/files/{one['drive_file_id']}",
        json={"folder_id": None},
        headers=farm.headers,
    )
    assert move.status_code == 200, move.text
    async with farm.db.transaction() as session:
        task = await session.get(RenderTask, farm.task_id)
        assert await outputs.delete_outputs(session, task) == 2
    assert await count(farm, RenderOutput) == 0
    assert (
        await count(farm, DriveFile, DriveFile.trashed_at.is_(None), DriveFile.name.like("frame%"))
        == 0
    )
    trash = ok(await client.get(f"{API}/drives/{farm.drive_id}/trash", headers=farm.headers))
    assert sorted(item["type"] for item in trash["items"]) == ["file", "folder"]
    assert (await blob_of(farm, PNG_A)).ref_count == 1  # the trashed file's version
    report = await fsck.run(farm.db)
    assert report.clean, report.as_dict()
    error(await client.get(f"{API}/tasks/{farm.task_id}/outputs.zip", headers=farm.headers), 409)
