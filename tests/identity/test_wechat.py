"""WeChat website QR login, end to end against a local server that speaks WeChat's documented
OAuth contract (tests/support/wechat_server.py): qrcode -> scan -> callback -> poll -> tokens."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from tests.conftest import API, bearer
from tests.support.wechat_server import FakeWechat
from yuntu.identity.service import now_utc
from yuntu.models.identity import AuthSession, User, WechatIdentity, WechatLogin

pytestmark = pytest.mark.anyio

REDIRECT_URI = "https://yuntu.example.com/api/v1/wechat/callback?from=qr"
ERROR_KEYS = {"code", "message", "error", "data", "details"}


# ---- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def wechat() -> Iterator[FakeWechat]:
    with FakeWechat() as server:
        yield server


@pytest.fixture
def wechat_timeout() -> float:
    return 5.0


@pytest.fixture
def settings_overrides(wechat: FakeWechat, wechat_timeout: float) -> dict[str, Any]:
    return {
        "wechat_app_id": wechat.app_id,
        "wechat_app_secret": wechat.app_secret,
        "wechat_redirect_uri": REDIRECT_URI,
        "wechat_api_base": wechat.base_url,
        "wechat_timeout_seconds": wechat_timeout,
    }


@pytest.fixture
async def client(client: httpx.AsyncClient, wechat: FakeWechat) -> AsyncIterator[httpx.AsyncClient]:
    """The app client, recording every response: the app secret must never appear in one."""
    seen: list[httpx.Response] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        seen.append(response)

    client.event_hooks["response"].append(record)
    yield client
    for response in seen:
        assert wechat.app_secret not in response.text, response.request.url
        assert wechat.app_secret not in str(response.headers)


# ---- helpers -----------------------------------------------------------------------------------


def assert_error(response: httpx.Response, status: int, name: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS, body
    assert body["error"] == name
    assert body["data"] is None
    assert body["code"] // 1000 == status
    assert isinstance(body["message"], str) and body["message"]
    return body


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == 0 and body["message"] == "success"
    return body["data"]


async def start_login(client: httpx.AsyncClient) -> tuple[str, str]:
    """(session_id, state) of a fresh QR login."""
    data = ok(await client.post(f"{API}/wechat/qrcode"), 201)
    state = parse_qs(urlsplit(data["qr_url"]).query)["state"][0]
    return data["session_id"], state


async def poll(client: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    return ok(await client.get(f"{API}/wechat/poll/{session_id}"))


async def call_back(
    client: httpx.AsyncClient, code: str, state: str, method: str = "GET", **headers: str
) -> httpx.Response:
    if method == "GET":
        return await client.get(
            f"{API}/wechat/callback", params={"code": code, "state": state}, headers=headers
        )
    return await client.post(
        f"{API}/wechat/callback", json={"code": code, "state": state}, headers=headers
    )


async def login(
    client: httpx.AsyncClient, wechat: FakeWechat, method: str = "GET", **scan: Any
) -> dict[str, Any]:
    """The whole flow; returns the token pair from the first confirmed poll."""
    session_id, state = await start_login(client)
    code = wechat.scan(**scan)
    data = ok(await call_back(client, code, state, method))
    assert data["status"] == "confirmed"
    result = await poll(client, session_id)
    assert result["status"] == "confirmed" and result["tokens"] is not None
    return result["tokens"]


async def count(app: FastAPI, model: Any) -> int:
    async with app.state.db.sessionmaker() as session:
        return await session.scalar(select(func.count()).select_from(model))


async def db_execute(app: FastAPI, statement: Any) -> None:
    async with app.state.db.transaction() as session:
        await session.execute(statement)


async def expire_all_logins(app: FastAPI) -> None:
    """Move time: every QR login's expiry is now in the past."""
    await db_execute(app, update(WechatLogin).values(expires_at=now_utc() - timedelta(seconds=1)))


# ---- the QR code -------------------------------------------------------------------------------


