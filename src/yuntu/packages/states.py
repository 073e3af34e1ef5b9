"""The package version state machine and the derived package status.

    uploaded ──> processing ──> processed
                     │  ▲
                     ▼  │ (reprocess)
              processing_failed

`processing -> processing` is a retried job after a crash (the run starts again). A processed
version is final: it is immutable, and may be what the links serve. To process the same bytes
with new steps, upload them again (the content is stored once)."""

from __future__ import annotations

from enum import StrEnum

from yuntu.kit.errors import AppError, E


class VersionStatus(StrEnum):
    UPLOADED = "uploaded"
    PROCESSING = "processing"
    PROCESSED = "processed"
    PROCESSING_FAILED = "processing_failed"


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class PackageStatus(StrEnum):
    NO_VERSION = "no_version"  # nothing uploaded yet
    PROCESSING = "processing"  # nothing published yet, a version is being processed
    PROCESSING_FAILED = "processing_failed"  # nothing published, the newest version failed
    AVAILABLE = "available"  # the permanent links serve the current version
    DISABLED = "disabled"  # an administrator turned the links off


V = VersionStatus
TRANSITIONS: dict[VersionStatus, frozenset[VersionStatus]] = {
    V.UPLOADED: frozenset({V.PROCESSING}),
    V.PROCESSING: frozenset({V.PROCESSING, V.PROCESSED, V.PROCESSING_FAILED}),
    V.PROCESSED: frozenset(),
    V.PROCESSING_FAILED: frozenset({V.PROCESSING}),
}


def can_move(old: str, new: str) -> bool:
    return VersionStatus(new) in TRANSITIONS.get(VersionStatus(old), frozenset())


def check_move(old: str, new: str) -> None:
    if not can_move(old, new):
        raise AppError(
            E.INVALID_STATE,
            message=f"a {old} version cannot become {new}",
            details={"from": old, "to": new},
        )


def package_status(
    *, disabled: bool, has_current: bool, newest_version_status: str | None
) -> PackageStatus:
    if disabled:
        return PackageStatus.DISABLED
    if has_current:
        return PackageStatus.AVAILABLE
    if newest_version_status is None:
        return PackageStatus.NO_VERSION
    if newest_version_status == V.PROCESSING_FAILED:
        return PackageStatus.PROCESSING_FAILED
    return PackageStatus.PROCESSING
