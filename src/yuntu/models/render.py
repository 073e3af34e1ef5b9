"""Render farm tables: render tasks, their frame tasks (one per chunk), render agents and their
per-task blocklist, log lines and outputs.

Accounting rules:
- a task's per-state frame counters (`frames_waiting` ...) equal the number of its frame tasks
  in each state; only `yuntu.render.frame_states` changes them, in the same transaction as the
  frame's status (conditional update on the old status);
- `scene_blob_id` holds one blob reference while the task row exists, and every render output's
  `blob_id` holds one (counted by `yuntu drive fsck`), so the scene a task renders and the frames
  it rendered are never garbage-collected under it, whatever happens to the drive files.

Money columns (`budget`, `estimate`, `cost`) are integer fen."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from yuntu.kit.db import Base, IdMixin, TimestampMixin, UTCDateTime, utcnow


class PausedReason(StrEnum):
    USER = "user"
    BUDGET = "budget"  # the budget cap was reached: no new frame is dispatched
    BALANCE = "balance"  # the balance could not pay a frame: no new frame is dispatched


class AgentStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # an administrator stopped dispatch to it; the token still works
    REVOKED = "revoked"  # its token no longer authenticates


class RenderTask(IdMixin, TimestampMixin, Base):
    __tablename__ = "render_tasks"
    __table_args__ = (
        CheckConstraint("priority >= 0 AND priority <= 100", name="priority_range"),
        CheckConstraint("chunk_size >= 1", name="chunk_size_positive"),
        CheckConstraint(
            "frames_waiting >= 0 AND frames_running >= 0 AND frames_succeeded >= 0"
            " AND frames_failed >= 0 AND frames_cancelled >= 0",
            name="counters_positive",
        ),
        Index("ix_render_tasks_user_status", "user_id", "status", "created_at"),
        # dispatch scans queued and rendering tasks by priority
        Index("ix_render_tasks_dispatch", "status", "priority", "created_at"),
    )

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
    )
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    scene_file_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("files.id", ondelete="SET NULL"), index=True
    )
    scene_blob_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("blobs.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    scene_name: Mapped[str] = mapped_column(String(255), nullable=False)
    software: Mapped[str] = mapped_column(String(32), nullable=False)
    software_version: Mapped[str | None] = mapped_column(String(32))
    renderer: Mapped[str] = mapped_column(String(32), nullable=False)
    frame_spec: Mapped[str] = mapped_column(Text, nullable=False)  # normalized (frames.normalize)
    frame_count: Mapped[int] = mapped_column(Integer, nullable=False)
    resolution_x: Mapped[int] = mapped_column(Integer, nullable=False)
    resolution_y: Mapped[int] = mapped_column(Integer, nullable=False)
    camera: Mapped[str | None] = mapped_column(String(255))
    output_format: Mapped[str] = mapped_column(String(16), nullable=False, default="PNG")
    priority: Mapped[int] = mapped_column(SmallInteger, nullable=False, default=50)
    chunk_size: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    max_retries: Mapped[int] = mapped_column(Integer, nullable=False, default=3)
    budget: Mapped[int | None] = mapped_column(BigInteger)
    drive_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("drives.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    output_folder_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("folders.id", ondelete="SET NULL")
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="draft")
    paused_reason: Mapped[str | None] = mapped_column(String(16))
    estimate: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    cost: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # the part of `cost` already charged to the bill, and the frame tasks it covers
    billed: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default=text("0")
    )
    billed_frame_tasks: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default=text("0")
    )
    hold_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_holds.id", ondelete="RESTRICT")
    )
    bill_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("bills.id", ondelete="RESTRICT")
    )
    frames_waiting: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    frames_running: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    frames_succeeded: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    frames_failed: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    frames_cancelled: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error: Mapped[str | None] = mapped_column(Text)


class FrameTask(IdMixin, Base):
    """One chunk of a render task: the unit an agent claims, renders and is paid for."""

    __tablename__ = "render_frames"
    __table_args__ = (
        UniqueConstraint("task_id", "seq", name="uq_render_frames_task_seq"),
        # claiming: a task's waiting frames in order
        Index("ix_render_frames_claim", "status", "task_id", "seq"),
        # the lease sweep: running frames whose lease expired
        Index("ix_render_frames_lease", "status", "lease_expires_at"),
        Index("ix_render_frames_agent", "agent_id", "status"),
    )

    task_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("render_tasks.id", ondelete="CASCADE"), nullable=False
    )
    seq: Mapped[int] = mapped_column(Integer, nullable=False)  # chunk order within the task
    frames: Mapped[list[int]] = mapped_column(JSON, nullable=False)
    frame_start: Mapped[int] = mapped_column(Integer, nullable=False)
    frame_end: Mapped[int] = mapped_column(Integer, nullable=False)
    frame_count: Mapped[int] = mapped_column(Integer, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="waiting")
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    agent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("render_agents.id", ondelete="SET NULL")
    )
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    exit_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(BigInteger)
    core_seconds: Mapped[float | None] = mapped_column(Float)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    cost: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    # agents this frame failed on (its own fault, not the agent's), for the 3-agent rule
    failed_agent_ids: Mapped[list[int]] = mapped_column(JSON, nullable=False, default=list)
    last_error: Mapped[str | None] = mapped_column(Text)


class RenderAgent(IdMixin, TimestampMixin, Base):
    __tablename__ = "render_agents"

    name: Mapped[str] = mapped_column(String(128), nullable=False)
    # SHA-256 of the token, as API keys store theirs: 256 random bits need no salt
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    token_prefix: Mapped[str] = mapped_column(String(24), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=AgentStatus.ACTIVE)
    renderers: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    slots: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    hostname: Mapped[str | None] = mapped_column(String(255))
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="SET NULL")
    )


class AgentTaskBlock(IdMixin, Base):
    """Frames of one task that failed on one agent; at the threshold the agent is blocklisted
    for the task (it claims none of its frames)."""

    __tablename__ = "render_agent_blocks"
    __table_args__ = (UniqueConstraint("task_id", "agent_id", name="uq_render_agent_blocks"),)

    task_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("render_tasks.id", ondelete="CASCADE"), nullable=False
    )
    agent_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("render_agents.id", ondelete="CASCADE"), nullable=False, index=True
    )
    failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class RenderLog(IdMixin, Base):
    __tablename__ = "render_logs"
    __table_args__ = (Index("ix_render_logs_task_frame", "task_id", "frame_id", "id"),)

    task_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("render_tasks.id", ondelete="CASCADE"), nullable=False
    )
    frame_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("render_frames.id", ondelete="CASCADE")
    )
    agent_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("render_agents.id", ondelete="SET NULL")
    )
    attempt: Mapped[int | None] = mapped_column(Integer)
    level: Mapped[str] = mapped_column(String(8), nullable=False, default="info")
    line: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class RenderOutput(IdMixin, Base):
    __tablename__ = "render_outputs"
    __table_args__ = (
        UniqueConstraint("task_id", "filename", name="uq_render_outputs_task_filename"),
        Index("ix_render_outputs_frame", "frame_id"),
    )

    task_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("render_tasks.id", ondelete="CASCADE"), nullable=False
    )
    frame_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("render_frames.id", ondelete="SET NULL")
    )
    frame: Mapped[int | None] = mapped_column(Integer)
    drive_file_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("files.id", ondelete="SET NULL"), index=True
    )
    blob_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("blobs.id", ondelete="RESTRICT"), nullable=False, index=True
    )
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
