"""Response envelope, id and time types, pagination: the shapes every endpoint shares."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.kit.ids import MAX_ID

T = TypeVar("T")


def _parse_id(value: Any) -> Any:
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        return int(value)
    return value


# A 64-bit snowflake: JSON renders it as a string (JavaScript cannot hold it as a number); input
# accepts the string or an integer.
Id = Annotated[
    int,
    BeforeValidator(_parse_id),
    Field(ge=1, le=MAX_ID),
    PlainSerializer(lambda v: str(v), return_type=str, when_used="json"),
    WithJsonSchema(
        # 1 and up, as validated (0 is not an id); the upper bound is MAX_ID, checked on input.
        {"type": "string", "pattern": "^[1-9][0-9]{0,18}$", "examples": ["7262149437321216"]}
    ),
]


def _rfc3339(value: datetime) -> str:
    text = value.isoformat(timespec="seconds" if not value.microsecond else "milliseconds")
    return text.replace("+00:00", "Z")


# RFC 3339 in UTC with a Z suffix.
UtcDatetime = Annotated[
    datetime,
    PlainSerializer(_rfc3339, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-11-23T10:00:00Z"]}),
]


def _date_time_text(value: Any) -> Any:
    # pydantic would also take a number (Unix time) or a naive time: a filter given that way is
    # almost surely a mistake, so only RFC 3339 text with a time zone passes.
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and len(value) >= 20 and value[:4].isdigit() and value[4] == "-":
        return value
    raise ValueError("an RFC 3339 date-time with a time zone, e.g. 2026-01-01T00:00:00Z")


# A time given as a filter (query parameter): RFC 3339 with a time zone, nothing else.
FilterDatetime = Annotated[
    AwareDatetime,
    BeforeValidator(_date_time_text),
    WithJsonSchema({"type": "string", "format": "date-time", "examples": ["2026-11-23T10:00:00Z"]}),
]


class Schema(BaseModel):
    model_config = ConfigDict(from_attributes=True, populate_by_name=True)


class Envelope(BaseModel, Generic[T]):
    code: int = Field(default=0, examples=[0])
    message: str = Field(default="success", examples=["success"])
    data: T


class FieldError(BaseModel):
    field: str = Field(examples=["body.password"])
    message: str = Field(examples=["String should have at least 8 characters"])


class ErrorEnvelope(BaseModel):
    code: int = Field(examples=[404001])
    message: str = Field(examples=["资源不存在"])
    error: str = Field(examples=["NOT_FOUND"])
    data: None = None
    details: Any = Field(default=None, examples=[None])


def ok(data: Any = None, message: str = "success") -> dict[str, Any]:
    return {"code": 0, "message": message, "data": data}


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int = Field(examples=[42])
    page: int = Field(examples=[1])
    page_size: int = Field(examples=[20])
    pages: int = Field(examples=[3])


class PageParams(BaseModel):
    page: int = 1
    page_size: int = 20

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def page_params(
    page: Annotated[int, Query(ge=1, le=100_000, description="1-based page number")] = 1,
    page_size: Annotated[int, Query(ge=1, le=100, description="Items per page (max 100)")] = 20,
) -> PageParams:
    return PageParams(page=page, page_size=page_size)


async def paginate(
    session: AsyncSession, statement: Select[Any], params: PageParams
) -> tuple[list[Any], int]:
    """Run one page of `statement` (already ordered) and the total count."""
    total = await session.scalar(
        select(func.count()).select_from(statement.order_by(None).subquery())
    )
    rows = (await session.scalars(statement.offset(params.offset).limit(params.page_size))).all()
    return list(rows), int(total or 0)


def make_page(items: list[Any], total: int, params: PageParams) -> dict[str, Any]:
    return {
        "items": items,
        "total": total,
        "page": params.page,
        "page_size": params.page_size,
        "pages": math.ceil(total / params.page_size) if total else 0,
    }