async def test_qrcode_is_a_real_qrconnect_url(client, wechat):
    response = await client.post(f"{API}/wechat/qrcode")
    data = ok(response, 201)
    assert set(data) == {"session_id", "qr_url", "expires_in"}
    assert data["expires_in"] == 300

    url = urlsplit(data["qr_url"])
    assert (url.scheme, url.netloc, url.path) == (
        "https",
        "open.weixin.qq.com",
        "/connect/qrconnect",
    )
    assert url.fragment == "wechat_redirect"
    pairs = parse_qsl(url.query, keep_blank_values=True, strict_parsing=True)
    # The documented order: appid, redirect_uri, response_type, scope, state.
    assert [key for key, _ in pairs] == ["appid", "redirect_uri", "response_type", "scope", "state"]
    params = dict(pairs)
    assert params["appid"] == wechat.app_id
    assert params["redirect_uri"] == REDIRECT_URI
    assert "redirect_uri=https%3A%2F%2Fyuntu.example.com" in url.query  # urlencoded
    assert params["response_type"] == "code"
    assert params["scope"] == "snsapi_login"
    assert re.fullmatch(r"[A-Za-z0-9_\-]{16,128}", params["state"])
    assert params["state"] != data["session_id"]  # the page's handle is not what WeChat carries

    other = ok(await client.post(f"{API}/wechat/qrcode"), 201)
    assert other["session_id"] != data["session_id"]
    assert parse_qs(urlsplit(other["qr_url"]).query)["state"][0] != params["state"]
    assert wechat.requests == []  # nothing talks to WeChat before a scan


async def test_poll_is_pending_until_the_callback(client, wechat):
    session_id, _ = await start_login(client)
    for _ in range(2):
        assert await poll(client, session_id) == {"status": "pending", "tokens": None}


# ---- the happy path ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_callback_exchanges_the_code_and_poll_hands_out_tokens_once(
    client, app, wechat, method
):
    session_id, state = await start_login(client)
    code = wechat.scan(
        openid="o-alice",
        unionid="u-alice",
        nickname="小明🐱",
        headimgurl="https://thirdwx.qlogo.cn/mmopen/alice/132",
    )
    data = ok(await call_back(client, code, state, method))
    assert data["status"] == "confirmed"

    # The app spoke the documented contract: code exchange, then userinfo with that token.
    (exchange,) = wechat.requests_to("/sns/oauth2/access_token")
    assert exchange.method == "GET"
    assert exchange.params == {
        "appid": wechat.app_id,
        "secret": wechat.app_secret,
        "code": code,
        "grant_type": "authorization_code",
    }
    (info,) = wechat.requests_to("/sns/userinfo")
    assert info.params["openid"] == "o-alice"
    assert info.params["access_token"]

    first = await poll(client, session_id)
    assert first["status"] == "confirmed"
    tokens = first["tokens"]
    assert tokens["token_type"] == "Bearer"
    assert tokens["access_token"] and tokens["refresh_token"]
    user = tokens["user"]
    assert user["nickname"] == "小明🐱"
    assert user["avatar_url"] == "https://thirdwx.qlogo.cn/mmopen/alice/132"
    assert user["status"] == "active" and user["role"] == "user"
    assert isinstance(user["id"], str)

    # Exactly once: the next poll says confirmed without tokens.
    assert await poll(client, session_id) == {"status": "confirmed", "tokens": None}

    me = ok(await client.get(f"{API}/auth/me", headers=bearer(tokens)))
    assert me["id"] == user["id"] and me["nickname"] == "小明🐱"
    refreshed = ok(
        await client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    )
    assert refreshed["access_token"]

    assert await count(app, User) == 1
    assert await count(app, WechatIdentity) == 1
    async with app.state.db.sessionmaker() as session:
        methods = (await session.scalars(select(AuthSession.method))).all()
    assert methods == ["wechat"]


async def test_the_same_wechat_user_finds_the_same_account(client, app, wechat):
    first = await login(client, wechat, openid="o-bob", unionid="u-bob", nickname="Bob")
    again = await login(client, wechat, openid="o-bob", unionid="u-bob", nickname="Bob 2")
    assert again["user"]["id"] == first["user"]["id"]
    # The unionid is the key: another openid of the same person (another app) is the same user.
    other_app = await login(client, wechat, openid="o-bob-mobile", unionid="u-bob")
    assert other_app["user"]["id"] == first["user"]["id"]
    # Someone else is someone else.
    carol = await login(client, wechat, openid="o-carol", unionid="u-carol")
    assert carol["user"]["id"] != first["user"]["id"]
    assert await count(app, User) == 2

    # Apps without an open-platform binding get no unionid: the openid is the key then.
    lone = await login(client, wechat, openid="o-dave", unionid=None)
    lone_again = await login(client, wechat, openid="o-dave", unionid=None)
    assert lone_again["user"]["id"] == lone["user"]["id"]
    assert await count(app, User) == 3


async def test_profile_from_wechat_is_sanitized(client, wechat):
    tokens = await login(
        client,
        wechat,
        nickname="evil\x00\u202enick\x07" + "x" * 100,
        headimgurl="javascript:alert(1)",
    )
    user = tokens["user"]
    assert user["nickname"] == ("evilnick" + "x" * 100)[:64]
    assert user["avatar_url"] is None


