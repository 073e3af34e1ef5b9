"""Package distribution request and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import text

Platform = Literal["android", "ios", "windows", "mac", "linux", "other"]
PackageName = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
DownloadName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=255, pattern=r"^[^/\\\x00-\x1f\x7f]+$"),
]
Description = Annotated[str, text(5000)]


class PackageCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "demo-android", "platform": "android", "description": "Demo"}]
        },
    )
    name: PackageName
    platform: Platform
    description: Description = ""
    download_name: DownloadName | None = Field(
        default=None,
        description="The permanent link's file name (default: the first upload's file name)",
        examples=["release.apk"],
    )


class PackageUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PackageName | None = None
    platform: Platform | None = None
    description: Description | None = None
    download_name: DownloadName | None = None
    disabled: bool | None = Field(
        default=None, description="true: the permanent links answer 404 until enabled again"
    )


class PackageOut(Schema):
    id: Id
    name: str
    platform: str
    description: str
    download_name: str
    status: Literal["no_version", "processing", "processing_failed", "available", "disabled"]
    disabled: bool
    current_version_id: Id | None
    version_count: int
    download_url: str = Field(description="The permanent link (never changes)")
    created_by: Id | None
    created_at: UtcDatetime
    updated_at: UtcDatetime
    published_at: UtcDatetime | None


class VersionOut(Schema):
    id: Id
    package_id: Id
    seq: int = Field(description="1 for the first upload of the package, then 2, 3 ...")
    filename: str
    size: int
    md5: str
    sha256: str
    release_notes: str
    uploaded_by: Id | None
    uploaded_by_key: Id | None
    status: Literal["uploaded", "processing", "processed", "processing_failed"]
    is_current: bool = False
    app_id: str | None
    version_name: str | None
    version_code: str | None
    app_metadata: dict[str, Any] | None
    artifact_size: int | None
    artifact_md5: str | None
    artifact_sha256: str | None
    job_id: Id | None
    runs: int
    error: str | None
    created_at: UtcDatetime
    processed_at: UtcDatetime | None


class StepOut(Schema):
    run: int
    position: int
    name: str
    kind: Literal["checksum", "metadata", "clamav", "command"]
    status: Literal["pending", "running", "succeeded", "failed", "skipped"]
    exit_code: int | None
    duration_ms: int | None
    log: str
    result: dict[str, Any] | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class VersionDetail(VersionOut):
    steps: list[StepOut] = Field(description="The steps of the latest processing run")


class PublishIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version_id: Id


class RollbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version_id: Id | None = Field(
        default=None, description="Default: the newest processed version older than the current"
    )


class QueryResult(Schema):
    package_id: Id
    name: str
    status: str = Field(
        description="available, processing, processing_failed, no_version or disabled"
    )
    version: str | None = Field(description="versionName / CFBundleShortVersionString, or seq")
    version_code: str | None
    download_url: str | None = Field(description="The permanent link; null unless available")
    md5: str | None
    sha256: str | None
    size: int | None
    updated_at: UtcDatetime
