"""Shapes of the administrator ledger endpoints."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from yuntu.kit.schemas import Id, UtcDatetime
from yuntu.kit.text import line
from yuntu.ledger.money import fen_to_str, parse_yuan
from yuntu.ledger.transfers import MAX_AMOUNT
from yuntu.models.ledger import Asset, TransferType


def _points(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError("points must be a whole number")
    if isinstance(value, str) and not (value.isascii() and value.isdigit() and len(value) <= 16):
        raise ValueError("points must be a whole number")
    points = int(value)
    if not 0 < points <= MAX_AMOUNT:
        raise ValueError("points must be greater than 0 and within range")
    return points


def parse_amount(asset: str, value: Any) -> int:
    """CNY: yuan with at most two decimals -> fen. POINTS: a whole number."""
    return parse_yuan(value) if asset == Asset.CNY else _points(value)


def render_amount(asset: str, amount: int) -> str:
    return fen_to_str(amount) if asset == Asset.CNY else str(amount)


class AdjustmentIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "user_id": "7262149437321216",
                    "asset": "CNY",
                    "direction": "credit",
                    "amount": "20.00",
                    "reason": "Compensation for ticket #1841",
                }
            ]
        },
    )
    user_id: Id
    asset: Asset
    direction: Literal["credit", "debit"]
    amount: str | int = Field(
        description="CNY: yuan with at most two decimals; POINTS: a whole number"
    )
    reason: Annotated[str, line(255, min_length=3)]
    amount_minor: int = Field(default=0, exclude=True)

    @model_validator(mode="after")
    def _parse(self) -> AdjustmentIn:
        self.amount_minor = parse_amount(self.asset, self.amount)
        return self


class ReversalIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: str | int | None = Field(
        default=None, description="Part to reverse (default: all that is left)"
    )
    reason: Annotated[str, line(255, min_length=3)]


class AccountSide(BaseModel):
    account_id: Id
    user_id: Id | None = None
    system: str | None = Field(default=None, description="System account code")


class AdminTransferOut(BaseModel):
    id: Id
    asset: Asset
    amount: str = Field(description="Fen as yuan for CNY, points as an integer string")
    type: TransferType
    debit: AccountSide
    credit: AccountSide
    reference_type: str | None
    reference_id: str | None
    reverses_id: Id | None
    hold_id: Id | None
    description: str | None
    actor_user_id: Id | None
    idempotency_key: str
    created_at: UtcDatetime


class UserBalancesOut(BaseModel):
    user_id: Id
    cny: dict[str, str] = Field(description="balance, held, total in yuan")
    points: dict[str, int] = Field(description="balance, held, total")
