"""Normalising identifiers: usernames and emails are unique case-insensitively, usernames NFC."""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

from yuntu.kit.errors import AppError, E

_USERNAME = re.compile(r"^[\w.\-]{3,32}$")
_PHONE = re.compile(r"^\+?[0-9]{5,15}$")
# Column widths of users.username_key and users.email_key. Case folding can lengthen a string
# ('ΐ' folds to three code points), so the unique key is checked against them, not only the input.
USERNAME_KEY_MAX = 64
EMAIL_KEY_MAX = 254


def invalid(field: str, message: str) -> AppError:
    return AppError(E.VALIDATION_ERROR, details=[{"field": f"body.{field}", "message": message}])


def normalize_username(raw: str) -> tuple[str, str]:
    """(display form, unique key)."""
    name = unicodedata.normalize("NFC", raw.strip())
    if not _USERNAME.match(name):
        raise invalid("username", "3-32 letters, digits, '_', '.' or '-'")
    if name.isdigit():
        raise invalid("username", "must not be only digits")
    key = name.casefold()
    if len(key) > USERNAME_KEY_MAX:
        raise invalid("username", "too long")
    return name, key


def normalize_email(raw: str) -> tuple[str, str]:
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise invalid("email", str(exc)[:200]) from None
    key = result.normalized.casefold()
    if len(key) > EMAIL_KEY_MAX or len(result.normalized) > EMAIL_KEY_MAX:
        raise invalid("email", "The email address is too long")
    return result.normalized, key


def normalize_phone(raw: str) -> str:
    phone = re.sub(r"[\s\-()]", "", raw)
    if not _PHONE.match(phone):
        raise invalid("phone", "5-15 digits, optionally starting with +")
    return phone


def identifier_kind(identifier: str) -> str:
    if "@" in identifier:
        return "email"
    if _PHONE.match(re.sub(r"[\s\-()]", "", identifier)):
        return "phone"
    return "username"