# ---- state: single use, unknown, expired -------------------------------------------------------


async def test_replayed_state_is_refused(client, app, wechat):
    session_id, state = await start_login(client)
    ok(await call_back(client, wechat.scan(openid="o-1"), state))
    exchanges = len(wechat.requests_to("/sns/oauth2/access_token"))

    for method in ("GET", "POST"):
        response = await call_back(client, wechat.scan(openid="o-intruder"), state, method)
        assert_error(response, 400, "WECHAT_STATE_INVALID")
    # Refused before talking to WeChat, and nothing changed.
    assert len(wechat.requests_to("/sns/oauth2/access_token")) == exchanges
    assert await count(app, User) == 1
    result = await poll(client, session_id)
    assert result["status"] == "confirmed" and result["tokens"]["user"]["username"]


async def test_unknown_state_is_refused(client, app, wechat):
    await start_login(client)
    body = assert_error(
        await call_back(client, wechat.scan(), "a" * 32), 400, "WECHAT_STATE_INVALID"
    )
    assert body["message"] == "微信登录状态无效或已使用"  # zh-CN by default
    body = assert_error(
        await call_back(client, wechat.scan(), "b" * 32, "POST", **{"Accept-Language": "en"}),
        400,
        "WECHAT_STATE_INVALID",
    )
    assert "state" in body["message"]
    assert wechat.requests == []
    assert await count(app, User) == 0

    # Malformed input is a validation error in the same envelope, never a 500.
    for params in ({"code": "c", "state": "<script>"}, {"state": "abc"}, {"code": "x" * 600}):
        response = await client.get(f"{API}/wechat/callback", params=params)
        body = assert_error(response, 422, "VALIDATION_ERROR")
        assert body["details"]
    response = await client.post(
        f"{API}/wechat/callback", json={"code": "c", "state": "s", "extra": 1}
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_expired_session_polls_expired_and_its_callback_is_refused(client, app, wechat):
    session_id, state = await start_login(client)
    await expire_all_logins(app)
    assert await poll(client, session_id) == {"status": "expired", "tokens": None}
    assert_error(await call_back(client, wechat.scan(), state), 400, "WECHAT_STATE_INVALID")
    assert await poll(client, session_id) == {"status": "expired", "tokens": None}

    # Same when the callback comes first: refused, and the poll then says expired.
    session_id, state = await start_login(client)
    await expire_all_logins(app)
    assert_error(await call_back(client, wechat.scan(), state, "POST"), 400, "WECHAT_STATE_INVALID")
    assert await poll(client, session_id) == {"status": "expired", "tokens": None}
    assert wechat.requests == []
    assert await count(app, User) == 0


async def test_unknown_poll_id_is_404(client):
    body = assert_error(await client.get(f"{API}/wechat/poll/{'Z' * 32}"), 404, "NOT_FOUND")
    assert body["details"] is None
    assert_error(await client.get(f"{API}/wechat/poll/short"), 422, "VALIDATION_ERROR")


# ---- WeChat says no ----------------------------------------------------------------------------


async def test_invalid_code_fails_the_session(client, app, wechat):
    session_id, state = await start_login(client)
    body = assert_error(await call_back(client, "0" + "f" * 31, state), 400, "WECHAT_CODE_INVALID")
    assert body["details"] == {"errcode": 40029}
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}
    # The state was spent on the failed attempt: a good code cannot revive it.
    assert_error(await call_back(client, wechat.scan(), state), 400, "WECHAT_STATE_INVALID")
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}
    assert await count(app, User) == 0


async def test_reused_and_expired_codes_are_invalid(client, app, wechat):
    code = wechat.scan(openid="o-reuse")
    _, first_state = await start_login(client)
    ok(await call_back(client, code, first_state))

    session_id, state = await start_login(client)
    body = assert_error(await call_back(client, code, state), 400, "WECHAT_CODE_INVALID")
    assert body["details"] == {"errcode": 40163}
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}

    stale = wechat.scan(openid="o-slow")
    wechat.advance(601)  # codes live 10 minutes
    session_id, state = await start_login(client)
    body = assert_error(await call_back(client, stale, state, "POST"), 400, "WECHAT_CODE_INVALID")
    assert body["details"] == {"errcode": 40029}
    assert await count(app, User) == 1


async def test_wrong_app_secret_is_an_invalid_code(client, app, wechat):
    wechat.app_secret = "rotated-on-the-open-platform"
    session_id, state = await start_login(client)
    assert_error(await call_back(client, wechat.scan(), state), 400, "WECHAT_CODE_INVALID")
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}


