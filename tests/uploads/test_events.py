"""Upload progress and completion arrive on the owner's WebSocket, and only there."""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest
import websockets

from tests.conftest import API
from tests.events.test_websocket import _recv, _register, live  # noqa: F401 (fixture)

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024


async def test_upload_events_reach_the_owner_only(live) -> None:  # noqa: F811
    host, _app = live
    owner = await _register(host, "uploader")
    other = await _register(host, "bystander")
    headers = {"Authorization": f"Bearer {owner['access_token']}"}
    data = os.urandom(5 * MiB + 100)
    small = b"tiny file"
    async with (
        websockets.connect(f"ws://{host}/ws?token={owner['access_token']}") as mine,
        websockets.connect(f"ws://{host}/ws?token={other['access_token']}") as theirs,
        httpx.AsyncClient(base_url=f"http://{host}", headers=headers, timeout=30) as client,
    ):
        assert (await _recv(mine))["type"] == "connected"
        assert (await _recv(theirs))["type"] == "connected"
        manifest = [
            {"path": "a/big.bin", "size": len(data), "md5": hashlib.md5(data).hexdigest()},
            {"path": "a/small.txt", "size": len(small), "md5": hashlib.md5(small).hexdigest()},
        ]
        task = (
            await client.post(f"{API}/upload-tasks", json={"name": "ev", "files": manifest})
        ).json()["data"]
        big, tiny = task["files"][0]["id"], task["files"][1]["id"]
        url = f"{API}/upload-tasks/{task['id']}/files/{big}"
        await client.post(f"{url}/multipart/init", json={})
        for number, chunk in ((1, data[: 5 * MiB]), (2, data[5 * MiB :])):
            response = await client.post(
                f"{url}/multipart/upload", params={"part_number": number}, content=chunk
            )
            assert response.status_code == 200
        assert (await client.post(f"{url}/multipart/complete")).status_code == 200
        sent = await client.post(
            f"{API}/upload-tasks/{task['id']}/files/{tiny}/upload", content=small
        )
        assert sent.status_code == 200

        seen: list[dict] = []
        while not any(
            e["type"] == "upload.task.status" and e["data"]["status"] == "completed" for e in seen
        ):
            seen.append(await _recv(mine))
        types = [event["type"] for event in seen]
        assert types.count("upload.progress") == 2
        progress = [e["data"] for e in seen if e["type"] == "upload.progress"]
        assert progress[-1]["file_bytes_received"] == len(data)
        finished = [e["data"] for e in seen if e["type"] == "upload.file"]
        assert {(f["file_id"], f["file_status"]) for f in finished} >= {
            (big, "completed"),
            (tiny, "completed"),
        }
        assert all(e["data"]["task_id"] == task["id"] for e in seen)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(theirs.recv(), 0.5)
