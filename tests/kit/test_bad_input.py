"""Bad input never yields a 500, always the documented error envelope, and never changes a row.

Every test runs on SQLite and (with YUNTU_TEST_DATABASE_URL) on PostgreSQL, which is stricter:
it refuses NUL in text and enforces VARCHAR lengths, so both legs matter here."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import API, bearer, make_admin, register
from yuntu.kit.http import get_db_session
from yuntu.kit.routing import make_router
from yuntu.models import metadata
from yuntu.models.identity import User

pytestmark = pytest.mark.anyio

PASSWORD = "correct-horse-42"
LIMIT = 1024 * 1024  # Settings.max_request_bytes default


# ---- helpers -------------------------------------------------------------------------------------


async def snapshot(app: FastAPI) -> dict[str, Any]:
    """Every row of every table (sorted), so a refused request can be shown to change nothing."""
    out: dict[str, Any] = {}
    async with app.state.db.engine.connect() as connection:
        for table in metadata.sorted_tables:
            rows = (await connection.execute(select(table))).all()
            out[table.name] = sorted(tuple(map(repr, row)) for row in rows)
    return out


def assert_error(response: httpx.Response, status: int, error: str | None = None) -> dict:
    """The documented envelope: {code, message, error, data: null, details}; no stack trace."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"code", "message", "error", "data", "details"}, body
    assert body["code"] // 1000 == status and body["data"] is None
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"].isupper()
    if error is not None:
        assert body["error"] == error, body
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers.get("x-request-id")
    return body


def assert_field_errors(body: dict) -> None:
    assert isinstance(body["details"], list) and body["details"], body
    for item in body["details"]:
        assert set(item) == {"field", "message"}
        assert isinstance(item["field"], str) and isinstance(item["message"], str)


async def me(client: httpx.AsyncClient, tokens: dict) -> dict:
    response = await client.get(f"{API}/users/me", headers=bearer(tokens))
    assert response.status_code == 200, response.text
    return response.json()["data"]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # Several tests send many deliberately wrong logins from one address; the throttle (tested in
    # tests/identity) would turn the later ones into 429s and hide what this module checks.
    return {"login_max_failures": 1000}


@pytest.fixture
async def alice(client: httpx.AsyncClient) -> dict:
    return await register(client, "alice", email="alice@example.com", phone="13800138000")


# ---- oversized bodies ----------------------------------------------------------------------------


async def test_oversized_body_with_content_length_is_413(client, app):
    before = await snapshot(app)
    body = json.dumps({"username": "big", "password": PASSWORD, "nickname": "x" * (LIMIT + 10)})
    response = await client.post(
        f"{API}/auth/register", content=body, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert await snapshot(app) == before


async def test_oversized_chunked_body_without_content_length_is_413(client, app):
    before = await snapshot(app)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"username": "big", "password": "correct-horse-42", "nickname": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    request = client.build_request(
        "POST",
        f"{API}/auth/register",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert "content-length" not in request.headers
    assert request.headers.get("transfer-encoding") == "chunked"
    response = await client.send(request)
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert await snapshot(app) == before


async def test_oversized_body_on_authenticated_endpoint(client, app, alice):
    before = await snapshot(app)
    body = json.dumps({"nickname": "n" * (2 * LIMIT)})
    response = await client.put(
        f"{API}/users/me",
        content=body,
        headers={**bearer(alice), "Content-Type": "application/json"},
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert await snapshot(app) == before


async def test_non_numeric_content_length_is_400(client, app):
    # httpx would fix the header up, so talk ASGI directly.
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": f"{API}/auth/register",
        "raw_path": b"/api/v1/auth/register",
        "query_string": b"",
        "root_path": "",
        "client": ("203.0.113.10", 5000),
        "server": ("yuntu.test", 80),
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"-5")],
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 400
    body = json.loads(b"".join(m.get("body", b"") for m in sent[1:]))
    assert body["error"] == "BAD_REQUEST" and body["data"] is None


# ---- malformed JSON and wrong types --------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"username": "bob", "password": ',
        b"{'username': 'bob'}",
        b'{"username": "bob",}',
        b"not json at all",
        b'{"username": "bob", "password": "correct-horse-42"} trailing',
    ],
)
async def test_malformed_json_is_400(client, app, raw):
    before = await snapshot(app)
    response = await client.post(
        f"{API}/auth/register", content=raw, headers={"Content-Type": "application/json"}
    )
    assert_error(response, 400, "MALFORMED_JSON")
    assert await snapshot(app) == before


