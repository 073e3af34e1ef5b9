"""JWTs (PyJWT, HS256, explicit algorithm list) and the hashing of opaque secrets at rest."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import jwt

from yuntu.kit.errors import AppError, E

ISSUER = "yuntu"
ALGORITHMS = ["HS256"]
TokenType = Literal["access", "refresh"]


def sha256_hex(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def random_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def constant_time_equals(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    session_id: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class RefreshClaims:
    user_id: int
    session_id: int
    token_id: int


class TokenCodec:
    """Access and refresh tokens are signed with different derived keys and carry `type`, so
    one can never be accepted as the other (RFC 8725 3.12)."""

    def __init__(self, secret: str, access_ttl: int, refresh_ttl: int) -> None:
        self._keys = {
            kind: hmac.new(secret.encode(), f"yuntu-jwt-{kind}".encode(), hashlib.sha256).digest()
            for kind in ("access", "refresh")
        }
        self.access_ttl = access_ttl
        self.refresh_ttl = refresh_ttl

    def _encode(
        self, kind: TokenType, user_id: int, session_id: int, jti: str, ttl: int, now: datetime
    ) -> str:
        claims = {
            "iss": ISSUER,
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=ttl)).timestamp()),
            "jti": jti,
            "type": kind,
        }
        return jwt.encode(claims, self._keys[kind], algorithm="HS256")

    def issue_access(self, user_id: int, session_id: int, now: datetime | None = None) -> str:
        now = now or datetime.now(UTC)
        return self._encode("access", user_id, session_id, random_secret(12), self.access_ttl, now)

    def issue_refresh(
        self, user_id: int, session_id: int, token_id: int, now: datetime | None = None
    ) -> str:
        now = now or datetime.now(UTC)
        return self._encode("refresh", user_id, session_id, str(token_id), self.refresh_ttl, now)

    def _decode(self, token: str, kind: TokenType) -> dict[str, Any]:
        if not token or len(token) > 4096:
            raise AppError(E.TOKEN_INVALID)
        try:
            claims = jwt.decode(
                token,
                self._keys[kind],
                algorithms=ALGORITHMS,
                issuer=ISSUER,
                options={"require": ["iss", "sub", "sid", "iat", "exp", "jti", "type"]},
            )
        except jwt.ExpiredSignatureError:
            raise AppError(E.TOKEN_EXPIRED) from None
        except jwt.PyJWTError:
            raise AppError(E.TOKEN_INVALID) from None
        if claims.get("type") != kind:
            raise AppError(E.TOKEN_INVALID)
        for field in ("sub", "sid"):
            value = claims.get(field)
            if not isinstance(value, str) or not value.isdigit() or len(value) > 19:
                raise AppError(E.TOKEN_INVALID)
        return claims

    def decode_access(self, token: str) -> AccessClaims:
        claims = self._decode(token, "access")
        return AccessClaims(
            int(claims["sub"]), int(claims["sid"]), datetime.fromtimestamp(claims["exp"], tz=UTC)
        )

    def decode_refresh(self, token: str) -> RefreshClaims:
        claims = self._decode(token, "refresh")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti.isdigit() or len(jti) > 19:
            raise AppError(E.TOKEN_INVALID)
        return RefreshClaims(int(claims["sub"]), int(claims["sid"]), int(jti))
