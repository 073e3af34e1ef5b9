"""Request and response shapes of the upload-task endpoints (manifest, listings, progress,
export) and of the instant-upload check."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from yuntu.drive.paths import Conflict
from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import line
from yuntu.uploads.states import FileStatus, TaskStatus

MAX_MANIFEST_ENTRIES = 100_000  # hard schema bound; settings.upload_max_manifest_files applies
MAX_DECLARED_SIZE = 2**50  # 1 PiB: a declared size beyond this is not a file
MAX_CLIENT_INFO_BYTES = 8192

Md5 = Annotated[
    str,
    Field(pattern=r"^[0-9a-fA-F]{32}$", examples=["9e107d9d372bb6826bd81d3542a419d6"]),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 has no UTC form
        raise ValueError("time out of range") from exc


class ManifestFile(StrictModel):
    path: str = Field(
        min_length=1,
        max_length=8192,
        description="Path relative to the target folder, file name included",
        examples=["shots/a/b.png"],
    )
    size: int = Field(ge=0, le=MAX_DECLARED_SIZE, examples=[1048576])
    md5: Md5
    mtime: datetime | None = Field(
        default=None, description="Client modified time (RFC 3339)", examples=[None]
    )
    mime_type: Annotated[str, line(128, 1)] | None = Field(default=None, examples=["image/png"])

    @field_validator("md5")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()

    @field_validator("mtime")
    @classmethod
    def _as_utc(cls, value: datetime | None) -> datetime | None:
        return _utc(value)  # a time without offset is read as UTC


class TaskCreate(StrictModel):
    name: Annotated[str, line(255, 1)] | None = Field(
        default=None,
        description="Display name (default: the first folder or file name of the manifest)",
        examples=["镜头素材 第3批"],
    )
    drive_id: Id | None = Field(default=None, description="Target drive (default: your default)")
    folder_id: Id | None = Field(
        default=None, description="Target folder in the drive (default: the root)"
    )
    target_path: str | None = Field(
        default=None,
        max_length=8192,
        description="Folder path below `folder_id`, created when missing",
        examples=["/projects/2026"],
    )
    conflict: Conflict = Field(
        default=Conflict.RENAME,
        description="When a name is taken: error (the file fails), rename (`a (1).png`), "
        "overwrite (a new version)",
    )
    client_info: dict[str, Any] = Field(
        default_factory=dict,
        description=f"Free-form client details (at most {MAX_CLIENT_INFO_BYTES} bytes of JSON)",
        examples=[{"app": "yuntu-desktop", "version": "2.3.1", "os": "windows"}],
    )
    files: list[ManifestFile] = Field(min_length=1, max_length=MAX_MANIFEST_ENTRIES)

    @field_validator("client_info")
    @classmethod
    def _small_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            text = json.dumps(value, allow_nan=False, ensure_ascii=False)
        except ValueError as exc:
            raise ValueError("client_info must be plain JSON") from exc
        if len(text.encode()) > MAX_CLIENT_INFO_BYTES:
            raise ValueError(f"client_info is larger than {MAX_CLIENT_INFO_BYTES} bytes")
        if "\x00" in text or "\\u0000" in text:
            raise ValueError("client_info must not contain NUL characters")
        return value


class TaskOut(Schema):
    id: Id
    name: str = Field(examples=["镜头素材 第3批"])
    drive_id: Id
    folder_id: Id
    status: TaskStatus
    conflict: Conflict
    total_files: int = Field(examples=[1200])
    total_bytes: int = Field(examples=[52428800])
    completed_files: int = Field(examples=[300])
    instant_files: int = Field(examples=[20])
    failed_files: int = Field(examples=[1])
    cancelled_files: int = Field(examples=[0])
    done_bytes: int = Field(examples=[10485760])
    saved_bytes: int = Field(
        examples=[1048576], description="Bytes not sent thanks to instant upload"
    )
    reserved_bytes: int = Field(examples=[41943040])
    client_info: dict[str, Any] = Field(examples=[{"app": "yuntu-desktop"}])
    created_at: UtcDatetime
    updated_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None


class TaskDetail(TaskOut):
    pending_files: int = Field(examples=[879])
    uploading_files: int = Field(examples=[0])
    remaining_files: int = Field(description="Pending plus uploading", examples=[879])
    remaining_bytes: int = Field(examples=[41943040])
    percent_files: float = Field(examples=[26.67])
    percent_bytes: float = Field(examples=[20.0])


class CreatedFile(BaseModel):
    id: Id = Field(description="The task-file id (used by check, upload, retry)")
    position: int = Field(examples=[0])
    path: str = Field(examples=["shots/a/b.png"])
    status: FileStatus


class TaskCreated(TaskOut):
    files: list[CreatedFile]


class TaskFileOut(Schema):
    id: Id
    position: int = Field(examples=[0])
    path: str = Field(examples=["shots/a/b.png"])
    name: str = Field(examples=["b.png"])
    folder_id: Id
    size: int = Field(examples=[1048576])
    md5: str = Field(examples=["9e107d9d372bb6826bd81d3542a419d6"])
    sha256: str | None = Field(default=None, examples=[None])
    mime_type: str | None = Field(default=None, examples=["image/png"])
    status: FileStatus
    attempts: int = Field(examples=[1])
    can_retry: bool = Field(description="Failed with attempts left")
    bytes_received: int = Field(examples=[0])
    file_id: Id | None = Field(default=None, description="The drive file it became")
    error: str | None = Field(default=None, examples=[None])
    started_at: UtcDatetime | None = None
    completed_at: UtcDatetime | None = None
    updated_at: UtcDatetime


class StatusCounts(BaseModel):
    pending: int = 0
    uploading: int = 0
    completed: int = 0
    instant: int = 0
    failed: int = 0
    cancelled: int = 0


class ProgressOut(BaseModel):
    task_id: Id
    status: TaskStatus
    total_files: int = Field(examples=[1200])
    done_files: int = Field(description="Completed plus instant", examples=[320])
    total_bytes: int = Field(examples=[52428800])
    done_bytes: int = Field(examples=[10485760])
    saved_bytes: int = Field(examples=[1048576])
    transferred_bytes: int = Field(
        description="Bytes actually received (instant uploads excluded)", examples=[9437184]
    )
    remaining_bytes: int = Field(examples=[41943040])
    percent: float = Field(description="Done bytes over total bytes", examples=[20.0])
    rate_bytes_per_second: float | None = Field(
        description="Received bytes per second since the task started", examples=[524288.0]
    )
    eta_seconds: float | None = Field(
        description="Remaining bytes over the rate; null when unknown", examples=[80.0]
    )
    elapsed_seconds: float | None = Field(examples=[18.0])
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None
    counts: StatusCounts


class TaskDeleted(BaseModel):
    id: Id
    deleted: Literal[True] = True
    cancelled_files: int = Field(description="Files cancelled by this deletion", examples=[0])


class ExportSummary(BaseModel):
    total_files: int
    completed_files: int
    instant_files: int
    failed_files: int
    cancelled_files: int
    total_bytes: int
    saved_bytes: int


class ExportFile(BaseModel):
    path: str = Field(examples=["shots/a/b.png"])
    task_file_id: Id
    file_id: Id | None = None
    size: int
    md5: str
    sha256: str | None = None
    storage_key: str | None = Field(
        default=None, description="Where the drive file's current version is stored"
    )
    status: FileStatus


class ExportManifest(BaseModel):
    task_id: Id
    summary: ExportSummary
    files: list[ExportFile]


# -- instant upload ----------------------------------------------------------------------------
class Proof(StrictModel):
    token: str = Field(min_length=1, max_length=4096, description="The challenge token")
    digest: str = Field(
        min_length=1,
        max_length=128,
        description="hex SHA-256(nonce bytes + the bytes of each range, in order)",
    )


class CheckEntry(StrictModel):
    file_id: Id = Field(description="A task-file id of this task")
    proof: Proof | None = None


class CheckIn(StrictModel):
    files: list[CheckEntry] = Field(min_length=1, max_length=MAX_MANIFEST_ENTRIES)


class Challenge(BaseModel):
    token: str
    nonce: str = Field(description="hex", examples=["5f1c0e0d3a9b4e7c8d2f6a1b0c9e8d7f"])
    ranges: list[tuple[int, int]] = Field(
        description="[offset, length] pairs", examples=[[[0, 4096], [81920, 4096]]]
    )
    expires_at: UtcDatetime


class CheckResult(BaseModel):
    file_id: Id
    result: Literal["challenge", "instant", "upload"]
    status: FileStatus = Field(description="The task file's status after this call")
    challenge: Challenge | None = None


class CheckOut(BaseModel):
    files: list[CheckResult]
    bytes_saved: int = Field(description="Bytes this call did not need", examples=[1048576])
    saved_bytes: int = Field(description="The task's saved bytes so far", examples=[1048576])
    task_status: TaskStatus
