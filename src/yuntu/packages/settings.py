"""Package distribution settings, a mixin of `yuntu.settings.Settings` (prefix `YUNTU_`).

Processing runs `packages_steps` in order for every uploaded version. Built-in steps:
`checksum` (re-reads the stored original and checks its digests), `metadata` (APK / IPA),
`clamav` (clamscan, or clamd when `packages_clamd_address` is set). Any other step name is one of
the operator's own tools, configured in `packages_commands`."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator
from pydantic_settings import NoDecode

from yuntu.packages.commands import BUILTIN_STEPS, CommandStep
from yuntu.packages.scanner import parse_clamd_address

_STEP_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class PackageCommand(BaseModel):
    """An external processing tool: a command template run without a shell (see
    `yuntu.packages.commands`)."""

    template: str = Field(min_length=1, examples=["harden --in {input} --out {output}"])
    timeout_seconds: int = Field(default=600, ge=1, le=24 * 3600)


class PackageSettings(BaseModel):
    packages_steps: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["checksum", "metadata", "clamav"],
        description="Processing steps in order, comma-separated: checksum, metadata, clamav and "
        "the names of packages_commands",
    )
    packages_commands: dict[str, PackageCommand] = Field(
        default_factory=dict,
        description='External steps, JSON: {"harden": {"template": "harden --in {input} --out '
        '{output}", "timeout_seconds": 600}}',
    )
    packages_clamav_required: bool = Field(
        default=False,
        description="When ClamAV is not installed: true fails the scan step (the version is not "
        "published), false records the step as skipped",
    )
    packages_clamscan_path: str = Field(default="clamscan", description="The clamscan executable")
    packages_clamav_database: str | None = Field(
        default=None,
        description="clamscan -d: a signature database file or directory (default: ClamAV's own)",
    )
    packages_clamd_address: str | None = Field(
        default=None,
        description="Scan with clamd instead of clamscan: tcp://host:port or unix:///path",
    )
    packages_clamscan_options: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [
            "--max-filesize=4000M",
            "--max-scansize=4000M",
            "--alert-exceeds-max=yes",
        ],
        description="Extra clamscan flags, comma-separated. The default scans files up to "
        "4000 MB whole and fails (rather than passes) anything larger",
    )
    packages_scan_timeout_seconds: int = Field(default=600, ge=1, le=24 * 3600)
    packages_auto_publish: bool = Field(
        default=True,
        description="A successfully processed version becomes current at once; false: an "
        "administrator publishes it",
    )
    packages_delivery: Literal["stream", "redirect"] = Field(
        default="stream",
        description="Permanent links stream the file, or redirect to a short-lived signed "
        "storage URL",
    )
    packages_cdn_base_url: str | None = Field(
        default=None,
        description="Base URL of the CDN in front of /dist: download links use it",
        examples=["https://dl.example.com"],
    )
    packages_dist_max_age_seconds: int = Field(
        default=60,
        ge=0,
        le=86400,
        description="How long a CDN or browser may reuse a permanent link's answer before "
        "checking again (a publish or rollback shows after at most this long)",
    )
    packages_redirect_ttl_seconds: int = Field(
        default=300, ge=10, le=86400, description="Lifetime of redirect-mode signed URLs"
    )
    packages_query_per_minute: int = Field(
        default=600, ge=1, description="Client query API calls per API key per minute"
    )
    packages_max_upload_bytes: int = Field(
        default=8 * 1024 * 1024 * 1024, ge=1, description="Largest package version upload"
    )

    @field_validator("packages_steps", "packages_clamscan_options", mode="before")
    @classmethod
    def _step_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [name.strip() for name in text.split(",") if name.strip()]
        return value

    @field_validator("packages_clamd_address")
    @classmethod
    def _clamd_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parse_clamd_address(value.strip())  # raises ValueError with the reason
        return value.strip()

    @field_validator("packages_cdn_base_url")
    @classmethod
    def _cdn_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^\s/?#]+(/[^\s?#]*)?$", value):
            raise ValueError("packages_cdn_base_url must be an http(s) URL without query")
        return value

    @model_validator(mode="after")
    def _steps_known(self) -> Any:
        for name, command in self.packages_commands.items():
            if not _STEP_NAME.match(name) or name in BUILTIN_STEPS:
                raise ValueError(f"packages_commands: {name!r} is not a usable step name")
            CommandStep(name, command.template, command.timeout_seconds)  # a bad template fails now
        seen: set[str] = set()
        for name in self.packages_steps:
            if name not in BUILTIN_STEPS and name not in self.packages_commands:
                raise ValueError(f"packages_steps: unknown step {name!r}")
            if name in seen:
                raise ValueError(f"packages_steps: {name!r} appears twice")
            seen.add(name)
        return self
