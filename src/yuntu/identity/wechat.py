"""WeChat website QR login (open platform, snsapi_login): client for the OAuth endpoints and the
login-session state machine.

pending --callback ok--> confirmed --first poll--> (tokens issued once)
pending --callback error--> failed;   any unfinished state past expires_at --> expired"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.identity import service
from yuntu.identity.tokens import random_secret, sha256_hex
from yuntu.kit.errors import AppError, E
from yuntu.kit.logging import get_logger
from yuntu.models.identity import User, WechatIdentity, WechatLogin, WechatLoginStatus
from yuntu.settings import Settings

log = get_logger("yuntu.wechat")
# errcodes that mean "the code is bad" (expired, reused, wrong appid) rather than "WeChat is down"
_CODE_ERRORS = {40029, 40163, 41008, 40030}


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
        if body.get("errcode"):
            raise WechatError(int(body["errcode"]), str(body.get("errmsg", "")))
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
        raise AppError(
            E.FEATURE_NOT_CONFIGURED, message="WeChat login is not configured on this server"
        )


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


async def _find_or_create_user(session: AsyncSession, profile: WechatProfile) -> User:
    identity = None
    if profile.unionid:
        identity = await session.scalar(
            select(WechatIdentity).where(WechatIdentity.unionid == profile.unionid)
        )
    if identity is None:
        identity = await session.scalar(
            select(WechatIdentity).where(WechatIdentity.openid == profile.openid)
        )
    if identity is not None:
        identity.nickname = profile.nickname or identity.nickname
        identity.avatar_url = profile.avatar_url or identity.avatar_url
        if profile.unionid and not identity.unionid:
            identity.unionid = profile.unionid
        return await session.get_one(User, identity.user_id)
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


async def callback(
    session: AsyncSession, settings: Settings, client: WechatClient, code: str, state: str
) -> WechatLogin:
    """Consume the single-use state, exchange the code, find or create the user."""
    require_enabled(settings)
    login = await session.scalar(
        select(WechatLogin).where(WechatLogin.state_hash == sha256_hex(state))
    )
    now = service.now_utc()
    if login is None or login.state_used_at is not None:
        raise AppError(E.WECHAT_STATE_INVALID)
    login.state_used_at = now
    if login.expires_at <= now:
        login.status = WechatLoginStatus.EXPIRED
        raise AppError(E.WECHAT_STATE_INVALID, commit=True)
    login.status = WechatLoginStatus.SCANNED
    try:
        profile = await client.profile(code)
    except WechatError as exc:
        login.status = WechatLoginStatus.FAILED
        login.error = f"{exc.errcode} {exc.errmsg}"[:200]
        spec = E.WECHAT_CODE_INVALID if exc.errcode in _CODE_ERRORS else E.UPSTREAM_ERROR
        raise AppError(spec, details={"errcode": exc.errcode}, commit=True) from None
    except AppError as exc:
        login.status = WechatLoginStatus.FAILED
        login.error = exc.spec.name
        exc.commit = True
        raise
    user = await _find_or_create_user(session, profile)
    service.ensure_active(user)
    login.user_id = user.id
    login.status = WechatLoginStatus.CONFIRMED
    await session.flush()
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
    if (
        login.status in (WechatLoginStatus.PENDING, WechatLoginStatus.SCANNED)
        and login.expires_at <= now
    ):
        login.status = WechatLoginStatus.EXPIRED
    if login.status != WechatLoginStatus.CONFIRMED or login.tokens_issued_at is not None:
        return login, None
    # Tokens leave exactly once, to the holder of session_id; a second poll gets none.
    login.tokens_issued_at = now
    user = await session.get_one(User, login.user_id)
    service.ensure_active(user)
    return login, await service.open_session(session, rt, user, "wechat", client_info)
