"""String types that are safe to store on both databases and to show back to users."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, StringConstraints

# C0 controls (NUL included: PostgreSQL refuses it in text), DEL and C1 controls, plus bidi
# overrides that can disguise names. Tab and newline are allowed only in multi-line text.
_FORBIDDEN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_FORBIDDEN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def clean_line(value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    if _FORBIDDEN_LINE.search(value):
        raise ValueError("must not contain control characters")
    return value


def clean_text(value: str) -> str:
    value = unicodedata.normalize("NFC", value)
    if _FORBIDDEN_TEXT.search(value):
        raise ValueError("must not contain control characters")
    return value


def line(max_length: int, min_length: int = 0) -> object:
    """A single-line string type: NFC-normalized, no control characters, stripped, bounded."""
    return Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length),
        AfterValidator(clean_line),
    ]


def text(max_length: int) -> object:
    return Annotated[str, StringConstraints(max_length=max_length), AfterValidator(clean_text)]
