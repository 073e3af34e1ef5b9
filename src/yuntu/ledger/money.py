"""Money in and out of JSON: integer fen inside, a decimal string with two places outside.

Floats never carry money here. Input accepts a decimal string ("100.00") or a JSON number
whose shortest decimal form has at most two places; everything ambiguous is refused with a field
error rather than rounded: more decimals, exponents, NaN/Infinity, negatives, zero where a
positive amount is needed, values beyond what the ledger can hold."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema
from pydantic_core import PydanticCustomError

from yuntu.ledger.transfers import MAX_AMOUNT

MAX_FEN = MAX_AMOUNT  # the largest single movement the ledger accepts
_PLAIN = re.compile(r"^-?[0-9]+(?:\.[0-9]+)?$")
_NON_FINITE = {"nan", "-nan", "+nan", "inf", "-inf", "+inf", "infinity", "-infinity", "+infinity"}
_MAX_TEXT = 32  # longer than any amount the ledger can hold: refuse before parsing


def fen_to_str(fen: int) -> str:
    """12345 -> "123.45", -100 -> "-1.00", 0 -> "0.00"."""
    sign = "-" if fen < 0 else ""
    yuan, cents = divmod(abs(fen), 100)
    return f"{sign}{yuan}.{cents:02d}"


def _refuse(message: str) -> PydanticCustomError:
    # A ValueError subclass: pydantic reports it as the field's message without a prefix, and
    # plain callers can catch ValueError.
    return PydanticCustomError("yuan_amount", message)


def _decimal_of(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _refuse('must be an amount in yuan such as "100.00", not a boolean')
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _refuse("must be a finite number")
        text = repr(value)  # the shortest form that reads back as this float
        if "e" in text or "E" in text:
            raise _refuse('must be a plain decimal such as "100.00" (no exponent)')
        return Decimal(text)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise _refuse("must be a finite number")
        return value
    if isinstance(value, str):
        if len(value) > _MAX_TEXT:
            raise _refuse("is too large")
        if value.strip().lower() in _NON_FINITE:
            raise _refuse("must be a finite number")
        if not _PLAIN.match(value):
            if re.match(r"^-?[0-9.]+[eE][+-]?[0-9]+$", value):
                raise _refuse('must be a plain decimal such as "100.00" (no exponent)')
            raise _refuse('must be an amount in yuan such as "100.00"')
        try:
            return Decimal(value)
        except InvalidOperation:  # pragma: no cover - the pattern admits only valid decimals
            raise _refuse('must be an amount in yuan such as "100.00"') from None
    raise _refuse('must be an amount in yuan: a string such as "100.00" or a number')


def parse_yuan(value: Any, *, allow_zero: bool = False, max_fen: int = MAX_FEN) -> int:
    """A yuan amount (string or JSON number) -> integer fen. Raises ValueError (a pydantic
    custom error) with a message fit for the client."""
    amount = _decimal_of(value)
    exponent = amount.as_tuple().exponent
    assert isinstance(exponent, int)  # finite by now
    if amount < 0:
        raise _refuse("must not be negative")
    if exponent < -2:
        raise _refuse("must have at most two decimal places")
    if amount * 100 > max_fen:
        raise _refuse(f"must be at most {fen_to_str(max_fen)}")
    fen = int(amount * 100)
    if fen == 0 and not allow_zero:
        raise _refuse("must be greater than 0")
    return fen


class _FloatLiteral(str):
    """The source text of a JSON number that has a fraction or an exponent."""


def exponent_fields(raw: bytes, fields: tuple[str, ...]) -> list[str]:
    """Top-level `fields` of a JSON object body written as numbers with an exponent (1e3).

    The JSON parser turns 1e3 into the float 1000.0, indistinguishable afterwards from 1000.0,
    so this looks at the raw text. A body that is not a JSON object yields nothing (the schema
    validation reports it)."""
    try:
        document = json.loads(raw, parse_float=_FloatLiteral)
    except (ValueError, RecursionError):
        return []
    if not isinstance(document, dict):
        return []
    return [
        name
        for name in fields
        if isinstance(document.get(name), _FloatLiteral) and "e" in document[name].lower()
    ]


def _parse_positive(value: Any) -> int:
    return parse_yuan(value)


_AMOUNT_PATTERN = r"^[0-9]{1,13}(\.[0-9]{1,2})?$"

# Request field: a positive amount in yuan -> int fen.
YuanAmount = Annotated[
    int,
    BeforeValidator(_parse_positive),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _AMOUNT_PATTERN},
                {"type": "number", "exclusiveMinimum": 0, "multipleOf": 0.01},
            ],
            "description": "Yuan with at most two decimals, as a string (preferred) or a number",
            "examples": ["100.00"],
        }
    ),
]

# Response field: int fen rendered as "123.45" ("-1.00" for money leaving the user).
Yuan = Annotated[
    int,
    PlainSerializer(fen_to_str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "examples": ["123.45"]}),
]
