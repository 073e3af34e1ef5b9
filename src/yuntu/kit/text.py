"""String types that are safe to store on both databases and to show back to users."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, BeforeValidator, StringConstraints

# C0 controls (NUL included: PostgreSQL refuses it in text), DEL and C1 controls, plus bidi
# overrides that can disguise names. Tab and newline are allowed only in multi-line text.
_FORBIDDEN_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_FORBIDDEN_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _nfc(value: object) -> object:
    # Runs before the length check: NFC can lengthen a string (U+FB2C becomes three code points)
    # and the bound must hold for the stored form (PostgreSQL refuses an over-long VARCHAR).
    return unicodedata.normalize("NFC", value) if isinstance(value, str) else value


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


@dataclass(frozen=True, slots=True)
class _Constrained(GroupedMetadata):
    """Metadata for `Annotated[str, ...]` (also in unions with None and FastAPI parameters):
    pydantic expands it into the length constraints and the character check.

    (An `Annotated[...]` type used as metadata inside another `Annotated` is silently ignored,
    so these helpers must return metadata, not a type.)"""

    max_length: int
    min_length: int = 0
    strip: bool = True
    single_line: bool = True

    def __iter__(self) -> Iterator[Any]:
        yield StringConstraints(
            strip_whitespace=self.strip, min_length=self.min_length, max_length=self.max_length
        )
        yield BeforeValidator(_nfc)
        yield AfterValidator(clean_line if self.single_line else clean_text)


def line(max_length: int, min_length: int = 0) -> Any:
    """Metadata for a single-line string: NFC-normalized, no control characters, stripped,
    bounded. Use as `Annotated[str, line(100)]`."""
    return _Constrained(max_length, min_length)


def text(max_length: int) -> Any:
    """Metadata for multi-line text (tab and newline allowed). Use as `Annotated[str, text(n)]`."""
    return _Constrained(max_length, strip=False, single_line=False)
