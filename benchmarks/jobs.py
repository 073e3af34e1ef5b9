"""Job engine throughput and pickup latency, with a same-run baseline.

For PostgreSQL (when YUNTU_BENCH_DATABASE_URL or a local server is reachable) and SQLite:
  * throughput of no-op jobs drained by 1 and by 4 `yuntu worker` processes (16 concurrent jobs
    each): N jobs are enqueued first, then the workers start; jobs/s = N / (last finish - first
    start), read from the jobs table;
  * the baseline: the same two statements per job (claim with SKIP LOCKED / UPDATE ... RETURNING,
    then mark done) issued by 4 bare connections without any engine around them; the ratio shows
    what the engine costs over the database floor;
  * median enqueue-to-start latency on an idle queue (PostgreSQL: LISTEN/NOTIFY wake-up across
    processes; SQLite: the embedded worker in the enqueuing process, woken in-process).

    .venv/bin/python benchmarks/jobs.py [--jobs 3000] [--latency-samples 40]

Goals (issue 3): >= 600 jobs/s with 4 workers on PostgreSQL; median pickup <= 10 ms.
Peers measured on these machines: Celery 5.7 + Redis, 4 prefork workers ~510 jobs/s, 4 ms;
procrastinate ~250 jobs/s, 6 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select, text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from yuntu.jobs import service  # noqa: E402
from yuntu.kit import migrate  # noqa: E402
from yuntu.kit.db import Database  # noqa: E402
from yuntu.models.jobs import Job  # noqa: E402

PG_SERVER = os.environ.get(
    "YUNTU_BENCH_PG", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def yuntu() -> list[str]:
    script = Path(sys.executable).with_name("yuntu")
    return [str(script)] if script.exists() else [sys.executable, "-m", "yuntu.cli"]


async def fresh_database(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
    import asyncpg

    name = f"yuntu_bench_{os.getpid()}"
    admin = await asyncpg.connect(PG_SERVER.replace("+asyncpg", ""))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    return PG_SERVER.rsplit("/", 1)[0] + f"/{name}"


async def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        import asyncpg

        admin = await asyncpg.connect(PG_SERVER.replace("+asyncpg", ""))
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        await admin.close()


async def reset(db: Database) -> None:
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM job_logs"))
        await session.execute(text("DELETE FROM jobs"))


async def enqueue_many(db: Database, count: int) -> None:
    batch = 500
    for start in range(0, count, batch):
        async with db.transaction() as session:
            for _ in range(min(batch, count - start)):
                await service.enqueue(session, "test.noop")


def worker_env(url: str, workdir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTU_")}
    env.update(
        {
            "YUNTU_DATABASE_URL": url,
            "YUNTU_DATA_DIR": str(workdir / "var"),
            "YUNTU_PLUGINS": "tests.support.job_handlers",
            "YUNTU_LOG_LEVEL": "WARNING",
            "YUNTU_WORKER_POLL_INTERVAL_SECONDS": "0.05",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


async def drain(db: Database, url: str, workdir: Path, processes: int, jobs: int) -> float:
    await reset(db)
    await enqueue_many(db, jobs)
    procs = [
        subprocess.Popen(
            [*yuntu(), "worker", "--concurrency", "16"],
            env=worker_env(url, workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            async with db.sessionmaker() as session:
                left = await session.scalar(
                    select(func.count()).select_from(Job).where(Job.status != "succeeded")
                )
            if not left:
                break
            await asyncio.sleep(0.2)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
    async with db.sessionmaker() as session:
        first, last = (
            await session.execute(select(func.min(Job.started_at), func.max(Job.finished_at)))
        ).one()
    return jobs / (last - first).total_seconds()


async def floor(db: Database, jobs: int, connections: int = 4) -> float:
    """The database floor: claim + complete per job, 4 bare connections, no engine."""
    await reset(db)
    await enqueue_many(db, jobs)
    pg = db.dialect == "postgresql"
    lock = " FOR UPDATE SKIP LOCKED" if pg else ""
    claim = text(
        "UPDATE jobs SET status='running', attempts=attempts+1 WHERE id IN (SELECT id FROM jobs "
        f"WHERE status='queued' ORDER BY priority DESC, run_at, id LIMIT 1{lock}) RETURNING id"
    )
    done = text("UPDATE jobs SET status='succeeded' WHERE id=:id")

    async def loop() -> None:
        while True:
            async with db.transaction() as session:
                row = (await session.execute(claim)).first()
            if row is None:
                return
            async with db.transaction() as session:
                await session.execute(done, {"id": row[0]})

    started = time.perf_counter()
    await asyncio.gather(*[loop() for _ in range(connections)])
    return jobs / (time.perf_counter() - started)


async def pickup_latency(db: Database, url: str, workdir: Path, samples: int) -> float:
    await reset(db)
    delays: list[float] = []
    if db.dialect == "postgresql":
        proc = subprocess.Popen(
            [*yuntu(), "worker", "--concurrency", "4"],
            env={**worker_env(url, workdir), "YUNTU_WORKER_POLL_INTERVAL_SECONDS": "5"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        worker = None
        await asyncio.sleep(3)
    else:
        import tests.support.job_handlers  # noqa: F401

        from yuntu.jobs.worker import Worker

        proc = None
        worker = Worker(db, concurrency=4, poll_interval=5, run_cron=False)
        await worker.start()
        await asyncio.sleep(0.5)
    try:
        for _ in range(samples):
            async with db.transaction() as session:
                job = await service.enqueue(session, "test.noop")
            enqueued = job.created_at  # before the commit: the figure includes it
            while True:
                async with db.sessionmaker() as session:
                    started = await session.scalar(select(Job.started_at).where(Job.id == job.id))
                if started:
                    delays.append((started - enqueued).total_seconds() * 1000)
                    break
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.05)
    finally:
        if worker is not None:
            await worker.stop()
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    return statistics.median(delays)


async def bench(kind: str, jobs: int, samples: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        url = await fresh_database(kind, workdir)
        try:
            await asyncio.to_thread(migrate.upgrade, url)
            db = Database(url)
            try:
                out = {
                    "floor": await floor(db, jobs),
                    "1 worker": await drain(db, url, workdir, 1, jobs),
                    "4 workers": await drain(db, url, workdir, 4, jobs),
                    "pickup_ms": await pickup_latency(db, url, workdir, samples),
                }
            finally:
                await db.dispose()
        finally:
            await drop_database(url)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--only", choices=["postgres", "sqlite"])
    args = parser.parse_args()
    for kind in ("postgres", "sqlite"):
        if args.only and args.only != kind:
            continue
        figures = asyncio.run(bench(kind, args.jobs, args.latency_samples))
        print(f"[{kind}] {args.jobs} no-op jobs")
        print(f"  baseline (bare claim+complete, 4 connections): {figures['floor']:8.0f} jobs/s")
        for label in ("1 worker", "4 workers"):
            print(
                f"  {label:9} (16 concurrent each): {figures[label]:8.0f} jobs/s"
                f"   ratio to baseline {figures[label] / figures['floor']:.2f}"
            )
        print(f"  median enqueue-to-start on an idle queue: {figures['pickup_ms']:.1f} ms")
        if kind == "postgres":
            print(
                f"  goals: 4 workers >= 600 jobs/s ({'met' if figures['4 workers'] >= 600 else 'NOT met'}),"
                f" pickup <= 10 ms ({'met' if figures['pickup_ms'] <= 10 else 'NOT met'})"
            )


if __name__ == "__main__":
    main()
