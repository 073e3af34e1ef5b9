"""Render farm: scheduling throughput and Blender overhead, each against a same-run baseline.

1. Scheduling throughput (PostgreSQL): one task of N one-frame frame tasks for the no-op
   renderer (software `noop`: no process, no file, no log line), drained by 4
   `yuntu agent` processes (4 slots each) through `yuntu serve` over HTTP: claim, output upload,
   heartbeats, finish with its cost. Frame tasks/s = N / (last finish - first
   start), read from the frame rows.
   Baseline: the same N frame tasks claimed and finished by 16 coroutines calling the dispatch
   service directly (`dispatch.claim_for_agent`, `dispatch.finish_frame`: the same
   transactions, billing included, without HTTP, the agent process or the output upload).
   The ratio is what the network protocol and the agent keep of the service's own speed.
2. Blender overhead (the server's database as in part 1): the same chunks of a real scene
   (12 frames at 160x90, Cycles, frame tasks of 2) rendered (a) by running the agent's own
   Blender command for each chunk one after another, and (b) through Yuntu: submit the task to
   `yuntu serve` with one idle `yuntu agent --slots 1` and wait for `completed` (scene
   download, six claims, log lines, twelve uploads, six finishes and billing included).
   Ratio = (b) / (a), five alternating rounds (median).

    .venv/bin/python benchmarks/render.py [--frames 2000] [--skip-blender | --skip-scheduling]

Goals (issue 6): >= 200 frame tasks/s across 4 agents; Blender through Yuntu <= 1.15x direct.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from serving import free_port, yuntu
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.blender_scene import blender_executable, make_scene  # noqa: E402

from yuntu.kit.db import Database  # noqa: E402
from yuntu.models.render import FrameTask, RenderAgent  # noqa: E402
from yuntu.render import dispatch  # noqa: E402
from yuntu.render.blender import build_command  # noqa: E402
from yuntu.render.contract import ChunkJob  # noqa: E402
from yuntu.render.scheduling import Outcome, Report  # noqa: E402
from yuntu.settings import Settings  # noqa: E402
from yuntu.storage import open_store  # noqa: E402

API = "/api/v1"
PG_SERVER = os.environ.get(
    "YUNTU_BENCH_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)
PASSWORD = "bench-Passw0rd!"


async def fresh_database() -> str:
    import asyncpg

    name = f"yuntu_render_bench_{os.getpid()}"
    admin = await asyncpg.connect(PG_SERVER.replace("+asyncpg", ""))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return PG_SERVER.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(PG_SERVER.replace("+asyncpg", ""))
    await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    await admin.close()


class Farm:
    """`yuntu serve` on a fresh database, an administrator, a funded user and agent tokens."""

    def __init__(self, url: str, workdir: Path) -> None:
        self.url, self.workdir = url, workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTU_")}
        self.env.update(
            {
                "YUNTU_DATABASE_URL": url,
                "YUNTU_DATA_DIR": str(workdir / "var"),
                "YUNTU_LOG_LEVEL": "WARNING",
                "YUNTU_RENDER_LOCAL_AGENT": "false",
                "PYTHONPATH": str(ROOT),
            }
        )
        self.procs: list[subprocess.Popen[bytes]] = []
        self.http = httpx.Client(base_url=f"{self.base}{API}", timeout=60)
        self.root: dict[str, str] = {}
        self.user: dict[str, str] = {}

    def start(self) -> None:
        server = self._spawn(["serve", "--host", "127.0.0.1", "--port", str(self.port)], "serve")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError("yuntu serve exited; see serve.log")
            try:
                if httpx.get(f"{self.base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        done = subprocess.run(
            [*yuntu(), "admin", "create-user", "--username", "root", "--password", PASSWORD,
             "--role", "admin"],
            env=self.env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        self.root = self.login("root")
        self.data(
            self.http.post("/auth/register", json={"username": "bencher", "password": PASSWORD})
        )
        self.user = self.login("bencher")
        order = self.data(
            self.http.post("/users/recharge", json={"amount": "50000.00"}, headers=self.user)
        )
        self.data(
            self.http.post(
                order["payment"]["checkout_url"], json={"outcome": "paid"}, headers=self.user
            )
        )

    def _spawn(self, args: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [*yuntu(), *args], env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def data(response: httpx.Response) -> Any:
        assert response.status_code < 300, response.text
        return response.json()["data"]

    def login(self, username: str) -> dict[str, str]:
        tokens = self.data(
            self.http.post("/auth/login", json={"account": username, "password": PASSWORD})
        )
        return {"Authorization": f"Bearer {tokens['access_token']}"}

    def agent_token(self, name: str) -> str:
        made = self.data(
            self.http.post("/admin/render/agents", json={"name": name}, headers=self.root)
        )
        return str(made["token"])

    def start_agent(
        self, name: str, renderers: str, slots: int, **env: str
    ) -> subprocess.Popen[bytes]:
        work = self.workdir / f"agent-{name}"
        work.mkdir(exist_ok=True)
        return self._spawn(
            ["agent", "--server", self.base, "--renderers", renderers, "--slots", str(slots),
             "--work-dir", str(work), "--name", name],
            f"agent-{name}", YUNTU_AGENT_TOKEN=self.agent_token(name), **env,
        )  # fmt: skip

    def upload(self, path: Path) -> str:
        with path.open("rb") as handle:
            sent = self.http.post(
                "/files/upload", files={"file": (path.name, handle)}, headers=self.user
            )
        return str(self.data(sent)["file_id"])

    def submit(self, scene_id: str, **fields: Any) -> str:
        body = {"name": "bench", "scene_file_id": scene_id, "width": 160, "height": 90, **fields}
        return str(self.data(self.http.post("/tasks", json=body, headers=self.user))["id"])

    def wait_completed(self, task_id: str, timeout: float = 900, interval: float = 0.05) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.data(self.http.get(f"/tasks/{task_id}", headers=self.user))["status"]
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise RuntimeError(f"task {task_id} ended {status}")
            time.sleep(interval)
        raise TimeoutError(f"task {task_id} did not complete")

    def stop_procs(self, procs: list[subprocess.Popen[bytes]]) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            if proc in self.procs:
                self.procs.remove(proc)

    def close(self) -> None:
        self.http.close()
        self.stop_procs(list(reversed(self.procs)))


async def frame_span(url: str, task_id: int) -> tuple[int, float]:
    db = Database(url)
    async with db.read_sessionmaker() as session:
        row = (
            await session.execute(
                select(
                    func.count(), func.min(FrameTask.started_at), func.max(FrameTask.finished_at)
                ).where(FrameTask.task_id == task_id, FrameTask.status == "succeeded")
            )
        ).one()
    await db.dispose()
    return int(row[0]), (row[2] - row[1]).total_seconds()


async def service_baseline(farm: Farm, scene_id: str, frames: int) -> float:
    """The dispatch service alone: 16 coroutines (4 agents x 4 slots) claim and finish."""
    db = Database(farm.url)
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, data_dir=farm.workdir / "var", database_url=farm.url
    )
    db.settings = settings
    db.storage = open_store(settings.effective_storage_url)  # scene links are signed
    await db.storage.start()
    task_id = int(farm.submit(scene_id, software="noop", renderer="noop", frames=f"1-{frames}"))
    agent_ids = []
    async with db.transaction() as session:
        for i in range(4):
            agent = RenderAgent(
                name=f"inproc-{i}", token_hash=f"{i:064d}", token_prefix="yta_bench",
                renderers=["noop"], slots=4,
            )  # fmt: skip
            session.add(agent)
            await session.flush()
            agent_ids.append(agent.id)
    report = Report(outcome=Outcome.SUCCEEDED, exit_code=0, duration_ms=1, core_seconds=0.001)

    async def slot(agent_id: int) -> None:
        while True:
            got = await dispatch.claim_for_agent(db, agent_id, limit=1)
            if not got:
                return
            for assignment in got:
                async with db.transaction() as session:
                    agent = await session.get(RenderAgent, agent_id)
                    assert agent is not None
                    await dispatch.finish_frame(
                        session, agent, assignment["frame_id"], assignment["attempt"], report
                    )

    await asyncio.gather(*(slot(agent_id) for agent_id in agent_ids for _ in range(4)))
    await db.storage.close()
    await db.dispose()
    done, seconds = await frame_span(farm.url, task_id)
    assert done == frames, (done, frames)
    return frames / seconds


def scheduling(farm: Farm, frames: int) -> None:
    print(f"\n== scheduling: {frames} one-frame tasks, no-op renderer, PostgreSQL ==")
    placeholder = farm.workdir / "bench.noop"
    placeholder.write_bytes(b"no-op scene")
    scene_id = farm.upload(placeholder)
    baseline = asyncio.run(service_baseline(farm, scene_id, frames))
    print(f"service alone (16 coroutines, no HTTP): {baseline:8.1f} frame tasks/s")
    agents = [
        farm.start_agent(f"noop-{i}", "noop", 4, YUNTU_RENDER_NOOP_OUTPUTS="false")
        for i in range(4)
    ]
    time.sleep(2)  # registered and polling
    task_id = farm.submit(scene_id, software="noop", renderer="noop", frames=f"1-{frames}")
    farm.wait_completed(task_id, interval=0.25)
    done, seconds = asyncio.run(frame_span(farm.url, int(task_id)))
    rate = done / seconds
    server_cpu, agents_cpu = cpu_seconds(farm.procs[0]), sum(cpu_seconds(a) for a in agents)
    farm.stop_procs(agents)
    print(f"4 yuntu agent processes over HTTP:    {rate:8.1f} frame tasks/s  (goal >= 200)")
    print(f"ratio HTTP / service:                 {rate / baseline:8.2f}")
    print(
        f"CPU per frame task: server {server_cpu / done * 1000:.1f} ms (this whole run), "
        f"agents {agents_cpu / done * 1000:.1f} ms"
    )


def cpu_seconds(proc: subprocess.Popen[bytes]) -> float:
    """User + system CPU time of a running process so far (Linux /proc)."""
    fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def blender_chunks(frames: list[int], size: int) -> list[tuple[int, ...]]:
    return [tuple(frames[i : i + size]) for i in range(0, len(frames), size)]


def direct(executable: str, scene: Path, out: Path, chunks: list[tuple[int, ...]]) -> float:
    started = time.monotonic()
    for chunk in chunks:
        job = ChunkJob(
            scene=str(scene), frames=chunk, out_dir=str(out / f"{chunk[0]}"), width=160, height=90
        )
        done = subprocess.run(
            build_command(job, executable=executable), capture_output=True, check=False
        )
        assert done.returncode == 0, done.stdout[-2000:]
    return time.monotonic() - started


def blender(farm: Farm, executable: str) -> None:
    print("\n== Blender: 12 frames at 160x90, Cycles 128 samples, frame tasks of 2 ==")
    scene = make_scene(executable, farm.workdir / "scene" / "bench.blend", samples=128)
    scene_id = farm.upload(scene)
    chunks = blender_chunks(list(range(1, 13)), 2)
    agent = farm.start_agent("blender", "blender", 1)
    time.sleep(2)
    ratios = []
    for round_ in range(5):
        out = farm.workdir / f"direct-{round_}"
        shutil.rmtree(out, ignore_errors=True)
        alone = direct(executable, scene, out, chunks)
        started = time.monotonic()
        task_id = farm.submit(
            scene_id, software="blender", renderer="cycles", frames="1-12", chunk_size=2
        )
        farm.wait_completed(task_id)
        through = time.monotonic() - started
        ratios.append(through / alone)
        print(
            f"round {round_ + 1}: direct {alone:6.2f} s   through Yuntu {through:6.2f} s   "
            f"ratio {through / alone:.3f}"
        )
    farm.stop_procs([agent])
    print(f"median ratio Yuntu / direct: {statistics.median(ratios):.3f}  (goal <= 1.15)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--skip-blender", action="store_true")
    parser.add_argument("--skip-scheduling", action="store_true")
    args = parser.parse_args()
    url = asyncio.run(fresh_database())
    workdir = Path(tempfile.mkdtemp(prefix="yuntu-render-bench-"))
    farm = Farm(url, workdir)
    try:
        farm.start()
        print(f"cores: {os.cpu_count()}  workdir: {workdir}")
        if not args.skip_scheduling:
            scheduling(farm, args.frames)
        executable = blender_executable()
        if args.skip_blender:
            pass
        elif executable is None:
            print("\nblender not installed: part 2 skipped")
        else:
            blender(farm, executable)
    finally:
        farm.close()
        asyncio.run(drop_database(url))
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