async def test_invalid_utf8_body_is_400(client, app):
    before = await snapshot(app)
    response = await client.post(
        f"{API}/auth/register",
        content=b'{"username": "b\xff\xfeb", "password": "correct-horse-42"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400, response.text
    assert_error(response, 400)
    assert await snapshot(app) == before


async def test_malformed_json_on_profile_changes_nothing(client, app, alice):
    before = await snapshot(app)
    response = await client.put(
        f"{API}/users/me",
        content=b'{"nickname": "x"',
        headers={**bearer(alice), "Content-Type": "application/json"},
    )
    assert_error(response, 400, "MALFORMED_JSON")
    assert await snapshot(app) == before


@pytest.mark.parametrize(
    "body",
    [
        {"username": 123, "password": PASSWORD},
        {"username": ["bob"], "password": PASSWORD},
        {"username": {"$ne": None}, "password": PASSWORD},
        {"username": "bob", "password": 12345678},
        {"username": "bob", "password": None},
        {"username": "bob", "password": True},
        {"username": "bob", "password": PASSWORD, "role": "admin"},  # extra field: forbidden
        [],
        ["username", "bob"],
        "bob",
        42,
        None,
    ],
)
async def test_wrong_types_are_422_with_field_details(client, app, body):
    before = await snapshot(app)
    response = await client.post(f"{API}/auth/register", json=body)
    assert_field_errors(assert_error(response, 422, "VALIDATION_ERROR"))
    assert await snapshot(app) == before


async def test_wrong_types_in_profile_and_login(client, app, alice):
    before = await snapshot(app)
    for method, path, body in [
        ("PUT", "/users/me", {"nickname": 5}),
        ("PUT", "/users/me", {"avatar_url": ["https://x"]}),
        ("PUT", "/users/me", {"status": "deleted"}),
        ("PUT", "/users/me", {"role": "admin"}),
        ("PUT", "/user/profile", {"email": False}),
        ("PUT", "/users/me/password", {"new_password": {"a": 1}}),
        ("POST", "/auth/login", {"account": 1, "password": PASSWORD}),
        ("POST", "/auth/login", {"device_id": 12345678}),
        ("POST", "/auth/refresh", {"refresh_token": 7}),
        ("POST", "/auth/logout", {"all": "maybe"}),
    ]:
        response = await client.request(method, f"{API}{path}", json=body, headers=bearer(alice))
        assert_field_errors(assert_error(response, 422, "VALIDATION_ERROR"))
    assert await snapshot(app) == before
    assert (await me(client, alice))["role"] == "user"


async def test_form_body_where_json_is_expected(client, app):
    before = await snapshot(app)
    response = await client.post(
        f"{API}/auth/register", data={"username": "bob", "password": PASSWORD}
    )
    assert response.status_code in (400, 415, 422), response.text
    assert_error(response, response.status_code)
    assert await snapshot(app) == before


# ---- duplicates ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"username": "ALICE"}, "USERNAME_TAKEN"),
        ({"username": "alice2", "email": "Alice@EXAMPLE.com"}, "EMAIL_TAKEN"),
        ({"username": "alice3", "phone": "138-0013-8000"}, "PHONE_TAKEN"),
        ({"phone": "13800138000"}, "PHONE_TAKEN"),
    ],
)
async def test_duplicate_registration_is_409_and_changes_nothing(client, app, alice, body, error):
    before = await snapshot(app)
    response = await client.post(f"{API}/auth/register", json={**body, "password": PASSWORD})
    assert_error(response, 409, error)
    assert await snapshot(app) == before


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"username": "Alice"}, "USERNAME_TAKEN"),
        ({"email": "ALICE@example.com"}, "EMAIL_TAKEN"),
        ({"phone": "+13800138000"[1:]}, "PHONE_TAKEN"),
        # a valid change together with a taken one: nothing at all may change
        ({"nickname": "changed", "username": "alice"}, "USERNAME_TAKEN"),
    ],
)
async def test_duplicate_profile_change_is_409_and_changes_nothing(
    client, app, alice, change, error
):
    bob = await register(client, "bob")
    profile = await me(client, bob)
    before = await snapshot(app)
    response = await client.put(f"{API}/users/me", json=change, headers=bearer(bob))
    assert_error(response, 409, error)
    assert await snapshot(app) == before
    assert await me(client, bob) == profile


