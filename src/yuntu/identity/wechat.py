"""WeChat website QR login (open platform, snsapi_login): client for the OAuth endpoints and the
login-session state machine.

pending --callback ok--> confirmed --first poll--> (tokens issued once)
pending --callback error--> failed;   pending past expires_at --> expired

Every transition is a conditional UPDATE (compare-and-set on the row), so concurrent callbacks
or polls cannot both win on PostgreSQL: the state is consumed once, tokens leave once."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import ColumnElement, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.identity import service
from yuntu.identity.tokens import random_secret, sha256_hex
from yuntu.kit.errors import AppError, E
from yuntu.kit.logging import get_logger
from yuntu.models.identity import (
    User,
    UserStatus,
    WechatIdentity,
    WechatLogin,
    WechatLoginStatus,
)
from yuntu.settings import Settings

log = get_logger("yuntu.wechat")
# errcodes that mean "the code is bad" (expired, reused, wrong appid) rather than "WeChat is down"
_CODE_ERRORS = {40029, 40163, 41008, 40030}
_UNFINISHED = (WechatLoginStatus.PENDING, WechatLoginStatus.SCANNED)
# Control characters (NUL breaks PostgreSQL text) and bidi overrides, as kit.text refuses on input.
_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_SECRET_IN_URL = re.compile(r"([?&]secret=)[^&\s\"']*")


class _RedactAppSecret(logging.Filter):
    """httpx logs every request URL at INFO; WeChat wants the app secret in the query string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args and isinstance(record.args, tuple):
            record.args = tuple(
                _SECRET_IN_URL.sub(r"\1[redacted]", str(arg))
                if isinstance(arg, httpx.URL | str)
                else arg
                for arg in record.args
            )
        return True


def _redact_http_logs() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactAppSecret) for f in logger.filters):
        logger.addFilter(_RedactAppSecret())


class WechatError(Exception):
    def __init__(self, errcode: int, errmsg: str) -> None:
        super().__init__(f"{errcode}: {errmsg}")
        self.errcode = errcode
        self.errmsg = errmsg


@dataclass(frozen=True, slots=True)
class WechatProfile:
    openid: str
    unionid: str | None
    nickname: str | None
    avatar_url: str | None


