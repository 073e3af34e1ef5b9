"""Job shapes for the admin and owner APIs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from yuntu.kit.schemas import Id, Schema, UtcDatetime

Status = Literal["queued", "running", "paused", "succeeded", "failed", "cancelled"]


class JobOut(Schema):
    id: Id
    kind: str = Field(examples=["render.frame"])
    queue: str = Field(examples=["default"])
    status: Status
    priority: int = Field(examples=[0])
    payload: dict[str, Any] = Field(examples=[{"frame": 12}])
    run_at: UtcDatetime
    attempts: int = Field(examples=[1])
    max_attempts: int = Field(examples=[5])
    timeout_seconds: int = Field(examples=[300])
    progress: int = Field(examples=[40])
    progress_message: str | None = Field(examples=["frame 4 of 10"])
    result: dict[str, Any] | None = None
    last_error: str | None = None
    unique_key: str | None = None
    owner_user_id: Id | None = None
    group_id: Id | None = None
    parent_id: Id | None = None
    worker_id: str | None = None
    lease_expires_at: UtcDatetime | None = None
    cancel_requested: bool
    pause_requested: bool
    created_at: UtcDatetime
    updated_at: UtcDatetime
    started_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None


class JobLogOut(Schema):
    id: Id
    attempt: int = Field(examples=[1])
    level: Literal["debug", "info", "warning", "error"]
    message: str = Field(examples=["frame 4 rendered in 12.3 s"])
    created_at: UtcDatetime
