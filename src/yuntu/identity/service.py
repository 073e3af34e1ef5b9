"""Identity service: registration, login, token rotation, sessions and profiles.

Services flush, never commit: the request harness owns the transaction."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.identity import passwords
from yuntu.identity.authcache import AuthCache
from yuntu.identity.tokens import AccessClaims, TokenCodec, sha256_hex
from yuntu.identity.validation import (
    identifier_kind,
    invalid,
    normalize_email,
    normalize_phone,
    normalize_username,
)
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.kit.ratelimit import RateLimiter, too_many
from yuntu.models.identity import (
    AuthSession,
    Device,
    RefreshToken,
    User,
    UserRole,
    UserStatus,
)
from yuntu.settings import Settings


@dataclass(frozen=True, slots=True)
class Client:
    ip: str
    user_agent: str | None


@dataclass(slots=True)
class AuthRuntime:
    settings: Settings
    codec: TokenCodec
    limiter: RateLimiter
    cache: AuthCache | None = None


@dataclass(slots=True)
class IssuedTokens:
    user: User
    session: AuthSession
    access_token: str
    refresh_token: str
    expires_in: int
    refresh_expires_in: int


def now_utc() -> datetime:
    return datetime.now(UTC)


# ---- users -------------------------------------------------------------------------------------


async def _ensure_unique(
    session: AsyncSession,
    user_id: int | None,
    *,
    username_key: str | None,
    email_key: str | None,
    phone: str | None,
) -> None:
    checks = (
        (User.username_key, username_key, E.USERNAME_TAKEN),
        (User.email_key, email_key, E.EMAIL_TAKEN),
        (User.phone, phone, E.PHONE_TAKEN),
    )
    for column, value, spec in checks:
        if value is None:
            continue
        stmt = select(User.id).where(column == value)
        if user_id is not None:
            stmt = stmt.where(User.id != user_id)
        if await session.scalar(stmt.limit(1)) is not None:
            raise AppError(spec)


async def _flush_unique(session: AsyncSession) -> None:
    """Flush, turning a lost uniqueness race into the same 409 the pre-check gives."""
    try:
        await session.flush()
    except IntegrityError as exc:
        text = str(exc.orig).lower()
        spec = (
            E.EMAIL_TAKEN
            if "email" in text
            else E.PHONE_TAKEN
            if "phone" in text
            else E.USERNAME_TAKEN
            if "username" in text
            else E.CONFLICT
        )
        raise AppError(spec) from None


async def create_user(
    session: AsyncSession,
    *,
    username: str | None,
    email: str | None,
    phone: str | None,
    password: str | None,
    nickname: str | None = None,
    role: str = UserRole.USER,
) -> User:
    name = key = email_display = email_key = phone_norm = None
    if username:
        name, key = normalize_username(username)
    if email:
        email_display, email_key = normalize_email(email)
    if phone:
        phone_norm = normalize_phone(phone)
    if not (name or email_display or phone_norm):
        raise invalid("username", "give at least one of username, email or phone")
    password_hash = None
    if password is not None:
        problem = passwords.password_problem(
            password, [name, email_display, phone_norm, (email_display or "").split("@")[0]]
        )
        if problem:
            raise AppError(
                E.WEAK_PASSWORD, details=[{"field": "body.password", "message": problem}]
            )
        password_hash = await passwords.hash_password(password)
    await _ensure_unique(session, None, username_key=key, email_key=email_key, phone=phone_norm)
    user = User(
        username=name,
        username_key=key,
        email=email_display,
        email_key=email_key,
        phone=phone_norm,
        password_hash=password_hash,
        nickname=nickname or name,
        role=role,
    )
    session.add(user)
    await _flush_unique(session)
    return user


async def create_guest_user(
    session: AsyncSession, prefix: str, nickname: str | None = None
) -> User:
    """A user created without credentials (device or WeChat login) gets a generated username."""
    user_id = new_id()
    name = f"{prefix}_{_base36(user_id)}"
    user = User(id=user_id, username=name, username_key=name.casefold(), nickname=nickname or name)
    session.add(user)
    await _flush_unique(session)
    return user


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while number:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
    return out or "0"


async def find_by_identifier(session: AsyncSession, identifier: str) -> User | None:
    kind = identifier_kind(identifier)
    if kind == "email":
        stmt = select(User).where(User.email_key == identifier.strip().casefold())
    elif kind == "phone":
        phone = re.sub(r"[\s\-()]", "", identifier)
        # An all-digit identifier is a phone number; usernames may not be only digits.
        stmt = select(User).where(User.phone == phone)
    else:
        import unicodedata

        key = unicodedata.normalize("NFC", identifier.strip()).casefold()
        stmt = select(User).where(User.username_key == key)
    return await session.scalar(stmt)


def ensure_active(user: User) -> None:
    if user.status != UserStatus.ACTIVE:
        raise AppError(E.ACCOUNT_DISABLED)


# ---- sessions and tokens -----------------------------------------------------------------------


async def open_session(
    session: AsyncSession, rt: AuthRuntime, user: User, method: str, client: Client
) -> IssuedTokens:
    now = now_utc()
    auth_session = AuthSession(
        user_id=user.id,
        method=method,
        ip=client.ip[:64],
        user_agent=(client.user_agent or "")[:256] or None,
        created_at=now,
        last_used_at=now,
        expires_at=now + timedelta(seconds=rt.settings.refresh_token_ttl_seconds),
    )
    session.add(auth_session)
    user.last_login_at = now
    await session.flush()
    return await _issue(session, rt, user, auth_session, parent_id=None, now=now)


async def _issue(
    session: AsyncSession,
    rt: AuthRuntime,
    user: User,
    auth_session: AuthSession,
    parent_id: int | None,
    now: datetime,
) -> IssuedTokens:
    token_id = new_id()
    refresh = rt.codec.issue_refresh(user.id, auth_session.id, token_id, now)
    session.add(
        RefreshToken(
            id=token_id,
            session_id=auth_session.id,
            parent_id=parent_id,
            token_hash=sha256_hex(refresh),
            created_at=now,
            expires_at=now + timedelta(seconds=rt.settings.refresh_token_ttl_seconds),
        )
    )
    await session.flush()
    return IssuedTokens(
        user=user,
        session=auth_session,
        access_token=rt.codec.issue_access(user.id, auth_session.id, now),
        refresh_token=refresh,
        expires_in=rt.settings.access_token_ttl_seconds,
        refresh_expires_in=rt.settings.refresh_token_ttl_seconds,
    )


async def register(
    session: AsyncSession,
    rt: AuthRuntime,
    client: Client,
    *,
    username: str | None,
    email: str | None,
    phone: str | None,
    password: str,
    nickname: str | None,
) -> IssuedTokens:
    await rt.limiter.enforce(rt.settings.register_max_per_address, 3600, f"register:ip:{client.ip}")
    user = await create_user(
        session, username=username, email=email, phone=phone, password=password, nickname=nickname
    )
    return await open_session(session, rt, user, "password", client)


async def login_password(
    session: AsyncSession, rt: AuthRuntime, client: Client, identifier: str, password: str
) -> IssuedTokens:
    limit, window = rt.settings.login_max_failures, rt.settings.login_window_seconds
    account_key = f"login:acct:{identifier.strip().casefold()[:254]}"
    address_key = f"login:ip:{client.ip}"
    wait = await rt.limiter.retry_after(limit, window, account_key, address_key)
    if wait is not None:
        raise too_many(wait, limit)
    user = await find_by_identifier(session, identifier)
    valid, new_hash = await passwords.verify_password(
        password, user.password_hash if user else None
    )
    if user is None or not valid:
        await rt.limiter.hit(limit, window, account_key, address_key)
        raise AppError(E.INVALID_CREDENTIALS)
    ensure_active(user)
    await rt.limiter.clear(limit, window, account_key)
    if new_hash:
        user.password_hash = new_hash
    return await open_session(session, rt, user, "password", client)


async def login_device(
    session: AsyncSession, rt: AuthRuntime, client: Client, device_id: str
) -> IssuedTokens:
    device = await session.scalar(select(Device).where(Device.device_id == device_id))
    if device is None:
        await rt.limiter.enforce(
            rt.settings.register_max_per_address, 3600, f"register:ip:{client.ip}"
        )
        user = await create_guest_user(session, "device")
        device = Device(device_id=device_id, user_id=user.id)
        session.add(device)
        try:
            await session.flush()
        except IntegrityError:
            raise AppError(E.CONFLICT, message="device registered concurrently; retry") from None
    else:
        user = await session.get_one(User, device.user_id)
        ensure_active(user)
        device.last_seen_at = now_utc()
    return await open_session(session, rt, user, "device", client)


async def refresh(
    session: AsyncSession, rt: AuthRuntime, client: Client, token: str
) -> IssuedTokens:
    claims = rt.codec.decode_refresh(token)
    row = await session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == sha256_hex(token))
    )
    if row is None or row.id != claims.token_id or row.session_id != claims.session_id:
        raise AppError(E.TOKEN_INVALID)
    now = now_utc()
    # Rotate with a conditional update so two concurrent refreshes cannot both succeed.
    result = await session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.id == row.id,
            RefreshToken.superseded_at.is_(None),
            RefreshToken.revoked_at.is_(None),
        )
        .values(superseded_at=now)
    )
    auth_session = await session.get_one(AuthSession, row.session_id)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        await session.refresh(row)
        if row.superseded_at is None:  # revoked by logout or suspension, never rotated
            raise AppError(E.SESSION_REVOKED)
        # A rotated token came back: assume it was stolen, kill the whole family.
        await revoke_family(session, auth_session, "reuse_detected", now)
        raise AppError(E.TOKEN_REUSED, commit=True)
    if auth_session.revoked_at is not None or auth_session.expires_at <= now:
        raise AppError(E.SESSION_REVOKED)
    user = await session.get_one(User, auth_session.user_id)
    ensure_active(user)
    auth_session.last_used_at = now
    auth_session.ip = client.ip[:64]
    return await _issue(session, rt, user, auth_session, parent_id=row.id, now=now)


async def revoke_family(
    session: AsyncSession, auth_session: AuthSession, reason: str, now: datetime | None = None
) -> None:
    now = now or now_utc()
    if auth_session.revoked_at is None:
        auth_session.revoked_at = now
        auth_session.revoked_reason = reason
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.session_id == auth_session.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    await session.flush()


async def revoke_user_sessions(
    session: AsyncSession, user_id: int, reason: str, keep_session_id: int | None = None
) -> int:
    stmt = select(AuthSession).where(
        AuthSession.user_id == user_id, AuthSession.revoked_at.is_(None)
    )
    if keep_session_id is not None:
        stmt = stmt.where(AuthSession.id != keep_session_id)
    sessions = (await session.scalars(stmt)).all()
    now = now_utc()
    for auth_session in sessions:
        await revoke_family(session, auth_session, reason, now)
    return len(sessions)


async def logout(
    session: AsyncSession,
    rt: AuthRuntime,
    user: User,
    current_session_id: int,
    refresh_token: str | None,
    everything: bool,
) -> int:
    if everything:
        return await revoke_user_sessions(session, user.id, "logout_all")
    target_id = current_session_id
    if refresh_token:
        claims = rt.codec.decode_refresh(refresh_token)
        row = await session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == sha256_hex(refresh_token))
        )
        # Another user's token is treated exactly like an unknown one.
        if row is None or claims.user_id != user.id:
            raise AppError(E.TOKEN_INVALID)
        target_id = row.session_id
    auth_session = await session.get(AuthSession, target_id)
    if auth_session is None or auth_session.user_id != user.id or auth_session.revoked_at:
        return 0
    await revoke_family(session, auth_session, "logout")
    return 1


async def list_sessions(session: AsyncSession, user_id: int) -> list[AuthSession]:
    stmt = (
        select(AuthSession)
        .where(
            AuthSession.user_id == user_id,
            AuthSession.revoked_at.is_(None),
            AuthSession.expires_at > now_utc(),
        )
        .order_by(AuthSession.last_used_at.desc())
        .limit(200)
    )
    return list((await session.scalars(stmt)).all())


async def revoke_session(session: AsyncSession, user_id: int, session_id: int) -> None:
    auth_session = await session.get(AuthSession, session_id)
    if auth_session is None or auth_session.user_id != user_id or auth_session.revoked_at:
        raise AppError(E.NOT_FOUND)
    await revoke_family(session, auth_session, "user_revoked")


async def authenticate_access(
    session: AsyncSession, rt: AuthRuntime, token: str, *, cached: bool = False
) -> tuple[User, AccessClaims]:
    """The active user behind an access token whose session is still alive. `cached` (read-only
    requests only: the user may be shared between them) may answer from the session cache."""
    claims = rt.codec.decode_access(token)
    cache = rt.cache if cached else None
    if cache is not None:
        hit = cache.get(claims.session_id, claims.user_id)
        if hit is not None:
            return hit, claims
    row = (
        await session.execute(
            select(User, AuthSession.revoked_at)
            .join(AuthSession, AuthSession.user_id == User.id)
            .where(User.id == claims.user_id, AuthSession.id == claims.session_id)
        )
    ).first()
    if row is None:
        raise AppError(E.TOKEN_INVALID)
    user, revoked_at = row
    if revoked_at is not None:
        raise AppError(E.SESSION_REVOKED)
    if user.status != UserStatus.ACTIVE:
        raise AppError(E.ACCOUNT_DISABLED)
    if cache is not None:
        cache.put(claims.session_id, user)
    return user, claims


# ---- profile -----------------------------------------------------------------------------------


async def update_profile(session: AsyncSession, user: User, changes: dict[str, object]) -> User:
    """Validate and check every change first, then apply: a refused update changes nothing."""
    values: dict[str, str | None] = {}
    if changes.get("username") is not None:
        values["username"], values["username_key"] = normalize_username(str(changes["username"]))
    if changes.get("email") is not None:
        values["email"], values["email_key"] = normalize_email(str(changes["email"]))
    if changes.get("phone") is not None:
        values["phone"] = normalize_phone(str(changes["phone"]))
    if changes.get("nickname") is not None:
        values["nickname"] = str(changes["nickname"])
    if "avatar_url" in changes:
        url = changes["avatar_url"]
        if url is not None and not str(url).startswith(("https://", "http://")):
            raise invalid("avatar_url", "must be an http(s) URL")
        values["avatar_url"] = None if url is None else str(url)
    with session.no_autoflush:
        await _ensure_unique(
            session,
            user.id,
            username_key=values.get("username_key"),
            email_key=values.get("email_key"),
            phone=values.get("phone"),
        )
    for key, value in values.items():
        setattr(user, key, value)
    user.updated_at = now_utc()
    await _flush_unique(session)
    return user


async def change_password(
    session: AsyncSession, user: User, current_session_id: int, current: str | None, new: str
) -> int:
    if user.password_hash:
        valid, _ = await passwords.verify_password(current or "", user.password_hash)
        if not valid:
            raise AppError(E.INVALID_CREDENTIALS)
    problem = passwords.password_problem(new, [user.username, user.email, user.phone])
    if problem:
        raise AppError(
            E.WEAK_PASSWORD, details=[{"field": "body.new_password", "message": problem}]
        )
    user.password_hash = await passwords.hash_password(new)
    user.updated_at = now_utc()
    return await revoke_user_sessions(
        session, user.id, "password_changed", keep_session_id=current_session_id
    )
