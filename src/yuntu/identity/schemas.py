"""Request and response shapes of the identity endpoints."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import line

Username = Annotated[str, line(32, 3), Field(examples=["alice"])]
Email = Annotated[str, line(254, 3), Field(examples=["alice@example.com"])]
Phone = Annotated[str, line(20, 5), Field(examples=["13800138000"])]
Password = Annotated[str, Field(min_length=1, max_length=128, examples=["correct-horse-42"])]
Nickname = Annotated[str, line(64, 1), Field(examples=["Alice"])]
AvatarUrl = Annotated[str, line(1024, 1), Field(examples=["https://cdn.example.com/a.png"])]
DeviceId = Annotated[
    str,
    Field(
        min_length=8,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:\-]+$",
        examples=["8b1f6a2e-3c44-4f3b-9a55-2b0f7c1d9e10"],
    ),
]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserOut(Schema):
    id: Id
    username: str | None = Field(examples=["alice"])
    email: str | None = Field(examples=["alice@example.com"])
    phone: str | None = Field(examples=[None])
    nickname: str | None = Field(examples=["Alice"])
    avatar_url: str | None = Field(examples=[None])
    status: Literal["active", "suspended", "deleted"]
    role: Literal["user", "admin"]
    member_level: int = Field(examples=[0])
    grants: Annotated[list[str], BeforeValidator(lambda v: v or [])] = Field(
        default_factory=list, description="Scopes granted besides the role", examples=[[]]
    )
    created_at: UtcDatetime
    updated_at: UtcDatetime
    last_login_at: UtcDatetime | None = None


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 (a scheme name, not a secret)
    expires_in: int = Field(description="Access token lifetime in seconds", examples=[1800])
    refresh_expires_in: int = Field(examples=[604800])
    session_id: Id
    user: UserOut


class RegisterIn(StrictModel):
    username: Username | None = None
    email: Email | None = None
    phone: Phone | None = None
    password: Password
    nickname: Nickname | None = None

    @model_validator(mode="after")
    def _one_identifier(self) -> RegisterIn:
        if not (self.username or self.email or self.phone):
            raise ValueError("give at least one of username, email or phone")
        return self

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "username": "alice",
                    "email": "alice@example.com",
                    "password": "correct-horse-42",
                    "nickname": "Alice",
                }
            ]
        },
    )


class LoginIn(StrictModel):
    """Either an identifier and a password, or a PicKitchen device id."""

    account: Annotated[str, line(254, 1)] | None = None
    username: Annotated[str, line(254, 1)] | None = None
    email: Annotated[str, line(254, 1)] | None = None
    phone: Annotated[str, line(254, 1)] | None = None
    password: Password | None = None
    device_id: DeviceId | None = None

    @model_validator(mode="after")
    def _one_method(self) -> LoginIn:
        identifiers = [v for v in (self.account, self.username, self.email, self.phone) if v]
        if self.device_id:
            if identifiers or self.password:
                raise ValueError("device_id login takes no account or password")
        elif len(identifiers) != 1 or not self.password:
            raise ValueError("give exactly one of account, username, email or phone, and password")
        return self

    @property
    def identifier(self) -> str | None:
        return self.account or self.username or self.email or self.phone

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"account": "alice", "password": "correct-horse-42"},
                {"device_id": "8b1f6a2e-3c44-4f3b-9a55-2b0f7c1d9e10"},
            ]
        },
    )


class RefreshIn(StrictModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=4096)]


class LogoutIn(StrictModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    all: bool = Field(default=False, description="Revoke every session of the user")


class SessionOut(Schema):
    id: Id
    method: str = Field(examples=["password"])
    ip: str | None = Field(examples=["203.0.113.7"])
    user_agent: str | None = Field(examples=["Mozilla/5.0"])
    created_at: UtcDatetime
    last_used_at: UtcDatetime
    expires_at: UtcDatetime
    current: bool = False


class ProfileUpdate(StrictModel):
    username: Username | None = None
    email: Email | None = None
    phone: Phone | None = None
    nickname: Nickname | None = None
    avatar_url: AvatarUrl | None = None

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"nickname": "Alice W."}]}
    )


class PasswordChange(StrictModel):
    current_password: Password | None = Field(
        default=None, description="Required when the account has a password"
    )
    new_password: Password


class Revoked(BaseModel):
    revoked: int = Field(examples=[1])