# ---- long strings, control characters ------------------------------------------------------------

LONG = "a" * 10_000


@pytest.mark.parametrize(
    "body",
    [
        {"username": LONG, "password": PASSWORD},
        {"email": LONG + "@example.com", "password": PASSWORD},
        {"email": "a@" + "b" * 9_990 + ".com", "password": PASSWORD},
        {"phone": "1" * 10_000, "password": PASSWORD},
        {"username": "bob", "password": LONG},
        {"username": "bob", "password": PASSWORD, "nickname": LONG},
        {"username": "bob", "password": PASSWORD, "nickname": "中" * 10_000},
    ],
)
async def test_ten_thousand_character_strings_are_refused(client, app, body):
    before = await snapshot(app)
    response = await client.post(f"{API}/auth/register", json=body)
    assert response.status_code in (400, 422), response.text
    assert_field_errors(assert_error(response, response.status_code))
    assert await snapshot(app) == before


async def test_ten_thousand_character_strings_elsewhere(client, app, alice):
    admin = await make_admin(client, app)
    before = await snapshot(app)
    for method, path, body, headers in [
        ("PUT", "/users/me", {"nickname": LONG}, bearer(alice)),
        ("PUT", "/users/me", {"avatar_url": "https://x.example/" + LONG}, bearer(alice)),
        ("PUT", "/users/me", {"username": LONG}, bearer(alice)),
        (
            "PUT",
            "/users/me/password",
            {"current_password": PASSWORD, "new_password": LONG},
            bearer(alice),
        ),
        ("POST", "/auth/login", {"account": LONG, "password": PASSWORD}, {}),
        ("POST", "/auth/login", {"account": "alice", "password": LONG}, {}),
        ("POST", "/auth/login", {"device_id": LONG}, {}),
        ("POST", "/auth/refresh", {"refresh_token": LONG}, {}),
        ("POST", "/admin/api-keys", {"name": LONG}, bearer(admin)),
        ("POST", f"/admin/users/{alice['user']['id']}/suspend", {"reason": LONG}, bearer(admin)),
    ]:
        response = await client.request(method, f"{API}{path}", json=body, headers=headers)
        assert response.status_code in (400, 401, 422), (path, response.text)
        assert_error(response, response.status_code)
    response = await client.get(f"{API}/admin/users", params={"q": LONG}, headers=bearer(admin))
    assert_error(response, 422, "VALIDATION_ERROR")
    assert await snapshot(app) == before
    assert (await me(client, alice))["status"] == "active"


@pytest.mark.parametrize(
    "body",
    [
        {"username": "bob", "password": PASSWORD, "nickname": "\ufb2c" * 64},
        {"username": "\u0390" * 32, "password": PASSWORD},
        {"username": "\u0958" * 32, "password": PASSWORD},
        {"email": "\u00df" * 32 + "@" + "b" * 63 + "." + "c" * 63 + ".com", "password": PASSWORD},
        {
            "email": "\u0390" * 32 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 55 + ".com",
            "password": PASSWORD,
        },
    ],
    ids=["nfc-nickname", "casefold-username", "nfc-username", "casefold-email", "casefold-email3"],
)
async def test_strings_that_grow_when_normalised_still_fit_their_columns(client, app, body):
    """NFC and case folding can lengthen a string (U+FB2C becomes three code points, 'ΐ' folds to
    three): the limit must hold for the stored form, or PostgreSQL refuses the row (a 500)."""
    before = await snapshot(app)
    response = await client.post(f"{API}/auth/register", json=body)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        assert_field_errors(assert_error(response, 422, "VALIDATION_ERROR"))
        assert await snapshot(app) == before
        return
    async with app.state.db.sessionmaker() as session:
        user = await session.scalar(select(User))
    assert user is not None
    for column in User.__table__.columns:
        value = getattr(user, column.key)
        if isinstance(value, str) and getattr(column.type, "length", None):
            assert len(value) <= column.type.length, (column.key, len(value))


