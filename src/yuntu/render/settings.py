"""The render farm's settings, a mixin of `yuntu.settings.Settings` (environment prefix
`YUNTU_`, like every setting). Kept here so the farm's knobs sit next to the code that reads
them; `rate_card()` and `command_templates()` turn them into checked objects."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from yuntu.render.command_template import CommandTemplate
from yuntu.render.pricing import RateCard


class TemplateRenderer(BaseModel):
    """One command-template renderer (see render/command_template.py)."""

    template: str = Field(min_length=1)
    progress_pattern: str | None = None
    output_pattern: str | None = None
    error_pattern: str | None = None

    def build(self) -> CommandTemplate:
        return CommandTemplate(
            template=self.template,
            progress_pattern=self.progress_pattern,
            output_pattern=self.output_pattern,
            error_pattern=self.error_pattern,
        )


class RenderSettings(BaseModel):
    render_price_fen_per_core_hour: Decimal = Field(
        default=Decimal("4"),
        ge=0,
        description="Render price per core-hour, in fen (4 = 0.04 yuan)",
    )
    render_minimum_fen_per_frame: int = Field(
        default=1, ge=0, description="Least a rendered frame costs, in fen"
    )
    render_priority_factor_low: Decimal = Field(
        default=Decimal("0.5"), gt=0, le=1, description="Price factor at priority 0"
    )
    render_priority_factor_high: Decimal = Field(
        default=Decimal("2"), ge=1, description="Price factor at priority 100 (50 pays 1.0)"
    )
    render_core_seconds_per_frame: dict[str, Decimal] = Field(
        default_factory=lambda: {
            "cycles": Decimal(600),
            "eevee": Decimal(60),
            "workbench": Decimal(10),
            "arnold": Decimal(1200),
            "vray": Decimal(1200),
            "redshift": Decimal(300),
        },
        description="Estimated core-seconds of one 1920x1080 frame, per renderer",
    )
    render_default_core_seconds_per_frame: Decimal = Field(default=Decimal(600), gt=0)
    render_chunk_overhead_core_seconds: Decimal = Field(
        default=Decimal(4), ge=0, description="Start-up and scene load of every frame task"
    )
    render_lease_seconds: int = Field(
        default=60, ge=5, le=3600, description="A frame whose agent is silent this long requeues"
    )
    render_heartbeat_seconds: int = Field(
        default=10, ge=1, le=600, description="How often agents report the frames they run"
    )
    render_poll_seconds: float = Field(
        default=2.0, gt=0, le=60, description="How long an idle agent waits between claims"
    )
    render_claim_wait_seconds: float = Field(
        default=10,
        ge=0,
        le=30,
        description="How long an idle agent's claim waits for work to arrive (long poll; 0: "
        "agents poll every render_poll_seconds)",
    )
    render_hold_days: int = Field(
        default=30, ge=1, le=366, description="Lifetime of a render task's hold on the balance"
    )
    render_max_frames: int = Field(
        default=100_000, ge=1, description="Most frames one render task may have"
    )
    render_max_output_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024, ge=1, description="Largest single output an agent sends"
    )
    render_local_agent: bool = Field(
        default=True,
        description="Run one render agent inside `yuntu serve` when it runs the job worker",
    )
    render_local_agent_slots: int = Field(default=1, ge=1, le=64)
    render_local_agent_renderers: Annotated[list[str] | None, NoDecode] = Field(
        default=None,
        description="What the local agent offers; unset: blender when the binary is found, "
        "and every template renderer whose program is found",
    )
    render_noop_outputs: bool = Field(
        default=True,
        description="The no-op renderer (tests, benchmarks) writes a placeholder file and a log "
        "line per frame; false: nothing at all",
    )
    render_blender_path: str = Field(default="blender", description="The Blender executable")
    render_templates: dict[str, TemplateRenderer] = Field(
        default_factory=dict,
        description='Command-template renderers, JSON: {"maya/arnold": {"template": "Render -r '
        'arnold ...", "progress_pattern": ..., "output_pattern": ...}}',
    )

    @field_validator("render_local_agent_renderers", mode="before")
    @classmethod
    def _renderer_list(cls, value: Any) -> Any:
        """`blender,maya/arnold` or a JSON list."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()] or None
        return value

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> Any:
        if self.render_heartbeat_seconds * 2 > self.render_lease_seconds:
            raise ValueError(
                "render_heartbeat_seconds must be at most half of render_lease_seconds, or a "
                "single late heartbeat loses the agent its frames"
            )
        return self

    @field_validator("render_templates")
    @classmethod
    def _templates_build(cls, value: dict[str, TemplateRenderer]) -> dict[str, TemplateRenderer]:
        for name, renderer in value.items():
            if not name or name != name.strip().lower():
                raise ValueError(f"renderer names are lower case: {name!r}")
            renderer.build()  # a bad template fails at start-up, not on the first frame
        return value

    def rate_card(self) -> RateCard:
        return RateCard.per_core_hour(
            self.render_price_fen_per_core_hour,
            minimum_fen_per_frame=self.render_minimum_fen_per_frame,
            priority_factor_low=self.render_priority_factor_low,
            priority_factor_high=self.render_priority_factor_high,
            core_seconds_per_frame=self.render_core_seconds_per_frame,
            default_core_seconds_per_frame=self.render_default_core_seconds_per_frame,
            chunk_overhead_core_seconds=self.render_chunk_overhead_core_seconds,
        )

    def command_templates(self) -> dict[str, CommandTemplate]:
        return {name: renderer.build() for name, renderer in self.render_templates.items()}
