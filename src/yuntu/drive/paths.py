"""Names and paths: NFC, no `..`, no empty segments, no control characters, bounded length;
conflict names (`a (1).txt`); file-type policy."""

from __future__ import annotations

import mimetypes
import re
import unicodedata
from collections.abc import Iterable
from enum import StrEnum

from yuntu.kit.errors import AppError, E

MAX_NAME_BYTES = 255
_FORBIDDEN_CHARS = frozenset("/\\\x00")
_NUMBERED = re.compile(r"^(?P<stem>.*) \((?P<n>\d+)\)$")


class Conflict(StrEnum):
    """What to do when the target name is taken."""

    ERROR = "error"
    RENAME = "rename"  # `a.txt` -> `a (1).txt`
    OVERWRITE = "overwrite"  # files only: the old content becomes the previous version


def invalid(message: str, field: str | None = None) -> AppError:
    details = [{"field": field, "message": message}] if field else None
    return AppError(E.INVALID_PATH, message=message, details=details)


def clean_name(raw: str, field: str = "name") -> str:
    """One path segment, NFC-normalized and validated."""
    name = unicodedata.normalize("NFC", raw)
    if name != name.strip() or not name:
        raise invalid("name is empty or has leading/trailing spaces", field)
    if name in (".", ".."):
        raise invalid("`.` and `..` are not names", field)
    if any(ch in _FORBIDDEN_CHARS or unicodedata.category(ch) == "Cc" for ch in name):
        raise invalid("name contains `/`, `\\` or a control character", field)
    if len(name.encode()) > MAX_NAME_BYTES:
        raise invalid(f"name is longer than {MAX_NAME_BYTES} bytes", field)
    return name


def split_path(raw: str, field: str = "path", *, allow_root: bool = True) -> list[str]:
    """`/a/b/c` or `a/b/c` -> ["a", "b", "c"]; `/` -> [] when allowed. Empty segments (`a//b`),
    `.` and `..` are refused rather than resolved."""
    text = unicodedata.normalize("NFC", raw).replace("\\", "/")
    if text in ("", "/"):
        if allow_root:
            return []
        raise invalid("path is empty", field)
    body = text[1:] if text.startswith("/") else text
    if body.endswith("/"):
        body = body[:-1]
    return [clean_name(part, field) for part in body.split("/")]


def join(parent_path: str, name: str) -> str:
    return f"/{name}" if parent_path == "/" else f"{parent_path}/{name}"


def check_path_length(path: str, limit: int) -> None:
    if len(path.encode()) > limit:
        raise invalid(f"path is longer than {limit} bytes")


def extension_of(name: str) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        return ""
    return ext.lower()[:32]


def guess_mime(name: str, declared: str | None = None) -> str:
    if declared and "/" in declared and len(declared) <= 128:
        return declared
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def numbered(name: str, n: int, *, is_file: bool) -> str:
    """`report.pdf`, 2 -> `report (2).pdf`; folders and extension-less names get the suffix at
    the end."""
    stem, dot, ext = name.rpartition(".") if is_file else ("", "", name)
    if not is_file or not dot or not stem:
        stem, dot, ext = name, "", ""
    match = _NUMBERED.match(stem)
    if match:
        stem = match.group("stem")
    candidate = f"{stem} ({n}){dot}{ext}"
    while len(candidate.encode()) > MAX_NAME_BYTES:
        stem = stem[:-1]
        candidate = f"{stem} ({n}){dot}{ext}"
    return candidate


def first_free(name: str, taken: Iterable[str], *, is_file: bool) -> str:
    """The first of `name`, `name (1)`, `name (2)`, ... not in `taken` (compared exactly)."""
    used = set(taken)
    if name not in used:
        return name
    n = 1
    while True:
        candidate = numbered(name, n, is_file=is_file)
        if candidate not in used:
            return candidate
        n += 1


def check_type_allowed(name: str, allowed: list[str], denied: list[str]) -> None:
    ext = extension_of(name)
    if ext in {item.lower().lstrip(".") for item in denied}:
        raise AppError(E.FILE_TYPE_NOT_ALLOWED, details={"extension": ext})
    allow = {item.lower().lstrip(".") for item in allowed}
    if allow and ext not in allow:
        raise AppError(E.FILE_TYPE_NOT_ALLOWED, details={"extension": ext})
