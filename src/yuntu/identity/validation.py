"""Normalising identifiers: usernames and emails are unique case-insensitively, usernames NFC."""

from __future__ import annotations

import re
import unicodedata

from email_validator import EmailNotValidError, validate_email

from yuntu.kit.errors import AppError, E

_USERNAME = re.compile(r"^[\w.\-]{3,32}$")
_PHONE = re.compile(r"^\+?[0-9]{5,15}$")


def invalid(field: str, message: str) -> AppError:
    return AppError(E.VALIDATION_ERROR, details=[{"field": f"body.{field}", "message": message}])


def normalize_username(raw: str) -> tuple[str, str]:
    """(display form, unique key)."""
    name = unicodedata.normalize("NFC", raw.strip())
    if not _USERNAME.match(name):
        raise invalid("username", "3-32 letters, digits, '_', '.' or '-'")
    if name.isdigit():
        raise invalid("username", "must not be only digits")
    return name, name.casefold()


def normalize_email(raw: str) -> tuple[str, str]:
    try:
        result = validate_email(raw.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise invalid("email", str(exc)[:200]) from None
    return result.normalized, result.normalized.casefold()


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