CONTROL = ["\x00", "\x01", "\x07", "\x1b", "\x7f", "\x85", "\u202e", "\r\n"]


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c[0]):04X}" for c in CONTROL])
async def test_control_characters_in_register_are_422(client, app, char):
    before = await snapshot(app)
    for body in [
        {"username": f"bo{char}b", "password": PASSWORD},
        {"username": "bob", "password": PASSWORD, "nickname": f"Bo{char}b"},
        {"email": f"bob{char}@example.com", "password": PASSWORD},
        {"phone": f"1380013{char}8001", "password": PASSWORD},
    ]:
        response = await client.post(f"{API}/auth/register", json=body)
        assert_field_errors(assert_error(response, 422, "VALIDATION_ERROR"))
    assert await snapshot(app) == before


async def test_control_characters_elsewhere_never_500_and_change_nothing(client, app, alice):
    admin = await make_admin(client, app)
    profile = await me(client, alice)
    before = await snapshot(app)
    for char, (method, path, body, headers) in _control_cases(alice, admin):
        response = await client.request(method, f"{API}{path}", json=body, headers=headers)
        assert response.status_code in (400, 401, 422), (repr(char), path, response.text)
        assert_error(response, response.status_code)
    for char in CONTROL:
        response = await client.get(
            f"{API}/admin/users", params={"q": f"a{char}l"}, headers=bearer(admin)
        )
        assert_error(response, 422, "VALIDATION_ERROR")
    assert await snapshot(app) == before
    assert await me(client, alice) == profile


def _control_cases(alice: dict, admin: dict) -> list[tuple[str, tuple]]:
    cases = []
    for char in CONTROL:
        cases += [
            (char, case)
            for case in [
                ("PUT", "/users/me", {"nickname": f"A{char}B"}, bearer(alice)),
                ("PUT", "/user/profile", {"username": f"al{char}ice"}, bearer(alice)),
                (
                    "PUT",
                    "/users/me",
                    {"avatar_url": f"https://x.example/{char}.png"},
                    bearer(alice),
                ),
                ("POST", "/auth/login", {"account": f"ali{char}ce", "password": PASSWORD}, {}),
                ("POST", "/auth/login", {"device_id": f"device{char}00001"}, {}),
                ("POST", "/auth/refresh", {"refresh_token": f"abc{char}def"}, {}),
                ("POST", "/auth/logout", {"refresh_token": f"abc{char}def"}, bearer(alice)),
                ("POST", "/admin/api-keys", {"name": f"key{char}x"}, bearer(admin)),
                (
                    "POST",
                    f"/admin/users/{alice['user']['id']}/suspend",
                    {"reason": f"r{char}x"},
                    bearer(admin),
                ),
            ]
        ]
    return cases


async def test_nul_in_passwords_is_refused_or_harmless(client, app, alice):
    """Passwords are hashed, never stored as text; a NUL must still never reach a 500."""
    before = await snapshot(app)
    response = await client.post(
        f"{API}/auth/login", json={"account": "alice", "password": "correct\x00horse-42"}
    )
    assert response.status_code in (401, 422), response.text
    assert_error(response, response.status_code)
    response = await client.put(
        f"{API}/users/me/password",
        json={"current_password": "x\x00", "new_password": "new\x00password-1"},
        headers=bearer(alice),
    )
    assert response.status_code in (400, 401, 422), response.text
    assert_error(response, response.status_code)
    assert await snapshot(app) == before
    response = await client.post(
        f"{API}/auth/register", json={"username": "nully", "password": "pass\x00word-123"}
    )
    assert response.status_code in (201, 400, 422), response.text
    if response.status_code != 201:
        assert_error(response, response.status_code)


async def test_nul_in_query_and_path_never_500(client, app, alice):
    admin = await make_admin(client, app)
    before = await snapshot(app)
    response = await client.get(f"{API}/admin/users", params={"q": "\x00"}, headers=bearer(admin))
    assert_error(response, 422, "VALIDATION_ERROR")
    response = await client.get(f"{API}/wechat/poll/abc%00defghijklmnopqrstu")
    assert response.status_code in (404, 422), response.text
    assert_error(response, response.status_code)
    assert await snapshot(app) == before


