"""The `packages.process` job: run the configured steps over a version, in order.

The original is copied from storage into a private work directory (hashed on the way: the
`checksum` step compares those digests with what the upload recorded). Each step works on the
current artifact: the original at first, and the output of the last command step that produced
one. Every step's row records its status, duration, exit code and log as it ends, so the logs
of a run that is still going can be read.

A failing step ends the run: the version becomes `processing_failed`, the steps after it are
`skipped`, and the package's current version is untouched. A run that succeeds stores the final
artifact (when a step rewrote it) and, with auto-publish, makes the version current.

At-least-once: a retried job starts a new run (the steps of the interrupted one are marked
failed). On the last attempt an unexpected error still ends the run as failed, so no version
stays `processing` for ever."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import select, update

from yuntu.jobs.context import JobContext
from yuntu.jobs.registry import handler
from yuntu.kit.logging import get_logger
from yuntu.models.packages import Package, PackageStep, PackageVersion
from yuntu.packages import scanner, versions
from yuntu.packages.commands import CommandStep, run_command
from yuntu.packages.metadata import parse_package
from yuntu.packages.scanner import StepOutcome
from yuntu.packages.states import StepStatus, VersionStatus
from yuntu.settings import Settings
from yuntu.storage import blobs
from yuntu.storage.blobs import Hasher, StagedObject

log = get_logger("yuntu.packages")
_CHUNK = 1024 * 1024


@dataclass(slots=True)
class Work:
    """One run's state: the version's facts and the file the next step works on."""

    version_id: int
    package_name: str
    filename: str
    version_label: str
    md5: str
    sha256: str
    size: int
    original: Path
    current: Path
    workdir: Path


def _settings(ctx: JobContext) -> Settings:
    settings = ctx.db.settings
    assert settings is not None
    return settings  # type: ignore[no-any-return]


@handler(versions.PROCESS_KIND, timeout_seconds=3600, max_attempts=3)
async def process(ctx: JobContext) -> dict[str, Any]:
    settings = _settings(ctx)
    version_id = int(ctx.job.payload["version_id"])
    async with ctx.session() as session:
        version = await session.get(PackageVersion, version_id, with_for_update=True)
        if version is None or version.status not in (
            VersionStatus.UPLOADED,
            VersionStatus.PROCESSING,
        ):
            return {"skipped": "the version is gone or not waiting for processing"}
        await _close_interrupted(session, version)
        run = await versions.start_run(session, version)
        package_name = await session.scalar(
            select(Package.name).where(Package.id == version.package_id)
        )
        names = list(settings.packages_steps)
        for position, name in enumerate(names):
            session.add(
                PackageStep(
                    version_id=version.id,
                    run=run,
                    position=position,
                    name=name,
                    kind=name if name in ("checksum", "metadata", "clamav") else "command",
                    status=StepStatus.PENDING,
                )
            )
        facts = (version.filename, version.md5, version.sha256, version.size, version.blob_id)
    workdir = Path(tempfile.mkdtemp(prefix="yuntu-pkg-"))
    try:
        return await _run(ctx, settings, version_id, run, names, workdir, str(package_name), facts)
    except Exception as exc:
        if ctx.job.attempt < ctx.job.max_attempts:
            raise
        log.exception("package_processing_crashed", version_id=str(version_id))
        await _finish(ctx, settings, version_id, None, f"processing crashed: {type(exc).__name__}")
        return {"status": VersionStatus.PROCESSING_FAILED, "error": type(exc).__name__}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _close_interrupted(session: Any, version: PackageVersion) -> None:
    await session.execute(
        update(PackageStep)
        .where(
            PackageStep.version_id == version.id,
            PackageStep.status.in_([StepStatus.PENDING, StepStatus.RUNNING]),
        )
        .values(
            status=StepStatus.FAILED, log=PackageStep.log + "\n[interrupted: the run restarted]"
        )
        .execution_options(synchronize_session=False)
    )


async def _run(
    ctx: JobContext,
    settings: Settings,
    version_id: int,
    run: int,
    names: list[str],
    workdir: Path,
    package_name: str,
    facts: tuple[str, str, str, int, int],
) -> dict[str, Any]:
    filename, md5, sha256, size, blob_id = facts
    safe_name = Path(filename).name or "package"
    original = workdir / "in" / safe_name
    original.parent.mkdir(parents=True)
    downloaded = await _download(ctx, blob_id, original)
    work = Work(
        version_id=version_id,
        package_name=package_name,
        filename=safe_name,
        version_label=str(run),
        md5=md5,
        sha256=sha256,
        size=size,
        original=original,
        current=original,
        workdir=workdir,
    )
    error: str | None = None
    for position, name in enumerate(names):
        await ctx.checkpoint()
        await _mark(ctx, version_id, run, position, status=StepStatus.RUNNING)
        started = time.monotonic()
        outcome = await _step(settings, name, work, downloaded, position)
        status = StepStatus.SUCCEEDED if outcome.ok else StepStatus.FAILED
        if outcome.result.get("skipped"):
            status = StepStatus.SKIPPED
        await _mark(
            ctx,
            version_id,
            run,
            position,
            status=status,
            exit_code=outcome.exit_code,
            duration_ms=int((time.monotonic() - started) * 1000),
            log=outcome.log,
            result=outcome.result or None,
        )
        if not outcome.ok:
            error = f"step {name} failed"
            await _skip_rest(ctx, version_id, run, position)
            break
        if outcome.output is not None:
            work.current = outcome.output
        if name == "metadata" and outcome.result.get("recognised"):
            await _save_metadata(ctx, version_id, outcome.result)
    artifact = None
    if error is None and work.current != work.original:
        artifact = await _store_artifact(ctx, work.current)
    package, published = await _finish(ctx, settings, version_id, artifact, error)
    ended = VersionStatus.PROCESSING_FAILED if error else VersionStatus.PROCESSED
    await ctx.log("info" if error is None else "warning", f"version {version_id}: {ended}")
    return {"status": ended, "published": published, "error": error, "package": package}


async def _download(ctx: JobContext, blob_id: int, target: Path) -> Hasher:
    store = ctx.db.storage
    async with ctx.db.read_sessionmaker() as session:
        blob = await blobs.get_blob(session, blob_id)
        key = blob.storage_key
    hasher = Hasher()
    async with await anyio.open_file(target, "wb") as out:
        async for chunk in store.read(key):
            hasher.update(chunk)
            await out.write(chunk)
    return hasher


async def _step(
    settings: Settings, name: str, work: Work, downloaded: Hasher, position: int
) -> StepOutcome:
    if name == "checksum":
        return _checksum(work, downloaded)
    if name == "metadata":
        found = await asyncio.to_thread(parse_package, work.current, work.filename)
        if found is None:
            return StepOutcome(True, None, "not an APK or IPA: hashes only", result={})
        text = ", ".join(f"{k}={v}" for k, v in found.as_dict().items() if v is not None)
        return StepOutcome(True, None, text, result={"recognised": True, **found.as_dict()})
    if name == "clamav":
        return await _scan(settings, work.current)
    command = settings.packages_commands[name]
    step = CommandStep(name, command.template, command.timeout_seconds)
    step_dir = work.workdir / f"step-{position}-{name}"
    step_dir.mkdir()
    return await run_command(
        step,
        input_path=work.current,
        workdir=step_dir,
        filename=work.filename,
        package=work.package_name,
        version=work.version_label,
    )


def _checksum(work: Work, downloaded: Hasher) -> StepOutcome:
    got = (downloaded.md5.hexdigest(), downloaded.sha256.hexdigest(), downloaded.size)
    result = {"md5": got[0], "sha256": got[1], "size": got[2]}
    if got != (work.md5, work.sha256, work.size):
        return StepOutcome(
            False,
            None,
            f"stored bytes differ from the upload: md5 {got[0]}, sha256 {got[1]}, {got[2]} "
            f"bytes; expected md5 {work.md5}, sha256 {work.sha256}, {work.size} bytes",
            result=result,
        )
    return StepOutcome(True, None, f"md5 {got[0]}\nsha256 {got[1]}\nsize {got[2]}", result=result)


async def _scan(settings: Settings, path: Path) -> StepOutcome:
    timeout = settings.packages_scan_timeout_seconds
    if settings.packages_clamd_address:
        return await scanner.clamd_scan(
            path, address=settings.packages_clamd_address, timeout=timeout
        )
    if not scanner.clamav_available(settings.packages_clamscan_path):
        message = f"ClamAV is not installed ({settings.packages_clamscan_path} not found)"
        if settings.packages_clamav_required:
            return StepOutcome(False, None, message)
        return StepOutcome(True, None, message + ": scan skipped", result={"skipped": True})
    return await scanner.clamscan(
        path,
        executable=settings.packages_clamscan_path,
        database=settings.packages_clamav_database,
        timeout=timeout,
        options=settings.packages_clamscan_options,
    )


async def _store_artifact(ctx: JobContext, path: Path) -> StagedObject:
    async def chunks() -> Any:
        async with await anyio.open_file(path, "rb") as source:
            while chunk := await source.read(_CHUNK):
                yield chunk

    return await blobs.ingest(ctx.db.storage, chunks())


async def _mark(ctx: JobContext, version_id: int, run: int, position: int, **values: Any) -> None:
    now = datetime.now(UTC)
    if values["status"] == StepStatus.RUNNING:
        values["started_at"] = now
    else:
        values["finished_at"] = now
    async with ctx.session() as session:
        await session.execute(
            update(PackageStep)
            .where(
                PackageStep.version_id == version_id,
                PackageStep.run == run,
                PackageStep.position == position,
            )
            .values(**values)
            .execution_options(synchronize_session=False)
        )


async def _skip_rest(ctx: JobContext, version_id: int, run: int, position: int) -> None:
    async with ctx.session() as session:
        await session.execute(
            update(PackageStep)
            .where(
                PackageStep.version_id == version_id,
                PackageStep.run == run,
                PackageStep.position > position,
            )
            .values(status=StepStatus.SKIPPED)
            .execution_options(synchronize_session=False)
        )


async def _save_metadata(ctx: JobContext, version_id: int, found: dict[str, Any]) -> None:
    async with ctx.session() as session:
        await session.execute(
            update(PackageVersion)
            .where(PackageVersion.id == version_id)
            .values(
                app_id=(found.get("app_id") or None) and str(found["app_id"])[:255],
                version_name=(found.get("version_name") or None)
                and str(found["version_name"])[:100],
                version_code=(found.get("version_code") or None)
                and str(found["version_code"])[:100],
                app_metadata={k: v for k, v in found.items() if k != "recognised"},
            )
            .execution_options(synchronize_session=False)
        )


async def _finish(
    ctx: JobContext,
    settings: Settings,
    version_id: int,
    artifact: StagedObject | None,
    error: str | None,
) -> tuple[str | None, bool]:
    adopted: str | None = None
    try:
        async with ctx.session() as session:
            version = await session.get(PackageVersion, version_id, with_for_update=True)
            if version is None or version.status != VersionStatus.PROCESSING:
                if artifact is not None:
                    await blobs.discard(ctx.db.storage, artifact.key)
                return None, False
            package, published, adopted = await versions.finish_run(
                session, settings, version, artifact=artifact, error=error
            )
            name = package.name
    except BaseException:
        if artifact is not None:
            await blobs.undo_staged(ctx.db, artifact, adopted)
        raise
    return name, published
