"""Request and response shapes of the Yuntu balance, recharge, transactions, bills and the
development payment gateway; plus two parsers other ledger endpoints reuse: the statement's
time range (`TimeRange`) and the exponent check of yuan amounts (`exact_yuan_fields`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from yuntu.kit.errors import AppError, E
from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import line
from yuntu.ledger.money import Yuan, YuanAmount, exponent_fields
from yuntu.models.ledger import BillStatus, OrderStatus, TransferType

CurrencyCode = Annotated[str, Field(examples=["CNY"])]


class BalanceOut(BaseModel):
    currency: CurrencyCode
    balance: Yuan = Field(description="Available to spend")
    held: Yuan = Field(description="On hold for work in progress (render tasks)")
    total: Yuan = Field(description="balance + held")


class RechargeIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"amount": "100.00", "description": "Top up"}]},
    )
    amount: YuanAmount
    description: Annotated[str, line(200)] | None = None


class OrderOut(Schema):
    id: Id
    order_no: str = Field(examples=["RC7262149437321216"])
    status: OrderStatus
    amount: Yuan
    currency: CurrencyCode
    description: str | None = None
    created_at: UtcDatetime
    expires_at: UtcDatetime | None = Field(description="Unpaid after this: expired")
    paid_at: UtcDatetime | None


class PaymentOut(BaseModel):
    """What the client needs to pay. Real providers add their own fields (a QR code, a
    redirect form); the development provider says `simulated: true`."""

    model_config = ConfigDict(extra="allow")
    provider: str = Field(examples=["dev_simulated"])
    simulated: bool = Field(description="True: a development stand-in, no money is taken")
    checkout_url: str = Field(
        examples=["http://127.0.0.1:8000/api/v1/payments/dev_simulated/checkout/RC726214943"]
    )


class RechargeOut(BaseModel):
    order: OrderOut
    payment: PaymentOut


class SimulatedCheckoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"outcome": "paid"}]})
    outcome: Literal["paid", "failed"] = "paid"


class NoticeOut(BaseModel):
    order_no: str
    status: OrderStatus


class TransactionOut(BaseModel):
    id: Id
    type: TransferType
    amount: Yuan = Field(description='Signed: negative when money left the balance ("-1.00")')
    balance_after: Yuan = Field(description="The available balance right after this movement")
    description: str | None
    reference_type: str | None = Field(examples=["order"])
    reference_id: str | None
    created_at: UtcDatetime


class BillLineOut(Schema):
    description: str
    quantity: int
    unit: str | None = Field(examples=["frame"])
    amount: Yuan
    created_at: UtcDatetime


class BillOut(Schema):
    id: Id
    title: str
    reference_type: str = Field(examples=["render_task"])
    reference_id: str
    status: BillStatus
    total: Yuan
    currency: CurrencyCode
    created_at: UtcDatetime
    closed_at: UtcDatetime | None
    lines: list[BillLineOut]


# -- time range of a statement -----------------------------------------------------------------
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _time_bound(value: str | None, field: str, *, end: bool) -> datetime | None:
    """RFC 3339 with an offset (2026-11-23T10:00:00Z), or a date (2026-11-23, a whole UTC day:
    `to` then includes that day)."""
    if value is None:
        return None
    try:
        if _DATE_ONLY.match(value):
            day = date.fromisoformat(value)
            moment = datetime.combine(day, time(), tzinfo=UTC)
            return moment + timedelta(days=1) if end else moment
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise AppError(
            E.VALIDATION_ERROR,
            details=[
                {
                    "field": field,
                    "message": "must be an RFC 3339 time with an offset "
                    "(2026-11-23T10:00:00Z) or a date (2026-11-23)",
                }
            ],
        )
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class TimeRange:
    since: datetime | None  # inclusive
    until: datetime | None  # exclusive


def time_range(
    from_: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=40,
            description="From this time (RFC 3339) or date (YYYY-MM-DD, UTC), inclusive",
            examples=["2026-11-01"],
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(
            max_length=40,
            description="Up to this time (exclusive) or through this date (inclusive)",
            examples=["2026-11-30"],
        ),
    ] = None,
) -> TimeRange:
    return TimeRange(
        since=_time_bound(from_, "query.from", end=False),
        until=_time_bound(to, "query.to", end=True),
    )


TimeRangeQuery = Annotated[TimeRange, Depends(time_range)]


def exact_yuan_fields(*fields: str) -> Any:
    """A dependency refusing yuan amounts written as JSON numbers with an exponent (1e3): the
    JSON parser has already turned them into floats that look like any other."""

    async def check(request: Request) -> None:
        written = exponent_fields(await request.body(), fields)
        if written:
            raise AppError(
                E.VALIDATION_ERROR,
                details=[
                    {
                        "field": f"body.{name}",
                        "message": 'must be a plain decimal such as "100.00" (no exponent)',
                    }
                    for name in written
                ],
            )

    return Depends(check)
