"""`yuntu worker` and `yuntu jobs list|show|retry|cancel|run-schedule`."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import typer

from yuntu.settings import Settings

jobs_app = typer.Typer(help="Inspect and steer background jobs.", no_args_is_help=True)
T = TypeVar("T")


def _run(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    from yuntu.kit import ids
    from yuntu.resources import open_database

    ids.configure(settings.node_id)

    async def main() -> T:
        async with open_database(settings) as db:
            return await work(db)

    return asyncio.run(main())


def _job_json(job: Any) -> dict[str, Any]:
    from yuntu.jobs.schemas import JobOut

    return JobOut.model_validate(job).model_dump(mode="json")


def _app_error(exc: Exception) -> None:
    from yuntu.kit.errors import AppError

    if isinstance(exc, AppError):
        typer.echo(f"error: {exc.spec.name}: {exc.message or exc.spec.en}", err=True)
        raise typer.Exit(1) from None
    raise exc


def worker_command(
    settings: Settings,
    queues: str | None,
    concurrency: int | None,
) -> None:
    """Run a worker process until SIGTERM or SIGINT, then shut down gracefully."""
    from yuntu.jobs.runtime import build_worker
    from yuntu.kit.logging import configure_logging
    from yuntu.kit.pubsub import create_pubsub

    configure_logging(settings.log_level, settings.log_json)
    queue_list = [q.strip() for q in queues.split(",") if q.strip()] if queues else None

    async def work(db: Any) -> None:
        bus = create_pubsub(settings.redis_url.get_secret_value() if settings.redis_url else None)
        await bus.start()
        db.bus = bus
        worker = build_worker(
            db, bus, settings, queues=queue_list, concurrency=concurrency or settings.workers or 4
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await worker.run_until(stop)
        finally:
            await bus.stop()

    _run(settings, work)


@jobs_app.command("list")
def list_jobs(
    status: Annotated[str | None, typer.Option(help="queued, running, paused, ...")] = None,
    kind: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """Newest jobs first, as JSON lines."""
    from yuntu.jobs import service

    async def work(db: Any) -> list[dict[str, Any]]:
        async with db.transaction() as session:
            rows = (
                await session.scalars(service.list_statement(status=status, kind=kind).limit(limit))
            ).all()
            return [_job_json(row) for row in rows]

    for row in _run(Settings(), work):
        typer.echo(json.dumps(row))


@jobs_app.command("show")
def show_job(
    job_id: int, logs: Annotated[int, typer.Option(help="Log lines to show")] = 50
) -> None:
    """One job and the last lines of its log."""
    from yuntu.jobs import service

    async def work(db: Any) -> dict[str, Any]:
        async with db.transaction() as session:
            job = await service.get(session, job_id)
            lines = (await session.scalars(service.logs_statement(job_id))).all()[-logs:]
            return {
                **_job_json(job),
                "logs": [
                    {
                        "attempt": line.attempt,
                        "level": line.level,
                        "message": line.message,
                        "at": line.created_at.isoformat(),
                    }
                    for line in lines
                ],
            }

    try:
        typer.echo(json.dumps(_run(Settings(), work), indent=2))
    except Exception as exc:
        _app_error(exc)


def _steer(job_id: int, action: str) -> None:
    from yuntu.jobs import service

    async def work(db: Any) -> dict[str, Any]:
        async with db.transaction() as session:
            job = await service.get(session, job_id)
            job = await getattr(service, action)(session, job)
            return _job_json(job)

    try:
        typer.echo(json.dumps(_run(Settings(), work)))
    except Exception as exc:
        _app_error(exc)


@jobs_app.command("retry")
def retry_job(job_id: int) -> None:
    """Queue a failed or cancelled job again with fresh attempts."""
    _steer(job_id, "retry")


@jobs_app.command("cancel")
def cancel_job(job_id: int) -> None:
    """Cancel a job (a running one stops at its next checkpoint)."""
    _steer(job_id, "cancel")


@jobs_app.command("run-schedule")
def run_schedule(name: str) -> None:
    """Enqueue one run of the named schedule now."""
    from yuntu.jobs import (
        cron,
        runtime,  # noqa: F401  (registers the built-in schedules)
    )

    async def work(db: Any) -> dict[str, Any]:
        async with db.transaction() as session:
            job = await cron.run_now(session, name, datetime.now(UTC))
            return _job_json(job)

    try:
        typer.echo(json.dumps(_run(Settings(), work)))
    except Exception as exc:
        _app_error(exc)
