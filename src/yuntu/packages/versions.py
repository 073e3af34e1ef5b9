"""Package versions: upload (streamed to storage before any transaction), publish, rollback,
reprocess, and what the processing job records at its end.

`packages.current_version_id` only ever points at a processed version of the same package:
publishing checks it under the package's row lock, and nothing else moves it except deleting
the package."""

from __future__ import annotations

from collections.abc import AsyncIterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.jobs import service as jobs
from yuntu.kit.db import Database
from yuntu.kit.errors import AppError, E
from yuntu.models.packages import Package, PackageStep, PackageVersion
from yuntu.packages import service
from yuntu.packages.service import Actor
from yuntu.packages.states import VersionStatus as V
from yuntu.packages.states import check_move
from yuntu.settings import Settings
from yuntu.storage import blobs
from yuntu.storage.blobs import StagedObject

PROCESS_KIND = "packages.process"
MAX_NOTES = 10_000


def processing_timeout(settings: Settings) -> int:
    """How long one processing run may take: every step's own limit, plus transfer time."""
    total = 600 + settings.packages_scan_timeout_seconds
    total += sum(c.timeout_seconds for c in settings.packages_commands.values())
    return total


async def enqueue_processing(
    session: AsyncSession, settings: Settings, version: PackageVersion
) -> None:
    # No unique key: the version's own state (moved under its row lock) already refuses a
    # second start, and the previous run's job may still be writing its outcome.
    job = await jobs.enqueue(
        session,
        PROCESS_KIND,
        {"version_id": str(version.id)},
        timeout_seconds=processing_timeout(settings),
    )
    version.job_id = job.id


def version_snapshot(version: PackageVersion) -> dict[str, Any]:
    return {
        "version_id": str(version.id),
        "seq": version.seq,
        "filename": version.filename,
        "size": version.size,
        "sha256": version.sha256,
        "status": version.status,
    }


async def upload(
    db: Database,
    settings: Settings,
    actor: Actor,
    package_id: int,
    chunks: AsyncIterable[bytes],
    *,
    read_form: Any,
) -> PackageVersion:
    """Stream the body into storage, then record the version in one short transaction and
    start its processing. `read_form()` returns (filename, release notes) once the body has
    been read (multipart fields may come after the file). Any failure leaves nothing."""
    async with db.read_sessionmaker() as session:
        await service.get(session, package_id)  # 404 before a byte is stored
    store = db.storage
    if store is None:
        raise AppError(E.FEATURE_NOT_CONFIGURED, message="blob storage is not configured")
    staged = await blobs.ingest(store, chunks, max_bytes=settings.packages_max_upload_bytes)
    adopted: str | None = None
    try:
        filename, notes = read_form()
        async with db.transaction() as session:
            package = await service.get(session, package_id, lock=True)
            blob = await blobs.adopt_staged(session, staged)
            adopted = blob.storage_key
            version = await _add_version(session, package, staged, blob.id, filename, notes, actor)
            await enqueue_processing(session, settings, version)
            await service.refresh_status(session, package)
            await service.record(
                session,
                actor,
                "package.version_upload",
                package.id,
                after=version_snapshot(version),
            )
    except BaseException:
        await blobs.undo_staged(db, staged, adopted)
        raise
    return version


async def _add_version(
    session: AsyncSession,
    package: Package,
    staged: StagedObject,
    blob_id: int,
    filename: str,
    notes: str,
    actor: Actor,
) -> PackageVersion:
    package.version_count += 1
    if not package.download_name:
        package.download_name = filename  # the permanent link's name, fixed from now on
    package.updated_at = datetime.now(UTC)
    version = PackageVersion(
        package_id=package.id,
        seq=package.version_count,
        blob_id=blob_id,
        filename=filename,
        size=staged.size,
        md5=staged.md5,
        sha256=staged.sha256,
        release_notes=notes,
        uploaded_by=actor.user_id,
        uploaded_by_key=actor.api_key_id,
        status=V.UPLOADED,
    )
    session.add(version)
    await session.flush()
    return version


async def get(
    session: AsyncSession, package_id: int, version_id: int, *, lock: bool = False
) -> PackageVersion:
    stmt = select(PackageVersion).where(
        PackageVersion.id == version_id, PackageVersion.package_id == package_id
    )
    if lock:
        stmt = stmt.with_for_update()
    version = await session.scalar(stmt)
    if version is None:
        raise AppError(E.NOT_FOUND)
    return version


def list_statement(package_id: int) -> Any:
    return (
        select(PackageVersion)
        .where(PackageVersion.package_id == package_id)
        .order_by(PackageVersion.seq.desc())
    )


async def steps(
    session: AsyncSession, version: PackageVersion, run: int | None
) -> list[PackageStep]:
    """The steps of one run (default: the latest)."""
    wanted = version.runs if run is None else run
    rows = await session.scalars(
        select(PackageStep)
        .where(PackageStep.version_id == version.id, PackageStep.run == wanted)
        .order_by(PackageStep.position)
    )
    return list(rows.all())


