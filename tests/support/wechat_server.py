"""A local WeChat open-platform OAuth server (website QR login, scope snsapi_login) on 127.0.0.1.

It speaks the documented contract (developers.weixin.qq.com, website app authorization and
UnionID), over real HTTP in a background thread:

``GET /sns/oauth2/access_token?appid&secret&code&grant_type=authorization_code``
    -> ``{access_token, expires_in: 7200, refresh_token, openid, scope: "snsapi_login", unionid}``;
    an unknown or expired code, a wrong appid or secret -> ``{"errcode": 40029, ...}``; a code
    presented a second time -> ``{"errcode": 40163, "errmsg": "code been used"}``.
``GET /sns/userinfo?access_token&openid[&lang]``
    -> ``{openid, nickname, sex, province, city, country, headimgurl, privilege: [], unionid}``;
    unknown token -> 40001, expired token -> 42001, openid not the token's -> 40003.
``GET /sns/auth?access_token&openid`` -> ``{"errcode": 0, "errmsg": "ok"}`` or the same errors.

Authorization codes only come from :meth:`FakeWechat.scan` (the user scanned the QR code and
confirmed); they are single use and expire after 10 minutes of the server's clock, which
:meth:`FakeWechat.advance` moves. :attr:`FakeWechat.outage` simulates WeChat being down and
:attr:`FakeWechat.requests` records what the server received.

    with FakeWechat() as wechat:
        code = wechat.scan(openid="o1", unionid="u1", nickname="小明")
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit

CODE_TTL_SECONDS = 600
ACCESS_TOKEN_TTL_SECONDS = 7200

# Outage modes: an HTTP 500, a 200 whose body is not JSON (an HTML error page from a proxy),
# a JSON errcode -1 ("system busy"), or no answer within the client's timeout.
Outage = Literal["http500", "not_json", "system_busy", "hang"]


def _error(errcode: int, errmsg: str) -> dict[str, Any]:
    return {"errcode": errcode, "errmsg": errmsg}


INVALID_CODE = _error(40029, "invalid code")
CODE_USED = _error(40163, "code been used")
INVALID_CREDENTIAL = _error(40001, "invalid credential, access_token is invalid or not latest")
TOKEN_EXPIRED = _error(42001, "access_token expired")
INVALID_OPENID = _error(40003, "invalid openid")


@dataclass(frozen=True, slots=True)
class Recorded:
    method: str
    path: str
    params: dict[str, str]


@dataclass(slots=True)
class WechatUser:
    openid: str
    unionid: str | None
    nickname: str
    sex: int = 0
    province: str = "Guangdong"
    city: str = "Shenzhen"
    country: str = "CN"
    headimgurl: str = ""


@dataclass(slots=True)
class _Code:
    user: WechatUser
    issued_at: float
    used: bool = False


@dataclass(slots=True)
class _Token:
    user: WechatUser
    expires_at: float


@dataclass(slots=True)
class _State:
    codes: dict[str, _Code] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)


class FakeWechat:
    """The WeChat OAuth API for one app (appid + secret), served on a free loopback port."""

    def __init__(self, app_id: str = "wx0123456789abcdef", app_secret: str | None = None) -> None:
        self.app_id = app_id
        self.app_secret = app_secret or "wxsecret-" + secrets.token_hex(16)
        self.outage: Outage | None = None
        self.outage_path: str | None = None  # limit the outage to one endpoint
        self.hang_seconds = 2.0
        self._clock_offset = 0.0
        self._lock = threading.Lock()
        self._state = _State()
        self._scripted: dict[str, list[tuple[int, bytes, str]]] = {}
        self._release = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> FakeWechat:
        server = _QuietServer(("127.0.0.1", 0), _handler_for(self))
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging handlers finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FakeWechat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- test controls ------------------------------------------------------------------------

    def now(self) -> float:
        return time.time() + self._clock_offset

    def advance(self, seconds: float) -> None:
        """Move the server's clock (code and access-token expiry)."""
        with self._lock:
            self._clock_offset += seconds

    def scan(
        self,
        openid: str | None = None,
        unionid: str | None = None,
        nickname: str = "微信用户",
        headimgurl: str | None = None,
        sex: int = 1,
    ) -> str:
        """The user scans the QR code and confirms: returns the code WeChat would put on the
        redirect to ``redirect_uri?code=CODE&state=STATE``."""
        user = WechatUser(
            openid=openid or "o" + secrets.token_urlsafe(20),
            unionid=unionid,
            nickname=nickname,
            sex=sex,
            headimgurl=headimgurl
            if headimgurl is not None
            else f"https://thirdwx.qlogo.cn/mmopen/{secrets.token_hex(8)}/132",
        )
        code = "0" + secrets.token_hex(15)
        with self._lock:
            self._state.codes[code] = _Code(user=user, issued_at=self.now())
        return code

    def script(
        self, path: str, body: dict[str, Any] | bytes, status: int = 200, content_type: str = ""
    ) -> None:
        """Answer the next request to `path` with this body instead of following the contract
        (for answers the real WeChat should never give)."""
        if isinstance(body, dict):
            _, data, ctype = self._json(body)
        else:
            data, ctype = body, "text/plain"
        with self._lock:
            self._scripted.setdefault(path, []).append((status, data, content_type or ctype))

    @property
    def requests(self) -> list[Recorded]:
        with self._lock:
            return list(self._state.requests)

    def requests_to(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.path == path]

    def reset(self) -> None:
        with self._lock:
            self._state = _State()
            self._scripted.clear()
        self.outage = self.outage_path = None
        self._clock_offset = 0.0

    # ---- protocol -----------------------------------------------------------------------------

    def handle(self, method: str, path: str, params: dict[str, str]) -> tuple[int, bytes, str]:
        """(HTTP status, body, content type) for one request; called from the handler thread."""
        with self._lock:
            self._state.requests.append(Recorded(method, path, dict(params)))
            scripted = self._scripted.get(path)
            if scripted:
                return scripted.pop(0)
        outage = self.outage if self.outage_path in (None, path) else None
        if outage == "hang":
            self._release.wait(self.hang_seconds)
        if outage == "http500":
            return 500, b"<html><body>500 Internal Server Error</body></html>", "text/html"
        if outage == "not_json":
            return 200, b"<html><body>502 Bad Gateway (nginx)</body></html>", "text/html"
        if outage == "system_busy":
            return self._json(_error(-1, "system error"))
        if method != "GET":
            return 405, b"method not allowed", "text/plain"
        if path == "/sns/oauth2/access_token":
            return self._json(self._access_token(params))
        if path == "/sns/userinfo":
            return self._json(self._userinfo(params))
        if path == "/sns/auth":
            return self._json(self._check_token(params))
        return 404, b"not found", "text/plain"

    @staticmethod
    def _json(body: dict[str, Any]) -> tuple[int, bytes, str]:
        # WeChat answers HTTP 200 for errors too and labels its JSON this way.
        data = json.dumps(body, ensure_ascii=False).encode()
        return 200, data, "application/json; encoding=utf-8"

    def _access_token(self, params: dict[str, str]) -> dict[str, Any]:
        if params.get("grant_type") != "authorization_code":
            return _error(40002, "invalid grant_type")
        if params.get("appid") != self.app_id or not secrets.compare_digest(
            params.get("secret", ""), self.app_secret
        ):
            return INVALID_CODE
        with self._lock:
            entry = self._state.codes.get(params.get("code", ""))
            if entry is None:
                return INVALID_CODE
            if entry.used:
                return CODE_USED
            entry.used = True
            if self.now() - entry.issued_at > CODE_TTL_SECONDS:
                return INVALID_CODE
            token = secrets.token_urlsafe(32)
            self._state.tokens[token] = _Token(
                user=entry.user, expires_at=self.now() + ACCESS_TOKEN_TTL_SECONDS
            )
        body: dict[str, Any] = {
            "access_token": token,
            "expires_in": ACCESS_TOKEN_TTL_SECONDS,
            "refresh_token": secrets.token_urlsafe(32),
            "openid": entry.user.openid,
            "scope": "snsapi_login",
        }
        if entry.user.unionid is not None:  # only for apps bound to an open-platform account
            body["unionid"] = entry.user.unionid
        return body

    def _token_user(self, params: dict[str, str]) -> WechatUser | dict[str, Any]:
        with self._lock:
            token = self._state.tokens.get(params.get("access_token", ""))
        if token is None:
            return INVALID_CREDENTIAL
        if self.now() >= token.expires_at:
            return TOKEN_EXPIRED
        if params.get("openid") != token.user.openid:
            return INVALID_OPENID
        return token.user

    def _userinfo(self, params: dict[str, str]) -> dict[str, Any]:
        user = self._token_user(params)
        if isinstance(user, dict):
            return user
        body: dict[str, Any] = {
            "openid": user.openid,
            "nickname": user.nickname,
            "sex": user.sex,
            "province": user.province,
            "city": user.city,
            "country": user.country,
            "headimgurl": user.headimgurl,
            "privilege": [],
        }
        if user.unionid is not None:
            body["unionid"] = user.unionid
        return body

    def _check_token(self, params: dict[str, str]) -> dict[str, Any]:
        user = self._token_user(params)
        return user if isinstance(user, dict) else _error(0, "ok")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that gave up (timeout tests) is not an error of the fake


def _handler_for(fake: FakeWechat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # no 40 ms delayed-ACK stall per keep-alive answer
        server_version = "FakeWechat/1.0"

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            status, body, content_type = fake.handle(self.command, url.path, params)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = _serve
        do_POST = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
