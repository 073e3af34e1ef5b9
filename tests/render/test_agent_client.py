"""The agent client's retry policy and scene downloads, against a scripted HTTP server
(`httpx.MockTransport` answering as the protocol says the server may: 503s, 429 with
Retry-After, connection failures, error envelopes). The protocol calls themselves run against
the real app in test_agent_runtime.py."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from yuntu.render.agent.client import AgentClient, ApiError, Scene, SceneError, Unreachable

pytestmark = pytest.mark.anyio

TOKEN = "yta_test_token"


def envelope(data: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, json={"code": 0, "message": "success", "data": data})


def refusal(status: int, error: str, **headers: str) -> httpx.Response:
    body = {"code": status * 1000 + 1, "message": "no", "error": error, "data": None}
    return httpx.Response(status, json=body, headers=headers)


def scripted(*answers: httpx.Response | Exception) -> tuple[AgentClient, list[httpx.Request]]:
    """A client whose server gives `answers` in order (the last one from then on)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[min(len(seen), len(answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = AgentClient(
        "http://farm.test/",
        TOKEN,
        attempts=4,
        backoff_base=0.001,
        backoff_cap=0.002,
        transport=httpx.MockTransport(handle),
    )
    return client, seen


async def test_5xx_429_and_connection_errors_are_retried() -> None:
    client, seen = scripted(
        refusal(503, "SERVICE_UNAVAILABLE"),
        httpx.ConnectError("refused"),
        refusal(429, "RATE_LIMITED", **{"Retry-After": "0"}),
        envelope({"frames": []}),
    )
    assert await client.claim(limit=2) == []
    assert len(seen) == 4
    request = seen[-1]
    assert request.url == "http://farm.test/api/v1/agents/claim"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert json.loads(request.content) == {"limit": 2}
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "error"), [(409, "INVALID_STATE"), (422, "VALIDATION_ERROR"), (401, "TOKEN_INVALID")]
)
async def test_4xx_is_final_and_carries_the_error_code(status: int, error: str) -> None:
    client, seen = scripted(refusal(status, error))
    with pytest.raises(ApiError) as refused:
        await client.log("7", 1, [{"level": "info", "line": "x"}])
    assert len(seen) == 1
    assert (refused.value.status_code, refused.value.error) == (status, error)
    assert refused.value.lost == (error == "INVALID_STATE")
    assert not refused.value.transient
    await client.aclose()


async def test_what_never_answers_ends_unreachable_or_with_the_last_error() -> None:
    client, seen = scripted(httpx.ConnectError("refused"))
    with pytest.raises(Unreachable, match=r"farm\.test"):
        await client.heartbeat([("7", 1)])
    assert len(seen) == 3  # a heartbeat keeps its retries short
    client, seen = scripted(httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(ApiError) as refused:
        await client.claim()
    assert (len(seen), refused.value.error, refused.value.transient) == (4, "HTTP_502", True)


async def test_outputs_stream_with_their_length(tmp_path: Path) -> None:
    path = tmp_path / "frame_0001.png"
    path.write_bytes(b"png" * 1000)
    answer = {"output_id": "9", "filename": path.name, "size": 3000, "sha256": "x", "path": "/r"}
    client, seen = scripted(refusal(503, "SERVICE_UNAVAILABLE"), envelope(answer))
    stored = await client.put_output("7", 2, path, "frame 0001.png", 1)
    assert stored.size == 3000 and len(seen) == 2
    request = seen[-1]
    assert request.method == "PUT"
    assert (
        request.url.raw_path
        == b"/api/v1/agents/frames/7/outputs/frame%200001.png?attempt=2&frame=1"
    )
    assert request.headers["content-length"] == "3000"
    assert "transfer-encoding" not in request.headers
    assert request.read() == b"png" * 1000  # the retry sent the whole file again


def scene_server(content: bytes, status: int = 200) -> Callable[[httpx.Request], httpx.Response]:
    def handle(request: httpx.Request) -> httpx.Response:
        assert "authorization" not in request.headers  # the signed link needs no token
        return httpx.Response(status, content=content)

    return handle


def partials(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.suffix == ".part"]


async def test_scene_downloads_are_checked(tmp_path: Path) -> None:
    content = b"BLENDER-v300" + bytes(500)
    digest = hashlib.sha256(content).hexdigest()
    url = "/api/v1/scenes/1?sig=abc"  # relative: resolved against the server
    scene = Scene(url=url, name="shot.blend", size=len(content), sha256=digest)
    for handler, expected in (
        (scene_server(content), None),
        (scene_server(content[:-1] + b"x"), "SHA-256"),
        (scene_server(content + b"more"), "larger"),
        (scene_server(b"", 404), "404"),
    ):
        client = AgentClient("http://farm.test", TOKEN, transport=httpx.MockTransport(handler))
        target = tmp_path / "scene.blend"
        target.unlink(missing_ok=True)
        if expected is None:
            await client.download_scene(scene, target)
            assert target.read_bytes() == content
        else:
            with pytest.raises(SceneError, match=expected):
                await client.download_scene(scene, target)
            assert not target.exists()
        assert not partials(tmp_path)
        await client.aclose()


async def test_the_scene_cache_downloads_once_and_evicts_what_is_not_in_use(tmp_path: Path) -> None:
    import asyncio

    from yuntu.render.agent.cache import SceneCache

    bodies = {f"/{n}": f"scene {n}".encode() * 100 for n in "abc"}  # 700 bytes each
    fetched: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        fetched.append(request.url.path)
        return httpx.Response(200, content=bodies[request.url.path])

    def scene(path: str, name: str = "s.blend") -> Scene:
        data = bodies[path]
        return Scene(url=path, name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())

    def cached() -> list[str]:
        return sorted(n for n in "abc" if (tmp_path / "scenes" / scene(f"/{n}").sha256).exists())

    client = AgentClient("http://farm.test", TOKEN, transport=httpx.MockTransport(handle))
    cache = SceneCache(tmp_path / "scenes", client, max_bytes=1500)
    cache.prepare()

    async def use(path: str, name: str = "s.blend") -> bytes:
        async with cache.use(scene(path, name)) as local:
            await asyncio.sleep(0.01)
            return local.read_bytes()

    # two slots want the same scene at once: one download
    assert await asyncio.gather(use("/a"), use("/a")) == [bodies["/a"]] * 2
    # the same bytes under another name (another task's upload): no download either
    assert await use("/a", "--shot;1.ma") == bodies["/a"]
    assert fetched == ["/a"]
    folder = tmp_path / "scenes" / scene("/a").sha256
    assert sorted(p.name for p in folder.iterdir()) == ["s.blend", "scene--shot_1.ma"]

    await use("/b")
    assert cached() == ["a", "b"]  # 1400 bytes (the two names of A are one file)
    async with cache.use(scene("/a")):
        await use("/c")  # 2100 > 1500: A is older, but in use; B goes
        assert cached() == ["a", "c"]
    await use("/b")  # fetched again; now A is the least recently used
    assert cached() == ["b", "c"]
    assert fetched == ["/a", "/b", "/c", "/b"]
    await client.aclose()
