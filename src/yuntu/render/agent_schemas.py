"""Request and response shapes of the agent protocol (docs/render-agents.md) and of the agent
administration endpoints.

Agent request bodies ignore fields they do not know, so a newer agent can talk to an older
server; administration bodies refuse them."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import line
from yuntu.render.agents import MAX_RENDERERS, MAX_SLOTS, normalize_renderers
from yuntu.render.dispatch import MAX_LINES
from yuntu.render.scheduling import Outcome

INT32 = 2**31 - 1
INT63 = 2**63 - 1

Attempt = Annotated[int, Field(ge=1, le=INT32, description="The attempt from the assignment")]
Renderers = Annotated[
    list[Annotated[str, Field(max_length=80)]],
    Field(max_length=MAX_RENDERERS * 2),
    AfterValidator(normalize_renderers),
]


# -- the agent's calls -------------------------------------------------------------------------
class RegisterIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "hostname": "node-01",
                    "renderers": ["blender", "maya/arnold"],
                    "slots": 2,
                    "version": "0.6.0",
                }
            ]
        }
    )
    hostname: Annotated[str, line(255)] | None = None
    renderers: Renderers = Field(
        description="Programs (`blender`) or program/renderer pairs (`maya/arnold`); "
        "lower-cased, a-z 0-9 _ . - only"
    )
    slots: int = Field(ge=1, le=MAX_SLOTS, description="Frames it renders at once")
    version: Annotated[str, line(64)] | None = None


class RegisterOut(Schema):
    agent_id: Id
    name: str = Field(examples=["node-01"])
    lease_seconds: int = Field(examples=[60])
    heartbeat_seconds: int = Field(examples=[10])
    poll_seconds: float = Field(examples=[2.0])
    claim_wait_seconds: float = Field(
        default=0, examples=[20.0], description="The `wait` to send with claims (long poll)"
    )


class RunningAttempt(BaseModel):
    frame_id: Id
    attempt: Attempt


class HeartbeatIn(BaseModel):
    running: list[RunningAttempt] = Field(default_factory=list, max_length=1024)


class HeartbeatOut(Schema):
    extended: list[Id] = Field(description="Frames whose lease was extended")
    stop: list[Id] = Field(description="Frames to kill and not finish")


class ClaimIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"limit": 1}]})
    limit: int = Field(default=1, ge=1, le=16, description="At most the agent's slots are given")
    renderers: Renderers | None = Field(
        default=None, description="Narrow what the agent registered (default: all of it)"
    )
    wait: float = Field(
        default=0,
        ge=0,
        le=30,
        description="Seconds to wait for work when none is waiting (long poll); 0 answers at once",
    )


class SceneRef(Schema):
    url: str = Field(description="A signed download link; it needs no other credential")
    name: str = Field(examples=["shot.blend"])
    size: int = Field(examples=[123456])
    sha256: str


class Assignment(Schema):
    frame_id: Id
    attempt: int = Field(examples=[1])
    task_id: Id
    task_name: str = Field(examples=["shot-010"])
    software: str = Field(examples=["blender"])
    software_version: str | None = None
    renderer: str = Field(examples=["cycles"])
    frames: list[int] = Field(examples=[[1, 2]])
    width: int = Field(examples=[320])
    height: int = Field(examples=[180])
    camera: str | None = None
    output_format: str = Field(examples=["PNG"])
    scene: SceneRef
    lease_expires_at: UtcDatetime


class ClaimOut(Schema):
    frames: list[Assignment]


class LogLine(BaseModel):
    level: Annotated[str, Field(max_length=16)] = Field(
        default="info", description="debug, info, warning or error (others count as info)"
    )
    line: Annotated[str, Field(max_length=65536)] = Field(
        description="Cut to 4000 characters; control characters become spaces"
    )


class FrameProgress(BaseModel):
    frame: int | None = Field(default=None, ge=-INT32, le=INT32)
    percent: float = Field(ge=0, le=100, allow_inf_nan=False)


class LogIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"attempt": 1, "lines": [{"level": "info", "line": "Fra:1 Mem:12.00M"}]}]
        }
    )
    attempt: Attempt
    lines: list[LogLine] = Field(default_factory=list, max_length=MAX_LINES)
    progress: FrameProgress | None = None


class LogOut(Schema):
    stop: bool = Field(description="Kill the renderer and do not finish the frame")


class FinishIn(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "attempt": 1,
                    "outcome": "succeeded",
                    "exit_code": 0,
                    "duration_ms": 5300,
                    "core_seconds": 19.2,
                    "peak_memory_bytes": 268435456,
                    "error": None,
                }
            ]
        }
    )
    attempt: Attempt
    outcome: Outcome
    exit_code: int | None = Field(default=None, ge=-INT32 - 1, le=INT32)
    duration_ms: int | None = Field(default=None, ge=0, le=INT63)
    core_seconds: float | None = Field(default=None, ge=0, le=1e12, allow_inf_nan=False)
    peak_memory_bytes: int | None = Field(default=None, ge=0, le=INT63)
    error: Annotated[str, Field(max_length=65536)] | None = Field(
        default=None, description="Why it failed (cut to 4000 characters)"
    )


class FinishItem(FinishIn):
    frame_id: Id


class FinishManyIn(BaseModel):
    items: list[FinishItem] = Field(min_length=1, max_length=64)


class FinishOut(Schema):
    frame_status: str = Field(examples=["succeeded"], description="The frame's state now")
    agent_blocked: bool = Field(
        description="This failure blocklisted the agent for the task: it gets none of its frames"
    )
    cost: str = Field(examples=["0.04"], description="Charged for the frame, in yuan (CNY)")


class FinishedItem(BaseModel):
    """One item of a batch finish: its outcome, or the error it alone got (409 INVALID_STATE:
    this attempt no longer holds the frame; 404 NOT_FOUND: no such frame task)."""

    frame_id: Id
    frame_status: str | None = None
    agent_blocked: bool = False
    cost: str | None = None
    error: str | None = Field(default=None, examples=["INVALID_STATE"])
    message: str | None = None


class FinishManyOut(BaseModel):
    items: list[FinishedItem]


# -- administrators ----------------------------------------------------------------------------
class AgentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"name": "node-01"}]})
    name: Annotated[str, line(128, 1)]


class AgentFrame(Schema):
    frame_id: Id
    task_id: Id
    attempt: int
    frames: list[int]
    started_at: UtcDatetime | None
    lease_expires_at: UtcDatetime | None


class AgentOut(Schema):
    id: Id
    name: str = Field(examples=["node-01"])
    status: str = Field(examples=["active"], description="active, disabled or revoked")
    token_prefix: str = Field(examples=["yta_1a2b3c4d"])
    renderers: list[str] = Field(examples=[["blender"]])
    slots: int
    hostname: str | None
    last_heartbeat_at: UtcDatetime | None
    online: bool = Field(description="Heard from within one lease")
    running: list[AgentFrame] = Field(description="The frames it runs now")
    created_by: Id | None
    created_at: UtcDatetime


class AgentCreated(AgentOut):
    token: str = Field(
        description="The agent's token. Shown once, never again.", examples=["yta_1a2b3c4d_..."]
    )
