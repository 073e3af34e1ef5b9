"""Proof of possession for instant upload (秒传): the challenge (random byte ranges and a nonce
signed into a stateless token) and the checks of the client's answer.

Token: base64url(JSON {task_id, file_id, ranges, nonce, exp}) "." base64url(HMAC-SHA256(key,
first part)), the key derived from the app secret for this purpose only. Nothing is stored per
challenge; a token is bound to one file of one task and expires. The client answers hex
SHA-256(bytes.fromhex(nonce) + the bytes of each range, in order): only a holder of those bytes
can compute it, and the nonce makes every answer single-purpose."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

KEY_LABEL = b"yuntu-instant-upload-v1"
RANGE_COUNT = 4
RANGE_BYTES = 4096
WHOLE_FILE_LIMIT = RANGE_COUNT * RANGE_BYTES  # up to this size the proof covers every byte


def derive_key(secret: str) -> bytes:
    """The challenge-signing key: separate from every other key derived from the app secret."""
    return hmac.new(secret.encode(), KEY_LABEL, hashlib.sha256).digest()


def b64(data: bytes) -> str:
    """base64url without padding (one token segment)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_JSON = json.JSONEncoder(separators=(",", ":"))


def _mac(key: bytes, body: str) -> str:
    return b64(hmac.digest(key, body.encode(), "sha256"))


def sign_token(key: bytes, claims: dict[str, Any]) -> str:
    body = b64(_JSON.encode(claims).encode())
    return f"{body}.{_mac(key, body)}"


def read_token(key: bytes, token: str) -> dict[str, Any] | None:
    """The claims of a token this server signed, or None (forged, tampered, malformed)."""
    body, dot, mac = token.partition(".")
    if not dot or not body.isascii() or not mac.isascii():
        return None
    if not hmac.compare_digest(_mac(key, body).encode(), mac.encode()):
        return None
    try:
        claims = json.loads(unb64(body))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def pick_ranges(size: int) -> list[list[int]]:
    """Four random 4 KiB ranges, in file order; a file of at most 16 KiB: all of it."""
    if size <= WHOLE_FILE_LIMIT:
        return [[0, size]]
    span = size - RANGE_BYTES + 1
    return sorted([secrets.randbelow(span), RANGE_BYTES] for _ in range(RANGE_COUNT))


def make_challenge(
    key: bytes, task_id: int, file_id: int, size: int, now: float, ttl: int
) -> dict[str, Any]:
    ranges = pick_ranges(size)
    nonce = secrets.token_hex(16)
    exp = int(now) + ttl
    claims = {
        "task_id": str(task_id),
        "file_id": str(file_id),
        "ranges": ranges,
        "nonce": nonce,
        "exp": exp,
    }
    return {
        "token": sign_token(key, claims),
        "nonce": nonce,
        "ranges": ranges,
        "expires_at": datetime.fromtimestamp(exp, UTC),
    }


def proof_digest(nonce: str, chunks: Sequence[bytes]) -> str:
    """What the client computes: hex SHA-256(nonce bytes + each range's bytes in order)."""
    digest = hashlib.sha256(bytes.fromhex(nonce))
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    ranges: list[tuple[int, int]]
    nonce: str


def check_token(
    key: bytes, token: str, task_id: int, file_id: int, size: int, now: float
) -> Claim | None:
    """The ranges and nonce of a valid token for this file of this task (signature, binding,
    expiry, ranges inside the file), or None."""
    claims = read_token(key, token)
    if claims is None:
        return None
    exp, nonce, ranges = claims.get("exp"), claims.get("nonce"), claims.get("ranges")
    if claims.get("task_id") != str(task_id) or claims.get("file_id") != str(file_id):
        return None
    if not isinstance(exp, int) or exp < now:
        return None
    if not isinstance(nonce, str) or len(nonce) != 32:
        return None
    try:
        bytes.fromhex(nonce)
    except ValueError:
        return None
    if not isinstance(ranges, list) or not 1 <= len(ranges) <= RANGE_COUNT:
        return None
    checked: list[tuple[int, int]] = []
    for item in ranges:
        if not (isinstance(item, list) and len(item) == 2 and all(type(v) is int for v in item)):
            return None
        offset, length = item
        if offset < 0 or length < 0 or offset + length > size:
            return None
        checked.append((offset, length))
    return Claim(checked, nonce)