class WechatClient:
    """Speaks https://api.weixin.qq.com/sns/* (base URL from settings)."""

    def __init__(
        self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        assert settings.wechat_app_id and settings.wechat_app_secret
        self.app_id = settings.wechat_app_id
        self._secret = settings.wechat_app_secret.get_secret_value()
        _redact_http_logs()
        self._http = httpx.AsyncClient(
            base_url=settings.wechat_api_base.rstrip("/"),
            timeout=settings.wechat_timeout_seconds,
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        try:
            response = await self._http.get(path, params=params)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("wechat_unreachable", path=path, error=type(exc).__name__)
            raise AppError(E.UPSTREAM_ERROR) from None
        if not isinstance(body, dict):
            raise AppError(E.UPSTREAM_ERROR)
        errcode = body.get("errcode")
        if errcode not in (None, 0):
            if not isinstance(errcode, int) or isinstance(errcode, bool):
                raise AppError(E.UPSTREAM_ERROR)
            log.warning("wechat_error", path=path, errcode=errcode)
            raise WechatError(errcode, str(body.get("errmsg", "")))
        return body

    async def exchange_code(self, code: str) -> tuple[str, str, str | None]:
        """(access_token, openid, unionid) for an authorization code."""
        body = await self._get(
            "/sns/oauth2/access_token",
            {
                "appid": self.app_id,
                "secret": self._secret,
                "code": code,
                "grant_type": "authorization_code",
            },
        )
        token, openid = body.get("access_token"), body.get("openid")
        if not isinstance(token, str) or not isinstance(openid, str) or not openid:
            raise AppError(E.UPSTREAM_ERROR)
        unionid = body.get("unionid")
        return token, openid, unionid if isinstance(unionid, str) and unionid else None

    async def userinfo(self, access_token: str, openid: str) -> dict[str, Any]:
        return await self._get(
            "/sns/userinfo", {"access_token": access_token, "openid": openid, "lang": "zh_CN"}
        )

    async def profile(self, code: str) -> WechatProfile:
        token, openid, unionid = await self.exchange_code(code)
        info = await self.userinfo(token, openid)
        if info.get("openid") not in (None, openid):
            raise AppError(E.UPSTREAM_ERROR)  # never trust a mismatched third-party answer
        unionid = unionid or (info.get("unionid") if isinstance(info.get("unionid"), str) else None)
        nickname = info.get("nickname") if isinstance(info.get("nickname"), str) else None
        nickname = _UNSAFE_CHARS.sub("", nickname).strip() if nickname else None
        avatar = info.get("headimgurl") if isinstance(info.get("headimgurl"), str) else None
        if avatar and not avatar.startswith("https://"):
            avatar = None
        return WechatProfile(
            openid=openid[:128],
            unionid=unionid[:128] if unionid else None,
            nickname=(nickname or "")[:64] or None,
            avatar_url=(avatar or "")[:1024] or None,
        )


def qr_url(settings: Settings, state: str) -> str:
    query = urlencode(
        {
            "appid": settings.wechat_app_id,
            "redirect_uri": settings.wechat_redirect_uri,
            "response_type": "code",
            "scope": "snsapi_login",
            "state": state,
        }
    )
    return f"{settings.wechat_connect_url}?{query}#wechat_redirect"


def require_enabled(settings: Settings) -> None:
    if not settings.wechat_enabled:
        # The catalogue's message, so Accept-Language is honoured.
        raise AppError(E.FEATURE_NOT_CONFIGURED, details={"feature": "wechat_login"})


async def start(session: AsyncSession, settings: Settings, ip: str) -> tuple[str, str, int]:
    """(session_id for the browser, qrconnect URL, seconds until expiry)."""
    require_enabled(settings)
    session_id, state = random_secret(24), random_secret(24)
    ttl = settings.wechat_session_ttl_seconds
    session.add(
        WechatLogin(
            session_hash=sha256_hex(session_id),
            state_hash=sha256_hex(state),
            ip=ip[:64],
            expires_at=service.now_utc() + timedelta(seconds=ttl),
        )
    )
    await session.flush()
    return session_id, qr_url(settings, state), ttl


async def _find_identity(session: AsyncSession, profile: WechatProfile) -> WechatIdentity | None:
    """The unionid is the key across the open platform's apps; the openid when there is none."""
    if profile.unionid:
        identity = await session.scalar(
            select(WechatIdentity).where(WechatIdentity.unionid == profile.unionid)
        )
        if identity is not None:
            return identity
    return await session.scalar(
        select(WechatIdentity).where(WechatIdentity.openid == profile.openid)
    )


async def _find_or_create_user(session: AsyncSession, profile: WechatProfile) -> User:
    identity = await _find_identity(session, profile)
    if identity is None:
        try:
            # A savepoint: when a concurrent first login of the same person wins the unique
            # openid/unionid, undo only our user and identity and take theirs.
            async with session.begin_nested():
                user = await service.create_guest_user(session, "wx", nickname=profile.nickname)
                user.avatar_url = profile.avatar_url
                session.add(
                    WechatIdentity(
                        user_id=user.id,
                        openid=profile.openid,
                        unionid=profile.unionid,
                        nickname=profile.nickname,
                        avatar_url=profile.avatar_url,
                    )
                )
                await session.flush()
            return user
        except IntegrityError:
            identity = await _find_identity(session, profile)
            if identity is None:
                raise AppError(E.CONFLICT) from None
    identity.nickname = profile.nickname or identity.nickname
    identity.avatar_url = profile.avatar_url or identity.avatar_url
    if profile.unionid and not identity.unionid:
        identity.unionid = profile.unionid
    return await session.get_one(User, identity.user_id)


async def _transition(
    session: AsyncSession,
    login: WechatLogin,
    condition: ColumnElement[bool],
    **values: Any,
) -> bool:
    """Compare-and-set on the login row; False when another request changed it first. Either
    way `login` is reloaded with what the row holds now."""
    result = await session.execute(
        update(WechatLogin)
        .where(WechatLogin.id == login.id, condition)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(login)
    return result.rowcount == 1  # type: ignore[attr-defined]


async def _consume_state(
    session: AsyncSession, login: WechatLogin, now: datetime, **values: Any
) -> None:
    """Spend the single-use state, recording the outcome; a state spent meanwhile is refused."""
    spent = await _transition(
        session,
        login,
        WechatLogin.state_used_at.is_(None) & WechatLogin.status.in_(_UNFINISHED),
        state_used_at=now,
        **values,
    )
    if not spent:
        raise AppError(E.WECHAT_STATE_INVALID)


async def callback(
    session: AsyncSession, settings: Settings, client: WechatClient, code: str, state: str
) -> WechatLogin:
    """Consume the single-use state, exchange the code, find or create the user."""
    require_enabled(settings)
    login = await session.scalar(
        select(WechatLogin).where(WechatLogin.state_hash == sha256_hex(state))
    )
    now = service.now_utc()
    if login is None or login.state_used_at is not None or login.status not in _UNFINISHED:
        raise AppError(E.WECHAT_STATE_INVALID)
    if login.expires_at <= now:
        await _consume_state(session, login, now, status=WechatLoginStatus.EXPIRED)
        raise AppError(E.WECHAT_STATE_INVALID, commit=True)
    try:
        profile = await client.profile(code)
    except WechatError as exc:
        await _consume_state(
            session,
            login,
            service.now_utc(),
            status=WechatLoginStatus.FAILED,
            error=f"{exc.errcode} {exc.errmsg}"[:200],
        )
        spec = E.WECHAT_CODE_INVALID if exc.errcode in _CODE_ERRORS else E.UPSTREAM_ERROR
        raise AppError(spec, details={"errcode": exc.errcode}, commit=True) from None
    except AppError as exc:
        await _consume_state(
            session, login, service.now_utc(), status=WechatLoginStatus.FAILED, error=exc.spec.name
        )
        exc.commit = True
        raise
    user = await _find_or_create_user(session, profile)
    if user.status != UserStatus.ACTIVE:
        await _consume_state(
            session,
            login,
            service.now_utc(),
            status=WechatLoginStatus.FAILED,
            error=E.ACCOUNT_DISABLED.name,
            user_id=user.id,
        )
        raise AppError(E.ACCOUNT_DISABLED, commit=True)
    await _consume_state(
        session, login, service.now_utc(), status=WechatLoginStatus.CONFIRMED, user_id=user.id
    )
    return login


async def poll(
    session: AsyncSession, rt: service.AuthRuntime, client_info: service.Client, session_id: str
) -> tuple[WechatLogin, service.IssuedTokens | None]:
    login = await session.scalar(
        select(WechatLogin).where(WechatLogin.session_hash == sha256_hex(session_id))
    )
    if login is None:
        raise AppError(E.NOT_FOUND)
    now = service.now_utc()
    if login.status in _UNFINISHED and login.expires_at <= now:
        # Unless a callback finished it meanwhile.
        await _transition(
            session, login, WechatLogin.status.in_(_UNFINISHED), status=WechatLoginStatus.EXPIRED
        )
    if login.status != WechatLoginStatus.CONFIRMED or login.tokens_issued_at is not None:
        return login, None
    user = await session.get_one(User, login.user_id)
    service.ensure_active(user)
    # Tokens leave exactly once, to the holder of session_id; a second poll gets none.
    if not await _transition(
        session, login, WechatLogin.tokens_issued_at.is_(None), tokens_issued_at=now
    ):
        return login, None
    return login, await service.open_session(session, rt, user, "wechat", client_info)
