"""Admin request and response shapes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from yuntu.identity.apikeys import Scope
from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import line


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "admin"}]})
    role: Literal["user", "admin"]


class GrantsChange(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"grants": ["packages:admin"]}]}
    )
    grants: list[Scope] = Field(max_length=20)


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


class AuditOut(Schema):
    id: Id
    action: str = Field(examples=["package.rollback"])
    actor_user_id: Id | None = Field(description="The user who acted (null: a key or the system)")
    actor_api_key_id: Id | None = Field(description="The API key that acted, if any")
    target_type: str = Field(examples=["package"])
    target_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ip: str | None = Field(description="The client address the action came from")
    created_at: UtcDatetime