# ---- SQL and HTML are data -----------------------------------------------------------------------

INJECTIONS = [
    "Robert'); DROP TABLE users;--",
    "' OR '1'='1",
    '" OR ""="',
    "1; SELECT pg_sleep(5)",
    "<script>alert(1)</script>",
    '<img src=x onerror="alert(1)">',
    "%_\\%",
    "{{7*7}} ${7*7}",
]


async def test_sql_and_html_are_stored_verbatim(client, app, alice):
    for payload in INJECTIONS:
        response = await client.put(
            f"{API}/users/me", json={"nickname": payload}, headers=bearer(alice)
        )
        assert response.status_code == 200, (payload, response.text)
        assert response.json()["data"]["nickname"] == payload
        assert response.headers["content-type"].startswith("application/json")
        assert (await me(client, alice))["nickname"] == payload
        async with app.state.db.engine.connect() as connection:
            assert await connection.scalar(select(func.count()).select_from(User)) == 1
            assert await connection.scalar(text("SELECT nickname FROM users")) == payload


async def test_sql_in_identifiers_is_refused_or_inert(client, app, alice):
    before = await snapshot(app)
    for payload in INJECTIONS:
        response = await client.post(
            f"{API}/auth/login", json={"account": payload, "password": PASSWORD}
        )
        assert_error(response, 401, "INVALID_CREDENTIALS")
        response = await client.post(
            f"{API}/auth/login", json={"account": "alice", "password": payload}
        )
        assert_error(response, 401, "INVALID_CREDENTIALS")
        for field in ("username", "email", "phone"):
            response = await client.post(
                f"{API}/auth/register", json={field: payload, "password": PASSWORD}
            )
            assert_field_errors(assert_error(response, 422, "VALIDATION_ERROR"))
    assert await snapshot(app) == before


async def test_sql_wildcards_in_admin_search_match_literally(client, app, alice):
    admin = await make_admin(client, app)
    await register(client, "bob", nickname="50%_off")
    for q, expected in [
        ("' OR '1'='1", []),
        ("%", ["bob"]),
        ("_", ["bob"]),
        ("50%_", ["bob"]),
        ("\\", []),
        ("<script>", []),
    ]:
        response = await client.get(f"{API}/admin/users", params={"q": q}, headers=bearer(admin))
        assert response.status_code == 200, (q, response.text)
        names = sorted(u["username"] for u in response.json()["data"]["items"])
        assert names == expected, q


# ---- ids in paths --------------------------------------------------------------------------------

BAD_IDS = [
    "0",
    "-1",
    "-9223372036854775808",
    "9223372036854775808",  # 2**63: one past the largest id
    "99999999999999999999999999999999999999",
    "1" * 400,
    "abc",
    "1.5",
    "1e3",
    "0x10",
    "%20",
    "%00",
    "null",
    "١٢٣",  # Arabic-Indic digits
]


async def test_bad_session_ids_are_refused(client, app, alice):
    before = await snapshot(app)
    for bad in BAD_IDS:
        response = await client.delete(f"{API}/auth/sessions/{bad}", headers=bearer(alice))
        assert response.status_code in (404, 422), (bad, response.text)
        assert_error(response, response.status_code)
    assert await snapshot(app) == before


async def test_bad_user_and_key_ids_are_refused(client, app, alice):
    admin = await make_admin(client, app)
    before = await snapshot(app)
    for bad in BAD_IDS:
        for method, suffix, body in [
            ("GET", "", None),
            ("POST", "/suspend", None),
            ("POST", "/reactivate", {"reason": "x"}),
            ("PUT", "/role", {"role": "admin"}),
        ]:
            response = await client.request(
                method, f"{API}/admin/users/{bad}{suffix}", json=body, headers=bearer(admin)
            )
            assert response.status_code in (404, 422), (bad, suffix, response.text)
            assert_error(response, response.status_code)
        response = await client.delete(f"{API}/admin/api-keys/{bad}", headers=bearer(admin))
        assert response.status_code in (404, 422), (bad, response.text)
        assert_error(response, response.status_code)
    assert await snapshot(app) == before
    assert (await me(client, alice))["status"] == "active"