@pytest.mark.parametrize("outage", ["http500", "not_json", "system_busy"])
@pytest.mark.parametrize("where", [None, "/sns/userinfo"])
async def test_wechat_outage_is_502_never_500(client, app, wechat, outage, where):
    wechat.outage, wechat.outage_path = outage, where
    session_id, state = await start_login(client)
    body = assert_error(await call_back(client, wechat.scan(), state), 502, "UPSTREAM_ERROR")
    assert wechat.app_secret not in str(body)
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}
    assert await count(app, User) == 0


@pytest.mark.parametrize("wechat_timeout", [0.3])
async def test_wechat_not_answering_is_502(client, app, wechat):
    wechat.outage, wechat.hang_seconds = "hang", 1.0
    session_id, state = await start_login(client)
    body = assert_error(await call_back(client, wechat.scan(), state), 502, "UPSTREAM_ERROR")
    assert wechat.app_secret not in str(body)
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}
    assert await count(app, User) == 0


async def test_wechat_unreachable_is_502(client, app, wechat):
    session_id, state = await start_login(client)
    code = wechat.scan()
    wechat.stop()  # connection refused
    assert_error(await call_back(client, code, state, "POST"), 502, "UPSTREAM_ERROR")
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}


@pytest.mark.parametrize(
    ("path", "answer"),
    [
        ("/sns/oauth2/access_token", {"errcode": "banana", "errmsg": "?"}),
        ("/sns/oauth2/access_token", {"access_token": "t"}),  # no openid
        ("/sns/oauth2/access_token", b"[1, 2, 3]"),
        ("/sns/userinfo", {"openid": "somebody-else", "nickname": "x"}),
        ("/sns/userinfo", {"errcode": 40001, "errmsg": "invalid credential"}),
        ("/sns/userinfo", {"errcode": 42001, "errmsg": "access_token expired"}),
    ],
)
async def test_nonsense_from_wechat_is_502(client, app, wechat, path, answer):
    wechat.script(path, answer)
    session_id, state = await start_login(client)
    assert_error(await call_back(client, wechat.scan(), state), 502, "UPSTREAM_ERROR")
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}
    assert await count(app, User) == 0


# ---- accounts and configuration ----------------------------------------------------------------


async def test_suspended_user_gets_no_tokens(client, app, wechat):
    tokens = await login(client, wechat, openid="o-eve", unionid="u-eve")
    await db_execute(app, update(User).values(status="suspended"))

    session_id, state = await start_login(client)
    assert_error(
        await call_back(client, wechat.scan(openid="o-eve", unionid="u-eve"), state),
        401,
        "ACCOUNT_DISABLED",
    )
    assert await poll(client, session_id) == {"status": "failed", "tokens": None}
    assert_error(await call_back(client, wechat.scan(), state), 400, "WECHAT_STATE_INVALID")
    assert_error(
        await client.get(f"{API}/auth/me", headers=bearer(tokens)), 401, "ACCOUNT_DISABLED"
    )

    # Suspended between the callback and the poll: the poll refuses, now and later.
    await db_execute(app, update(User).values(status="active"))
    session_id, state = await start_login(client)
    ok(await call_back(client, wechat.scan(openid="o-eve", unionid="u-eve"), state))
    await db_execute(app, update(User).values(status="suspended"))
    for _ in range(2):
        assert_error(await client.get(f"{API}/wechat/poll/{session_id}"), 401, "ACCOUNT_DISABLED")
    assert await count(app, User) == 1


@pytest.mark.parametrize(
    "settings_overrides",
    [
        {},
        {"wechat_app_id": "wx1", "wechat_redirect_uri": REDIRECT_URI},  # no secret
    ],
    ids=["nothing", "no-secret"],
)
async def test_not_configured_is_503(client, wechat, settings_overrides):
    for response in (
        await client.post(f"{API}/wechat/qrcode"),
        await call_back(client, "code", "state"),
        await call_back(client, "code", "state", "POST"),
    ):
        body = assert_error(response, 503, "FEATURE_NOT_CONFIGURED")
        assert body["message"] == "该功能未配置"
    response = await client.post(f"{API}/wechat/qrcode", headers={"Accept-Language": "en-US"})
    assert assert_error(response, 503, "FEATURE_NOT_CONFIGURED")["message"].startswith("This")
    assert_error(await client.get(f"{API}/wechat/poll/{'Q' * 32}"), 404, "NOT_FOUND")
    assert wechat.requests == []


