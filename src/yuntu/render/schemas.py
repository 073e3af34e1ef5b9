"""Request and response shapes of the render task endpoints (/tasks ...)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import line
from yuntu.ledger.money import Yuan, YuanAmount
from yuntu.render.contract import MAX_DIMENSION, OutputFormat, check_camera_name
from yuntu.render.frames import MAX_CHUNK_SIZE, describe
from yuntu.render.service import TaskSpec
from yuntu.render.states import FrameStatus, TaskStatus

Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,31}$")]


class TaskIn(BaseModel):
    """A render task. `frames` is a spec such as `1-100`, `1-100x2` or `1,5,10-20`; the
    original client's `start_frame`/`end_frame`/`frame_step`, `task_name`, `scene_file` and
    `maya_version` are accepted too."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "shot-010",
                    "scene_file_id": "7262149437321216",
                    "software": "blender",
                    "renderer": "cycles",
                    "frames": "1-6",
                    "width": 640,
                    "height": 360,
                    "chunk_size": 2,
                    "budget": "5.00",
                }
            ]
        },
    )
    name: Annotated[str, line(200)] = Field(default="", description="Task name")
    scene_file_id: Id | None = Field(
        default=None, description="A drive file (for example one sent with POST /files/upload)"
    )
    software: Name = Field(default="blender", description="blender, maya, ...")
    software_version: Annotated[str, line(32)] | None = None
    renderer: Name = Field(default="cycles", description="cycles, eevee, arnold, vray, ...")
    frames: Annotated[str, Field(max_length=100_000)] | None = None
    width: int = Field(default=1920, ge=1, le=MAX_DIMENSION)
    height: int = Field(default=1080, ge=1, le=MAX_DIMENSION)
    camera: Annotated[str, Field(max_length=255)] | None = None
    output_format: str = Field(default="PNG", description="PNG, JPEG, OPEN_EXR or TIFF")
    priority: int = Field(default=50, ge=0, le=100)
    chunk_size: int = Field(default=1, ge=1, le=MAX_CHUNK_SIZE, description="Frames per task")
    max_retries: int = Field(default=3, ge=0, le=20)
    budget: YuanAmount | None = Field(default=None, description="Hard cost cap, yuan")
    submit: bool = Field(default=True, description="False: keep it a draft (nothing is held)")
    # the original client's names
    task_name: Annotated[str, line(200)] | None = Field(default=None, exclude=True)
    scene_file: Id | None = Field(default=None, exclude=True)
    maya_version: Annotated[str, line(32)] | None = Field(default=None, exclude=True)
    start_frame: int | None = Field(default=None, ge=0, exclude=True)
    end_frame: int | None = Field(default=None, ge=0, exclude=True)
    frame_step: int | None = Field(default=None, ge=1, exclude=True)

    @field_validator("software", "renderer", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("output_format")
    @classmethod
    def _format(cls, value: str) -> str:
        return str(OutputFormat.parse(value))

    @field_validator("camera")
    @classmethod
    def _camera(cls, value: str | None) -> str | None:
        return None if value is None else check_camera_name(value)

    @model_validator(mode="after")
    def _legacy(self) -> TaskIn:
        if not self.name and self.task_name:
            self.name = self.task_name
        if self.scene_file_id is None and self.scene_file is not None:
            self.scene_file_id = self.scene_file
        if self.maya_version and not self.software_version:
            self.software, self.software_version = "maya", self.maya_version
        if self.frames is None and self.start_frame is not None:
            end = self.start_frame if self.end_frame is None else self.end_frame
            if end < self.start_frame:
                raise ValueError("end_frame cannot be before start_frame")
            self.frames = f"{self.start_frame}-{end}x{self.frame_step or 1}"
        if self.frames is None:
            raise ValueError("frames is required (for example `1-100`)")
        return self

    def spec(self) -> TaskSpec:
        return TaskSpec(
            name=self.name.strip() or "render",
            scene_file_id=self.scene_file_id,
            software=self.software,
            software_version=self.software_version,
            renderer=self.renderer,
            frames=self.frames or "",
            width=self.width,
            height=self.height,
            camera=self.camera,
            output_format=OutputFormat.parse(self.output_format),
            priority=self.priority,
            chunk_size=self.chunk_size,
            max_retries=self.max_retries,
            budget=self.budget,
        )


class EstimateOut(BaseModel):
    frames: int
    frame_tasks: int
    estimate: Yuan
    core_seconds_per_frame: float = Field(description="Predicted at this resolution")
    price_per_core_hour: Yuan = Field(description="At priority 50")
    hold: Yuan = Field(description="What submitting holds: the estimate, capped by the budget")


class FrameCountsOut(BaseModel):
    waiting: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    total: int


class TaskOut(Schema):
    id: Id
    name: str
    status: TaskStatus
    paused_reason: str | None
    scene_file_id: Id | None
    scene_name: str
    software: str
    software_version: str | None
    renderer: str
    frames: str = Field(validation_alias="frame_spec")
    frame_count: int
    width: int = Field(validation_alias="resolution_x")
    height: int = Field(validation_alias="resolution_y")
    camera: str | None
    output_format: str
    priority: int
    chunk_size: int
    max_retries: int
    budget: Yuan | None
    estimate: Yuan
    cost: Yuan
    progress: float = 0.0
    frame_tasks: FrameCountsOut | None = None
    output_folder_id: Id | None = None
    created_at: UtcDatetime
    submitted_at: UtcDatetime | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None


class TaskDetailOut(TaskOut):
    eta_seconds: float | None = Field(default=None, description="Estimated time left")
    bill_id: Id | None = None


class FrameTaskOut(Schema):
    id: Id
    seq: int
    frames: str
    frame_count: int
    status: FrameStatus
    attempts: int
    agent_id: Id | None
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    exit_code: int | None
    duration_ms: int | None
    core_seconds: float | None
    peak_memory_bytes: int | None
    cost: Yuan
    error: str | None = Field(default=None, validation_alias="last_error")

    @field_validator("frames", mode="before")
    @classmethod
    def _spec(cls, value: Any) -> Any:
        return describe(value) if isinstance(value, list) else value


class LogLineOut(Schema):
    id: Id
    frame_id: Id | None
    attempt: int | None
    level: str
    line: str
    created_at: UtcDatetime


class LogPageOut(BaseModel):
    items: list[LogLineOut]
    next_cursor: str | None = Field(description="Pass as `after` for the next lines")


class RetryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frame_ids: list[Id] | None = Field(
        default=None, max_length=10_000, description="Frame task ids; omitted: every failed one"
    )


class ResumeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget: YuanAmount | None = Field(default=None, description="A new budget, yuan")