async def _make_current(
    session: AsyncSession,
    actor: Actor,
    package: Package,
    version: PackageVersion,
    action: str,
) -> None:
    if version.status != V.PROCESSED or version.artifact_blob_id is None:
        raise AppError(E.VERSION_NOT_PROCESSED)
    before = service.snapshot(package)["current_version_id"]
    package.current_version_id = version.id
    package.published_at = package.updated_at = datetime.now(UTC)
    await service.refresh_status(session, package)
    await service.record(
        session,
        actor,
        action,
        package.id,
        before={"current_version_id": before},
        after={"current_version_id": str(version.id), "seq": version.seq},
    )


async def publish(session: AsyncSession, actor: Actor, package_id: int, version_id: int) -> Package:
    package = await service.get(session, package_id, lock=True)
    version = await get(session, package.id, version_id)
    await _make_current(session, actor, package, version, "package.publish")
    return package


async def rollback(
    session: AsyncSession, actor: Actor, package_id: int, version_id: int | None
) -> Package:
    """Point the links at an earlier processed version: `version_id`, or the newest processed
    one older than the current."""
    package = await service.get(session, package_id, lock=True)
    if version_id is not None:
        version = await get(session, package.id, version_id)
    else:
        current_seq = None
        if package.current_version_id is not None:
            current_seq = await session.scalar(
                select(PackageVersion.seq).where(PackageVersion.id == package.current_version_id)
            )
        stmt = select(PackageVersion).where(
            PackageVersion.package_id == package.id, PackageVersion.status == V.PROCESSED
        )
        if current_seq is not None:
            stmt = stmt.where(PackageVersion.seq < current_seq)
        found = await session.scalar(stmt.order_by(PackageVersion.seq.desc()).limit(1))
        if found is None:
            raise AppError(E.INVALID_STATE, message="no earlier processed version to roll back to")
        version = found
    if version.id == package.current_version_id:
        raise AppError(E.INVALID_STATE, message="this version is already current")
    await _make_current(session, actor, package, version, "package.rollback")
    return package


async def reprocess(
    session: AsyncSession, settings: Settings, actor: Actor, package_id: int, version_id: int
) -> PackageVersion:
    """Run the processing steps again on a version whose processing failed (after fixing a
    tool, or a false positive in a signature update)."""
    package = await service.get(session, package_id, lock=True)
    version = await get(session, package.id, version_id, lock=True)
    if version.status != V.PROCESSING_FAILED:
        raise AppError(E.INVALID_STATE, message="only a version whose processing failed")
    check_move(version.status, V.PROCESSING)
    version.status = V.PROCESSING  # queued: the job starts a new run
    version.error = None
    await enqueue_processing(session, settings, version)
    await service.refresh_status(session, package)
    await service.record(
        session, actor, "package.reprocess", package.id, after=version_snapshot(version)
    )
    return version


# -- what the processing job records -------------------------------------------------------------
async def start_run(session: AsyncSession, version: PackageVersion) -> int:
    check_move(version.status, V.PROCESSING)
    version.status = V.PROCESSING
    version.runs += 1
    version.error = None
    package = await service.get(session, version.package_id, lock=True)
    await service.refresh_status(session, package)
    return version.runs


async def finish_run(
    session: AsyncSession,
    settings: Settings,
    version: PackageVersion,
    *,
    artifact: StagedObject | None,
    error: str | None,
) -> tuple[Package, bool, str | None]:
    """Record how processing ended. Returns (package, published, adopted storage key)."""
    package = await service.get(session, version.package_id, lock=True)
    adopted: str | None = None
    published = False
    if error is not None:
        check_move(version.status, V.PROCESSING_FAILED)
        version.status = V.PROCESSING_FAILED
        version.error = error[:2000]
    else:
        check_move(version.status, V.PROCESSED)
        if artifact is None:
            await blobs.add_ref(session, version.blob_id)
            version.artifact_blob_id = version.blob_id
            version.artifact_size, version.artifact_md5 = version.size, version.md5
            version.artifact_sha256 = version.sha256
        else:
            blob = await blobs.adopt_staged(session, artifact)
            adopted = blob.storage_key
            version.artifact_blob_id = blob.id
            version.artifact_size, version.artifact_md5 = artifact.size, artifact.md5
            version.artifact_sha256 = artifact.sha256
        version.status = V.PROCESSED
        version.processed_at = datetime.now(UTC)
        await session.flush()
        if settings.packages_auto_publish and await _newer_than_current(session, package, version):
            uploader = Actor(version.uploaded_by, version.uploaded_by_key, None)
            await _make_current(session, uploader, package, version, "package.auto_publish")
            published = True
    await service.refresh_status(session, package)
    return package, published, adopted


async def _newer_than_current(
    session: AsyncSession, package: Package, version: PackageVersion
) -> bool:
    """Auto-publish never replaces a newer upload that finished first."""
    if package.current_version_id is None:
        return True
    current_seq = await session.scalar(
        select(PackageVersion.seq).where(PackageVersion.id == package.current_version_id)
    )
    return current_seq is None or version.seq > current_seq