async def test_secret_is_not_logged(client, wechat, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    await login(client, wechat)
    wechat.outage = "http500"
    _, state = await start_login(client)
    assert_error(await call_back(client, wechat.scan(), state), 502, "UPSTREAM_ERROR")
    out, err = capfd.readouterr()
    assert wechat.app_secret not in caplog.text + out + err
    assert wechat.requests_to("/sns/oauth2/access_token")  # it did talk to WeChat


# ---- races -------------------------------------------------------------------------------------


async def test_concurrent_callbacks_with_one_state_confirm_once(client, app, wechat):
    session_id, state = await start_login(client)
    codes = [wechat.scan(openid=f"o-race-{n}", unionid=f"u-race-{n}") for n in range(2)]
    responses = await asyncio.gather(*(call_back(client, code, state) for code in codes))
    assert sorted(r.status_code for r in responses) == [200, 400]
    assert_error(next(r for r in responses if r.status_code == 400), 400, "WECHAT_STATE_INVALID")
    assert await count(app, User) == 1
    result = await poll(client, session_id)
    assert result["status"] == "confirmed" and result["tokens"] is not None


async def test_concurrent_polls_get_tokens_once(client, app, wechat):
    session_id, state = await start_login(client)
    ok(await call_back(client, wechat.scan(), state))
    results = await asyncio.gather(*(poll(client, session_id) for _ in range(3)))
    assert [r["status"] for r in results] == ["confirmed"] * 3
    assert sum(r["tokens"] is not None for r in results) == 1
    assert await count(app, AuthSession) == 1


async def test_concurrent_first_logins_of_one_person_make_one_account(client, app, wechat):
    logins = [await start_login(client) for _ in range(2)]
    codes = [wechat.scan(openid="o-twin", unionid="u-twin") for _ in logins]
    responses = await asyncio.gather(
        *(call_back(client, code, state) for code, (_, state) in zip(codes, logins, strict=True))
    )
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    users = {(await poll(client, sid))["tokens"]["user"]["id"] for sid, _ in logins}
    assert len(users) == 1
    assert await count(app, User) == 1
    assert await count(app, WechatIdentity) == 1


# ---- the fake itself speaks the documented contract --------------------------------------------


async def test_fake_wechat_contract(wechat):
    async with httpx.AsyncClient(base_url=wechat.base_url) as http:

        async def token(code: str, secret: str | None = None, appid: str | None = None) -> Any:
            response = await http.get(
                "/sns/oauth2/access_token",
                params={
                    "appid": appid or wechat.app_id,
                    "secret": secret or wechat.app_secret,
                    "code": code,
                    "grant_type": "authorization_code",
                },
            )
            assert response.status_code == 200
            return response.json()

        code = wechat.scan(openid="o-x", unionid="u-x", nickname="X")
        assert (await token(code, secret="wrong"))["errcode"] == 40029
        assert (await token(code, appid="wx-other"))["errcode"] == 40029
        body = await token(code)
        assert body["openid"] == "o-x" and body["unionid"] == "u-x"
        assert body["expires_in"] == 7200 and body["scope"] == "snsapi_login"
        assert body["refresh_token"]
        assert await token(code) == {"errcode": 40163, "errmsg": "code been used"}
        assert await token("never-issued") == {"errcode": 40029, "errmsg": "invalid code"}

        access = body["access_token"]
        info = (
            await http.get("/sns/userinfo", params={"access_token": access, "openid": "o-x"})
        ).json()
        assert set(info) == {
            "openid",
            "nickname",
            "sex",
            "province",
            "city",
            "country",
            "headimgurl",
            "privilege",
            "unionid",
        }
        assert info["privilege"] == [] and info["nickname"] == "X"
        mismatch = await http.get("/sns/userinfo", params={"access_token": access, "openid": "o"})
        assert mismatch.json()["errcode"] == 40003
        bad = await http.get("/sns/userinfo", params={"access_token": "nope", "openid": "o-x"})
        assert bad.json()["errcode"] == 40001
        ok_auth = await http.get("/sns/auth", params={"access_token": access, "openid": "o-x"})
        assert ok_auth.json() == {"errcode": 0, "errmsg": "ok"}
        wechat.advance(7201)
        expired = await http.get("/sns/userinfo", params={"access_token": access, "openid": "o-x"})
        assert expired.json()["errcode"] == 42001

        stale = wechat.scan()
        wechat.advance(601)
        assert (await token(stale))["errcode"] == 40029

        wechat.outage = "http500"
        assert (await http.get("/sns/userinfo")).status_code == 500
        wechat.outage = "not_json"
        response = await http.get("/sns/oauth2/access_token")
        assert response.status_code == 200 and response.text.startswith("<html>")

    assert wechat.requests[0].params["secret"] == "wrong"
