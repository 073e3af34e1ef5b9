"""Real `yuntu worker` processes against one database (SQLite and PostgreSQL): crash recovery,
exactly-once draining, one cron run per slot."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.procs import start_worker
from yuntu.jobs import service
from yuntu.models.jobs import CronRun, Job

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


async def wait_until(predicate, timeout: float, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError("condition not reached in time")


def executions(path: Path) -> list[tuple[int, int, int]]:
    if not path.exists():
        return []
    return [tuple(int(part) for part in line.split()) for line in path.read_text().splitlines()]


async def test_sigkill_mid_job_is_retried_after_the_lease(db, db_url, tmp_path):
    record = tmp_path / "runs.txt"
    async with db.transaction() as session:
        job = await service.enqueue(
            session, "test.steps", {"steps": 30, "step_seconds": 0.1, "record": str(record)}
        )
    first = start_worker(tmp_path, db_url, "worker-a", "--concurrency", "2")
    try:

        async def progressing():
            async with db.sessionmaker() as session:
                row = await session.get(Job, job.id)
                return row.status == "running" and row.progress >= 10 and row

        await wait_until(progressing, 30)
        first.kill()  # SIGKILL: no chance to hand the job back
    finally:
        first.stop()
    second = start_worker(tmp_path, db_url, "worker-b")
    try:

        async def finished():
            async with db.sessionmaker() as session:
                row = await session.get(Job, job.id)
                return row.status in ("succeeded", "failed") and row

        done = await wait_until(finished, 60)
    finally:
        second.stop()
    assert done.status == "succeeded" and done.attempts == 2
    runs = executions(record)
    assert [attempt for _, attempt, _ in runs] == [1, 2]
    assert runs[0][2] == first.pid and runs[1][2] == second.pid


async def test_two_workers_drain_500_jobs_each_exactly_once(db, db_url, tmp_path):
    record = tmp_path / "runs.txt"
    workers = [
        start_worker(tmp_path, db_url, f"worker-{i}", "--concurrency", "8") for i in range(2)
    ]
    try:
        async with db.transaction() as session:
            # 20 ms per job: one worker alone would need over a second, so both must take part
            payload = {"record": str(record), "sleep": 0.02}
            ids = [(await service.enqueue(session, "test.noop", payload)).id for _ in range(500)]

        async def drained():
            async with db.sessionmaker() as session:
                left = await session.scalar(
                    select(func.count()).select_from(Job).where(Job.status != "succeeded")
                )
                return left == 0

        await wait_until(drained, 120, 0.25)
    finally:
        for worker in workers:
            worker.stop()
    runs = executions(record)
    per_job = Counter(job_id for job_id, _, _ in runs)
    assert sorted(per_job) == sorted(ids) and set(per_job.values()) == {1}
    assert {pid for _, _, pid in runs} == {w.pid for w in workers}  # both took part


async def test_three_workers_one_cron_run_per_slot(db, db_url, tmp_path):
    record = tmp_path / "cron.txt"
    workers = [
        start_worker(tmp_path, db_url, f"cron-{i}", YUNTU_TEST_FAST_CRON=str(record))
        for i in range(3)
    ]
    try:
        await asyncio.sleep(4.5)
    finally:
        for worker in workers:
            worker.stop()
    async with db.sessionmaker() as session:
        slots = (
            await session.scalars(
                select(CronRun.slot).where(CronRun.schedule == "test.every-second")
            )
        ).all()
        keys = (
            await session.scalars(
                select(Job.unique_key).where(Job.unique_key.like("cron:test.every-second:%"))
            )
        ).all()
    assert len(slots) >= 2
    assert len(keys) == len(set(keys)) == len(slots)
    runs = Counter(job_id for job_id, _, _ in executions(record))
    assert set(runs.values()) <= {1}