async def test_well_formed_but_unknown_ids_are_404(client, app, alice):
    admin = await make_admin(client, app)
    before = await snapshot(app)
    for good in ("1", "9223372036854775807", "0000000000000000001"):
        response = await client.delete(f"{API}/auth/sessions/{good}", headers=bearer(alice))
        assert_error(response, 404, "NOT_FOUND")
        response = await client.get(f"{API}/admin/users/{good}", headers=bearer(admin))
        assert_error(response, 404, "NOT_FOUND")
        response = await client.post(f"{API}/admin/users/{good}/suspend", headers=bearer(admin))
        assert_error(response, 404, "NOT_FOUND")
    assert await snapshot(app) == before


async def test_another_users_session_id_is_404_and_stays_alive(client, app, alice):
    bob = await register(client, "bob")
    before = await snapshot(app)
    response = await client.delete(
        f"{API}/auth/sessions/{bob['session_id']}", headers=bearer(alice)
    )
    assert_error(response, 404, "NOT_FOUND")
    assert await snapshot(app) == before
    assert (await client.get(f"{API}/auth/me", headers=bearer(bob))).status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"page": "0"},
        {"page": "-1"},
        {"page": "abc"},
        {"page": "100001"},
        {"page": "99999999999999999999"},
        {"page": "1.5"},
        {"page_size": "0"},
        {"page_size": "101"},
        {"page_size": "-5"},
        {"page_size": "x"},
        {"status": "gone"},
        {"role": "root"},
    ],
)
async def test_bad_query_parameters_are_422(client, app, params):
    admin = await make_admin(client, app)
    if True:
        response = await client.get(f"{API}/admin/users", params=params, headers=bearer(admin))
        assert_field_errors(assert_error(response, 422, "VALIDATION_ERROR"))


# ---- routing errors and unexpected exceptions ----------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/nope", f"{API}/nope", f"{API}/auth/registerx", f"{API}/auth/me/extra", "/%00"]
)
async def test_unknown_route_uses_the_envelope(client, path):
    response = await client.get(path, headers={"Accept-Language": "en"})
    body = assert_error(response, 404, "ROUTE_NOT_FOUND")
    assert body["message"] == "No such endpoint"


async def test_unknown_route_message_is_chinese_by_default(client):
    body = assert_error(await client.post(f"{API}/nope", json={}), 404, "ROUTE_NOT_FOUND")
    assert body["message"] == "接口不存在"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"{API}/auth/register"),
        ("DELETE", f"{API}/auth/login"),
        ("POST", f"{API}/auth/me"),
        ("PATCH", f"{API}/users/me"),
        ("PUT", "/health"),
    ],
)
async def test_wrong_method_uses_the_envelope(client, app, method, path):
    before = await snapshot(app)
    response = await client.request(method, path, headers={"Accept-Language": "en"})
    body = assert_error(response, 405, "METHOD_NOT_ALLOWED")
    assert body["message"] == "Method not allowed"
    assert "allow" in response.headers
    assert await snapshot(app) == before


async def test_unexpected_exception_is_a_500_envelope_without_stack_trace(client, app):
    secret = "internal-detail-7f3a"

    @app.get("/__test__/boom")
    async def boom() -> None:
        raise RuntimeError(f"kaboom {secret}")

    response = await client.get("/__test__/boom", headers={"X-Request-ID": "req-boom-1"})
    body = assert_error(response, 500, "INTERNAL_ERROR")
    assert secret not in response.text and "RuntimeError" not in response.text
    assert body["details"] is None
    assert response.headers["x-request-id"] == "req-boom-1"


async def test_unexpected_exception_after_a_write_rolls_back(client, app):
    """The harness owns the transaction: a crash after a flush leaves no row behind."""
    router = make_router()

    @router.post("/__test__/crash-after-write")
    async def crash_after_write(session: AsyncSession = Depends(get_db_session)) -> None:
        session.add(User(username="ghost", username_key="ghost", nickname="ghost"))
        await session.flush()
        raise ZeroDivisionError("after write")

    app.include_router(router)
    before = await snapshot(app)
    response = await client.post("/__test__/crash-after-write")
    assert_error(response, 500, "INTERNAL_ERROR")
    assert "ZeroDivisionError" not in response.text
    assert await snapshot(app) == before
    # The app keeps serving afterwards.
    assert (await client.get("/health")).status_code == 200
