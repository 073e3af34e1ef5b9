"""Admin request and response shapes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from yuntu.identity.apikeys import Scope
from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import line


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "admin"}]})
    role: Literal["user", "admin"]


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, line(200)] | None = Field(default=None, examples=["abuse report #12"])


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "ci uploader", "scopes": ["packages:read"]}]},
    )
    name: Annotated[str, line(100, 1)]
    scopes: list[Scope] = Field(default_factory=list, max_length=20)
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyOut(Schema):
    id: Id
    name: str
    prefix: str = Field(examples=["yk_3fa85f64"])
    scopes: list[str]
    created_by: Id | None
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    last_used_at: UtcDatetime | None
    revoked_at: UtcDatetime | None


class ApiKeyCreated(ApiKeyOut):
    secret: str = Field(
        description="The key itself. Shown once, never again.", examples=["yk_3fa85f64_5Jf0..."]
    )
