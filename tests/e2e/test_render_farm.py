"""The render farm for real: `yuntu serve`, two `yuntu agent` processes with Blender, a scene of
6 frames in frame tasks of 2. Midway the task is paused (no new frame starts, the running ones
finish) and resumed; one agent is SIGKILLed while it renders, its frame comes back when its
lease expires and the other agent renders it. At the end: 6 PNG frames in the drive under
/renders/, a ZIP of them that opens, a bill equal to what was charged, and `yuntu ledger
verify` and `yuntu drive fsck` clean."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.e2e.conftest import LiveServer, create_admin, running_server
from tests.support.blender_scene import make_scene, need_blender, png_size
from tests.support.procs import Proc

pytestmark = pytest.mark.slow
API = "/api/v1"
WIDTH, HEIGHT = 160, 90


def data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def login(http: httpx.Client, username: str, password: str) -> dict[str, str]:
    tokens = data(http.post("/auth/login", json={"account": username, "password": password}))
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def start_agent(server: LiveServer, name: str, token: str) -> Proc:
    env = {**server.env, "YUNTU_AGENT_TOKEN": token}
    work = server.workdir / f"agent-{name}"
    work.mkdir()
    args = ["agent", "--server", server.base_url, "--renderers", "blender", "--slots", "1"]
    return Proc([*args, "--work-dir", str(work), "--name", name], env, server.workdir, name)


@pytest.mark.parametrize("backend", BACKENDS)
def test_six_blender_frames_through_two_agents(backend: str, tmp_path: Path) -> None:
    blender = need_blender()
    scene_file = make_scene(blender, tmp_path / "scenes" / "shot.blend", samples=256)
    settings = {
        "YUNTU_RENDER_LOCAL_AGENT": "false",
        "YUNTU_RENDER_LEASE_SECONDS": "6",
        "YUNTU_RENDER_HEARTBEAT_SECONDS": "1",
        "YUNTU_RENDER_POLL_SECONDS": "0.3",
    }
    with running_server(backend, tmp_path, **settings) as server:
        admin = create_admin(server)
        http = httpx.Client(base_url=f"{server.base_url}{API}", timeout=30)
        root = login(http, admin["username"], admin["password"])
        tokens = [
            data(http.post("/admin/render/agents", json={"name": name}, headers=root), 201)
            for name in ("node-a", "node-b")
        ]

        data(
            http.post("/auth/register", json={"username": "alice", "password": "h0rse-batt3ry"}),
            201,
        )
        alice = login(http, "alice", "h0rse-batt3ry")
        order = data(http.post("/users/recharge", json={"amount": "10.00"}, headers=alice), 201)
        paid = http.post(order["payment"]["checkout_url"], json={"outcome": "paid"}, headers=alice)
        assert paid.status_code == 200, paid.text
        before = data(http.get("/users/balance", headers=alice))
        assert before["balance"] == "10.00"

        with scene_file.open("rb") as handle:
            uploaded = data(
                http.post("/files/upload", files={"file": ("shot.blend", handle)}, headers=alice)
            )
        task = data(
            http.post(
                "/tasks",
                json={
                    "name": "shot",
                    "scene_file_id": uploaded["file_id"],
                    "software": "blender",
                    "renderer": "cycles",
                    "frames": "1-6",
                    "width": WIDTH,
                    "height": HEIGHT,
                    "chunk_size": 2,
                },
                headers=alice,
            ),
            201,
        )
        url = f"/tasks/{task['id']}"
        assert task["status"] == "queued" and task["frame_tasks"]["waiting"] == 3

        def detail() -> dict[str, Any]:
            return data(http.get(url, headers=alice))  # type: ignore[no-any-return]

        agents = [
            start_agent(server, "node-a", tokens[0]["token"]),
            start_agent(server, "node-b", tokens[1]["token"]),
        ]
        try:
            # both agents pick up a chunk: pause while they render
            wait_for("two running frame tasks", lambda: detail()["frame_tasks"]["running"] == 2)
            paused = data(http.put(f"{url}/pause", headers=alice))
            assert paused["status"] == "paused"
            settled = wait_for(
                "the running frames to finish while paused",
                lambda: (d := detail())["frame_tasks"]["running"] == 0 and d,
            )
            assert settled["status"] == "paused" and settled["frame_tasks"]["succeeded"] == 2
            time.sleep(1.0)  # idle agents keep polling: nothing may start while paused
            assert detail()["frame_tasks"]["waiting"] == 1

            data(http.put(f"{url}/resume", headers=alice))
            running = wait_for(
                "the last chunk to start",
                lambda: next(
                    (a for a in data(http.get("/admin/render/agents", headers=root))["items"]
                     if a["running"]),
                    None,
                ),
            )  # fmt: skip
            victim = agents[0] if running["name"] == "node-a" else agents[1]
            victim.kill()  # SIGKILL: its frame comes back when the lease expires
            done = wait_for("the task to complete", lambda: detail()["status"] == "completed")
            assert done
        finally:
            for agent in agents:
                agent.stop()

        final = detail()
        assert final["frame_tasks"]["succeeded"] == 3 and final["progress"] == 1.0
        frames = data(http.get(f"{url}/frames", headers=alice))["items"]
        assert max(frame["attempts"] for frame in frames) >= 2  # the killed agent's chunk

        outputs = data(http.get(f"{url}/outputs", headers=alice))
        items = outputs["items"] if isinstance(outputs, dict) else outputs
        names = sorted(item["filename"] for item in items)
        assert names == [f"frame_{n:04d}.png" for n in range(1, 7)]
        folder = {item["path"].rsplit("/", 1)[0] for item in items}
        assert folder == {f"/renders/shot-{task['id']}"}

        archive = http.get(f"{url}/outputs.zip", headers=alice)
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as opened:
            assert sorted(opened.namelist()) == names
            for name in names:
                assert png_size(opened.read(name)) == (WIDTH, HEIGHT)

        link = http.get(f"/files/download/{task['id']}/frame_0003.png", headers=alice)
        assert link.status_code == 302
        frame = httpx.get(link.headers["Location"], timeout=30)
        assert png_size(frame.content) == (WIDTH, HEIGHT)

        after = data(http.get("/users/balance", headers=alice))
        assert after["held"] == "0.00"
        bills = data(http.get("/users/bills", headers=alice))["items"]
        (bill,) = [b for b in bills if b["reference_id"] == task["id"]]
        assert bill["status"] == "closed" and bill["total"] == final["cost"]
        charged = sum(int(line["amount"].replace(".", "")) for line in bill["lines"])
        assert f"{charged // 100}.{charged % 100:02d}" == final["cost"]
        spent = int(before["balance"].replace(".", "")) - int(after["balance"].replace(".", ""))
        assert f"{spent // 100}.{spent % 100:02d}" == final["cost"] and spent > 0

        http.close()
        verify = server.cli("ledger", "verify")
        assert verify.returncode == 0, verify.stdout + verify.stderr
        fsck = server.cli("drive", "fsck")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
