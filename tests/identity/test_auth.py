"""Registration, login, token rotation and reuse detection, sessions, profile, password."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from sqlalchemy import func, select, update

from tests.conftest import API, TEST_SECRET, bearer, register
from yuntu.identity.tokens import TokenCodec
from yuntu.models.identity import AuthSession, RefreshToken, User

pytestmark = pytest.mark.anyio


async def login(client, password="correct-horse-42", **identifier):
    return await client.post(f"{API}/auth/login", json={**identifier, "password": password})


async def test_register_returns_tokens_and_user(client):
    data = await register(client, "Alice", email="Alice@Example.com", nickname="Al")
    assert data["token_type"] == "Bearer" and data["expires_in"] == 1800
    assert data["refresh_expires_in"] == 7 * 24 * 3600
    user = data["user"]
    assert user["username"] == "Alice" and user["email"] == "Alice@example.com"
    assert user["nickname"] == "Al" and user["role"] == "user" and user["status"] == "active"
    assert isinstance(user["id"], str) and user["id"].isdigit()
    assert user["created_at"].endswith("Z")
    assert "password" not in json.dumps(data).replace("password_", "")


@pytest.mark.parametrize(
    ("password", "reason"),
    [("short1", "8"), ("1234567890", "digits"), ("alice-login", "equal")],
)
async def test_password_policy(client, password, reason):
    response = await client.post(
        f"{API}/auth/register", json={"username": "alice-login", "password": password}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "WEAK_PASSWORD" and reason in body["details"][0]["message"]


async def test_register_needs_an_identifier(client):
    response = await client.post(f"{API}/auth/register", json={"password": "correct-horse-42"})
    assert response.status_code == 422 and response.json()["error"] == "VALIDATION_ERROR"


async def test_identifiers_unique_case_insensitively_and_nfc(client):
    await register(client, "Zoë", email="z@example.com")
    decomposed = "Zoe\u0308"  # same name, decomposed form
    for body, error in [
        ({"username": "ZOË"}, "USERNAME_TAKEN"),
        ({"username": decomposed}, "USERNAME_TAKEN"),
        ({"username": "other", "email": "Z@EXAMPLE.COM"}, "EMAIL_TAKEN"),
    ]:
        response = await client.post(
            f"{API}/auth/register", json={**body, "password": "correct-horse-42"}
        )
        assert response.status_code == 409 and response.json()["error"] == error
    assert (await login(client, account="zoë")).status_code == 200
    assert (await login(client, account=decomposed.upper())).status_code == 200


async def test_login_by_each_identifier(client):
    await register(client, "bob", email="bob@example.com", phone="13800138000")
    for identifier in (
        {"username": "BOB"},
        {"email": "Bob@Example.com"},
        {"phone": "13800138000"},
        {"account": "bob@example.com"},
        {"account": "13800138000"},
    ):
        response = await login(client, **identifier)
        assert response.status_code == 200, (identifier, response.text)
        assert response.json()["data"]["user"]["username"] == "bob"


async def test_wrong_password_and_unknown_account_look_alike(client):
    await register(client, "carol")
    wrong = await login(client, password="not-the-password", username="carol")
    unknown = await login(client, username="nobody")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"] == unknown.json()["error"] == "INVALID_CREDENTIALS"


async def test_login_body_must_choose_one_method(client):
    for body in (
        {"username": "a"},
        {"password": "x"},
        {"device_id": "dev-12345678", "password": "x"},
        {"username": "a", "email": "a@b.c", "password": "x"},
        {},
    ):
        response = await client.post(f"{API}/auth/login", json=body)
        assert response.status_code == 422, body


async def test_device_login_registers_silently_then_finds_same_user(client):
    first = await client.post(f"{API}/auth/login", json={"device_id": "device-0001-abcdef"})
    second = await client.post(f"{API}/auth/login", json={"device_id": "device-0001-abcdef"})
    other = await client.post(f"{API}/auth/login", json={"device_id": "device-0002-abcdef"})
    assert first.status_code == second.status_code == other.status_code == 200
    user_id = first.json()["data"]["user"]["id"]
    assert second.json()["data"]["user"]["id"] == user_id
    assert other.json()["data"]["user"]["id"] != user_id
    me = await client.get(f"{API}/user/profile", headers=bearer(first.json()["data"]))
    assert me.json()["data"]["username"].startswith("device_")


async def test_refresh_rotates_and_reuse_revokes_the_family(client, app):
    tokens = await register(client, "dave")
    first = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert first.status_code == 200
    rotated = first.json()["data"]
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert rotated["session_id"] == tokens["session_id"]
    # the new pair works
    assert (await client.get(f"{API}/auth/me", headers=bearer(rotated))).status_code == 200
    # the old refresh token comes back: reuse -> 401 and the whole family dies
    replay = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert replay.status_code == 401 and replay.json()["error"] == "TOKEN_REUSED"
    for token in (rotated["refresh_token"], tokens["refresh_token"]):
        again = await client.post(f"{API}/auth/refresh", json={"refresh_token": token})
        assert again.status_code == 401
    me = await client.get(f"{API}/auth/me", headers=bearer(rotated))
    assert me.status_code == 401 and me.json()["error"] == "SESSION_REVOKED"
    async with app.state.db.sessionmaker() as session:
        rows = (await session.scalars(select(RefreshToken))).all()
        assert rows and all(row.revoked_at is not None for row in rows)
        # stored hashed: the raw token appears nowhere
        assert all(
            row.token_hash != tokens["refresh_token"] and len(row.token_hash) == 64 for row in rows
        )
        family = await session.get(AuthSession, int(tokens["session_id"]))
        assert family.revoked_reason == "reuse_detected"


async def test_reuse_in_one_family_leaves_other_logins_alone(client):
    tokens = await register(client, "erin")
    other = (await login(client, username="erin")).json()["data"]
    await client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    await client.post(f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert (await client.get(f"{API}/auth/me", headers=bearer(other))).status_code == 200


async def test_refresh_token_is_not_an_access_token_and_vice_versa(client):
    tokens = await register(client, "frank")
    as_access = await client.get(
        f"{API}/auth/me", headers={"Authorization": f"Bearer {tokens['refresh_token']}"}
    )
    assert as_access.status_code == 401 and as_access.json()["code"] == 401002
    as_refresh = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["access_token"]}
    )
    assert as_refresh.status_code == 401 and as_refresh.json()["code"] == 401002


def _forge(claims: dict, header: dict) -> str:
    def b64(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{b64(header)}.{b64(claims)}."


async def test_tampered_alg_none_and_foreign_key_tokens_are_invalid(client):
    tokens = await register(client, "grace")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    forged_none = _forge(claims, {"alg": "none", "typ": "JWT"})
    foreign = jwt.encode(claims, "some-other-key-0123456789abcdef0123456789", algorithm="HS256")
    header, payload, signature = tokens["access_token"].split(".")
    flipped = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    elevated = dict(claims, sub="1")
    tampered = f"{header}.{_forge(elevated, {}).split('.')[1]}.{signature}"
    for token in (forged_none, foreign, flipped, tampered, "not.a.jwt", "garbage"):
        response = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
        assert response.json()["code"] == 401002 and response.json()["error"] == "TOKEN_INVALID"


async def test_expired_access_token_is_401001(client):
    tokens = await register(client, "heidi")
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    codec = TokenCodec(TEST_SECRET, 1800, 3600)
    expired = codec.issue_access(
        int(claims["sub"]), int(claims["sid"]), now=datetime.now(UTC) - timedelta(hours=1)
    )
    response = await client.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {expired}"})
    assert response.status_code == 401
    assert response.json()["code"] == 401001 and response.json()["error"] == "TOKEN_EXPIRED"


async def test_missing_token_is_401_not_403(client):
    response = await client.get(f"{API}/auth/me")
    assert response.status_code == 401 and response.json()["error"] == "UNAUTHENTICATED"


async def test_suspended_or_deleted_user_token_stops_at_once(client, app):
    tokens = await register(client, "ivan")
    for status in ("suspended", "deleted"):
        async with app.state.db.sessionmaker() as session:
            await session.execute(update(User).values(status=status))
            await session.commit()
        response = await client.get(f"{API}/auth/me", headers=bearer(tokens))
        assert response.status_code == 401 and response.json()["error"] == "ACCOUNT_DISABLED"
        assert (await login(client, username="ivan")).status_code == 401


async def test_logout_revokes_the_session_and_its_access_token(client):
    tokens = await register(client, "judy")
    other = (await login(client, username="judy")).json()["data"]
    response = await client.post(f"{API}/auth/logout", json={}, headers=bearer(tokens))
    assert response.status_code == 200 and response.json()["data"] == {"revoked": 1}
    assert (await client.get(f"{API}/auth/me", headers=bearer(tokens))).status_code == 401
    refresh = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert refresh.status_code == 401
    assert (await client.get(f"{API}/auth/me", headers=bearer(other))).status_code == 200


async def test_logout_by_refresh_token_and_all(client):
    tokens = await register(client, "ken")
    second = (await login(client, username="ken")).json()["data"]
    third = (await login(client, username="ken")).json()["data"]
    by_token = await client.post(
        f"{API}/auth/logout",
        headers=bearer(tokens),
        json={"refresh_token": second["refresh_token"]},
    )
    assert by_token.json()["data"]["revoked"] == 1
    assert (await client.get(f"{API}/auth/me", headers=bearer(second))).status_code == 401
    assert (await client.get(f"{API}/auth/me", headers=bearer(tokens))).status_code == 200
    everything = await client.post(f"{API}/auth/logout", headers=bearer(third), json={"all": True})
    assert everything.json()["data"]["revoked"] == 2
    for pair in (tokens, third):
        assert (await client.get(f"{API}/auth/me", headers=bearer(pair))).status_code == 401


async def test_cannot_log_out_another_users_session(client):
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    response = await client.post(
        f"{API}/auth/logout", headers=bearer(bob), json={"refresh_token": alice["refresh_token"]}
    )
    assert response.status_code == 401
    assert (await client.get(f"{API}/auth/me", headers=bearer(alice))).status_code == 200


async def test_sessions_list_and_revoke(client):
    tokens = await register(client, "leo")
    second = (await login(client, username="leo")).json()["data"]
    listed = (await client.get(f"{API}/auth/sessions", headers=bearer(tokens))).json()["data"]
    assert {s["id"] for s in listed} == {tokens["session_id"], second["session_id"]}
    assert [s["current"] for s in listed if s["id"] == tokens["session_id"]] == [True]
    assert listed[0]["ip"] == "203.0.113.10"
    response = await client.delete(
        f"{API}/auth/sessions/{second['session_id']}", headers=bearer(tokens)
    )
    assert response.status_code == 200
    assert (await client.get(f"{API}/auth/me", headers=bearer(second))).status_code == 401
    again = await client.delete(
        f"{API}/auth/sessions/{second['session_id']}", headers=bearer(tokens)
    )
    assert again.status_code == 404


async def test_another_users_session_id_is_404(client):
    alice = await register(client, "alice")
    bob = await register(client, "bob")
    response = await client.delete(
        f"{API}/auth/sessions/{alice['session_id']}", headers=bearer(bob)
    )
    assert response.status_code == 404 and response.json()["error"] == "NOT_FOUND"
    assert (await client.get(f"{API}/auth/me", headers=bearer(alice))).status_code == 200


async def test_profile_get_and_update_with_aliases(client):
    tokens = await register(client, "mallory")
    await register(client, "taken", email="taken@example.com")
    for path in ("/users/me", "/user/profile"):
        got = await client.get(f"{API}{path}", headers=bearer(tokens))
        assert got.status_code == 200 and got.json()["data"]["username"] == "mallory"
    updated = await client.put(
        f"{API}/user/profile",
        headers=bearer(tokens),
        json={"nickname": "Mal", "avatar_url": "https://cdn.example.com/m.png"},
    )
    assert updated.status_code == 200
    assert updated.json()["data"]["nickname"] == "Mal"
    conflict = await client.put(
        f"{API}/users/me",
        headers=bearer(tokens),
        json={"email": "TAKEN@example.com", "nickname": "changed"},
    )
    assert conflict.status_code == 409 and conflict.json()["error"] == "EMAIL_TAKEN"
    after = (await client.get(f"{API}/users/me", headers=bearer(tokens))).json()["data"]
    assert after["nickname"] == "Mal" and after["email"] is None  # nothing half-applied
    bad = await client.put(
        f"{API}/users/me", headers=bearer(tokens), json={"avatar_url": "javascript:alert(1)"}
    )
    assert bad.status_code == 422
    extra = await client.put(f"{API}/users/me", headers=bearer(tokens), json={"role": "admin"})
    assert extra.status_code == 422  # no mass assignment


async def test_password_change_revokes_other_sessions(client):
    tokens = await register(client, "nina")
    other = (await login(client, username="nina")).json()["data"]
    wrong = await client.put(
        f"{API}/users/me/password",
        headers=bearer(tokens),
        json={"current_password": "nope-nope-1", "new_password": "new-pass-123"},
    )
    assert wrong.status_code == 401
    changed = await client.put(
        f"{API}/users/me/password",
        headers=bearer(tokens),
        json={"current_password": "correct-horse-42", "new_password": "new-pass-123"},
    )
    assert changed.status_code == 200 and changed.json()["data"]["revoked"] == 1
    assert (await client.get(f"{API}/auth/me", headers=bearer(tokens))).status_code == 200
    assert (await client.get(f"{API}/auth/me", headers=bearer(other))).status_code == 401
    assert (await login(client, username="nina")).status_code == 401
    assert (await login(client, password="new-pass-123", username="nina")).status_code == 200


async def test_bcrypt_hash_verifies_and_is_rehashed_to_argon2(client, app):
    import bcrypt

    await register(client, "olga")
    legacy = bcrypt.hashpw(b"legacy-pass-1", bcrypt.gensalt(rounds=4)).decode()
    async with app.state.db.sessionmaker() as session:
        await session.execute(update(User).values(password_hash=legacy))
        await session.commit()
    assert (await login(client, password="legacy-pass-1", username="olga")).status_code == 200
    async with app.state.db.sessionmaker() as session:
        stored = await session.scalar(select(User.password_hash))
    assert stored.startswith("$argon2id$")
    assert (await login(client, password="legacy-pass-1", username="olga")).status_code == 200


async def test_login_throttled_per_account(client):
    await register(client, "peggy")
    for _ in range(10):
        response = await login(client, password="wrong-password", username="peggy")
        assert response.status_code == 401
    blocked = await login(client, username="peggy")  # even the right password waits
    assert blocked.status_code == 429 and blocked.json()["error"] == "RATE_LIMITED"
    retry_after = int(blocked.headers["Retry-After"])
    assert 1 <= retry_after <= 300
    assert blocked.headers["X-RateLimit-Remaining"] == "0"


async def test_login_throttled_per_address_across_accounts(client):
    for index in range(10):
        await login(client, password="wrong-password", username=f"ghost{index}")
    response = await login(client, password="wrong-password", username="ghost-new")
    assert response.status_code == 429


@pytest.fixture
def settings_overrides(request):
    return getattr(request, "param", {})


@pytest.mark.parametrize(
    "settings_overrides", [{"trusted_proxies": ["203.0.113.0/24"]}], indirect=True
)
async def test_forwarded_for_trusted_only_from_configured_proxy(client):
    # the test client's peer (203.0.113.10) is a trusted proxy here, so each forwarded address
    # gets its own budget ...
    for index in range(10):
        await client.post(
            f"{API}/auth/login",
            json={"username": f"x{index}", "password": "bad-pass-1"},
            headers={"X-Forwarded-For": "198.51.100.1"},
        )
    blocked = await client.post(
        f"{API}/auth/login",
        json={"username": "y", "password": "bad-pass-1"},
        headers={"X-Forwarded-For": "198.51.100.1"},
    )
    assert blocked.status_code == 429
    fresh = await client.post(
        f"{API}/auth/login",
        json={"username": "y", "password": "bad-pass-1"},
        headers={"X-Forwarded-For": "198.51.100.2"},
    )
    assert fresh.status_code == 401


async def test_forwarded_for_ignored_without_trusted_proxy(client):
    for index in range(10):
        await client.post(
            f"{API}/auth/login",
            json={"username": f"x{index}", "password": "bad-pass-1"},
            headers={"X-Forwarded-For": f"198.51.100.{index}"},
        )
    spoofed = await client.post(
        f"{API}/auth/login",
        json={"username": "y", "password": "bad-pass-1"},
        headers={"X-Forwarded-For": "192.0.2.77"},
    )
    assert spoofed.status_code == 429


async def test_successful_login_records_session_metadata(client, app):
    await register(client, "quinn")
    await client.post(
        f"{API}/auth/login",
        json={"username": "quinn", "password": "correct-horse-42"},
        headers={"User-Agent": "YuntuClient/2.0"},
    )
    async with app.state.db.sessionmaker() as session:
        count = await session.scalar(select(func.count()).select_from(AuthSession))
        agents = (await session.scalars(select(AuthSession.user_agent))).all()
        last_login = await session.scalar(select(User.last_login_at))
    assert count == 2 and "YuntuClient/2.0" in agents
    assert last_login is not None and last_login.tzinfo is not None
    assert abs(last_login.timestamp() - time.time()) < 60


async def test_refresh_after_logout_says_session_revoked(client):
    tokens = await register(client, "rita")
    await client.post(f"{API}/auth/logout", json={}, headers=bearer(tokens))
    response = await client.post(
        f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
    )
    assert response.status_code == 401 and response.json()["error"] == "SESSION_REVOKED"


async def test_cached_session_is_invalidated_at_once(client, app):
    tokens = await register(client, "cachey")
    other = (await login(client, username="cachey")).json()["data"]
    for pair in (tokens, other):  # warm the cache of read-only requests
        for _ in range(2):
            assert (await client.get(f"{API}/auth/me", headers=bearer(pair))).status_code == 200
    assert app.state.auth.cache.get(int(tokens["session_id"]), int(tokens["user"]["id"]))
    await client.post(f"{API}/auth/logout", json={}, headers=bearer(tokens))
    assert (await client.get(f"{API}/auth/me", headers=bearer(tokens))).status_code == 401
    assert (await client.get(f"{API}/auth/me", headers=bearer(other))).status_code == 200
    # a profile change is visible at once on the next read
    await client.put(f"{API}/users/me", json={"nickname": "Renamed"}, headers=bearer(other))
    me = await client.get(f"{API}/auth/me", headers=bearer(other))
    assert me.json()["data"]["nickname"] == "Renamed"
