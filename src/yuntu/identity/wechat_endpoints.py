"""WeChat QR login endpoints: /wechat/qrcode, /wechat/poll/{session_id}, /wechat/callback."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from yuntu.identity import wechat
from yuntu.identity.deps import ClientInfo, DbSession, Runtime
from yuntu.identity.endpoints import token_pair
from yuntu.identity.schemas import TokenPair
from yuntu.kit.errors import AppError, E
from yuntu.kit.http import writes
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope

router = make_router(prefix="/wechat", tags=["wechat"], responses=error_responses(503))

Code = Annotated[str, Field(min_length=1, max_length=512, pattern=r"^[A-Za-z0-9_\-]+$")]
State = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]


class QrCodeOut(BaseModel):
    session_id: str = Field(
        description="Secret handle for polling; keep it in the page",
        examples=["q1W2e3R4t5Y6u7I8o9P0aSdFgHjKl"],
    )
    qr_url: str = Field(examples=["https://open.weixin.qq.com/connect/qrconnect?appid=wx123&..."])
    expires_in: int = Field(examples=[300])


class PollOut(BaseModel):
    status: Literal["pending", "scanned", "confirmed", "failed", "expired"]
    tokens: TokenPair | None = Field(default=None, description="Only on the first confirmed poll")


class CallbackIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"code": "061abc", "state": "xyz"}]}
    )
    code: Code
    state: State


class CallbackOut(BaseModel):
    status: Literal["confirmed"]
    message: str = Field(examples=["Return to the page that showed the QR code"])


def _client(request: Request) -> wechat.WechatClient:
    client = getattr(request.app.state, "wechat", None)
    if client is None:
        raise AppError(E.FEATURE_NOT_CONFIGURED, details={"feature": "wechat_login"})
    return client


@router.post("/qrcode", summary="Start a WeChat QR login", status_code=201)
async def qrcode(session: DbSession, rt: Runtime, client: ClientInfo) -> Envelope[QrCodeOut]:
    """Returns the real qrconnect URL (appid, redirect_uri, response_type=code,
    scope=snsapi_login, single-use state) and a session id to poll."""
    await rt.limiter.enforce(60, 3600, f"wechat:qr:{client.ip}")
    session_id, url, ttl = await wechat.start(session, rt.settings, client.ip)
    return Envelope(data=QrCodeOut(session_id=session_id, qr_url=url, expires_in=ttl))


@router.get(
    "/poll/{session_id}", summary="Poll a WeChat QR login", responses=error_responses(401, 404)
)
@writes
async def poll(
    session_id: Annotated[str, Path(min_length=16, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")],
    session: DbSession,
    rt: Runtime,
    client: ClientInfo,
) -> Envelope[PollOut]:
    """pending | scanned | confirmed (tokens on the first confirmed poll only) | failed |
    expired."""
    login, issued = await wechat.poll(session, rt, client, session_id)
    return Envelope(
        data=PollOut(
            status=login.status,  # type: ignore[arg-type]
            tokens=token_pair(issued) if issued else None,
        )
    )


async def _callback(
    request: Request, session: DbSession, rt: Runtime, code: str, state: str
) -> Envelope[CallbackOut]:
    await wechat.callback(session, rt.settings, _client(request), code, state)
    return Envelope(
        data=CallbackOut(status="confirmed", message="Return to the page that showed the QR code")
    )


@router.get("/callback", summary="WeChat redirect target", responses=error_responses(401, 409, 502))
@writes
async def callback_get(
    request: Request,
    session: DbSession,
    rt: Runtime,
    code: Annotated[Code, Query()],
    state: Annotated[State, Query()],
) -> Envelope[CallbackOut]:
    """WeChat redirects the browser here with `code` and `state`. The state is single-use; the
    tokens go to the polling page, never into this URL."""
    return await _callback(request, session, rt, code, state)


@router.post("/callback", summary="Submit a WeChat code", responses=error_responses(401, 409, 502))
async def callback_post(
    body: CallbackIn, request: Request, session: DbSession, rt: Runtime
) -> Envelope[CallbackOut]:
    return await _callback(request, session, rt, body.code, body.state)
