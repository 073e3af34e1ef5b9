"""API keys: created by admins (secret shown once), listed by prefix, stored as SHA-256, scoped,
revocable, expiring, and recording when they were last used."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text, update

from tests.admin.test_admin_users import audit_rows, make_admin
from tests.conftest import API, bearer, register
from yuntu.models.identity import ApiKey

pytestmark = pytest.mark.anyio


async def create_key(
    client: httpx.AsyncClient, admin: dict, scopes: list[str], name: str = "ci", **extra
) -> dict:
    response = await client.post(
        f"{API}/admin/api-keys",
        json={"name": name, "scopes": scopes, **extra},
        headers=bearer(admin),
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


def key_header(key: dict | str) -> dict[str, str]:
    return {"X-API-Key": key if isinstance(key, str) else key["secret"]}


async def stored_key(app: FastAPI, key_id: str) -> ApiKey:
    async with app.state.db.sessionmaker() as session:
        return await session.get_one(ApiKey, int(key_id))


async def test_create_shows_secret_once_list_shows_prefix_db_stores_hash(client, app):
    admin = await make_admin(client, app)
    created = await create_key(client, admin, ["users:read", "users:read"], name="uploader")
    secret = created["secret"]
    assert secret.startswith("yk_") and len(secret) > 40
    assert created["prefix"].startswith("yk_") and secret.startswith(created["prefix"] + "_")
    assert isinstance(created["id"], str) and created["id"].isdigit()
    assert created["created_by"] == admin["user"]["id"]
    assert created["scopes"] == ["users:read"]  # deduplicated
    assert created["name"] == "uploader"
    assert created["expires_at"] is None and created["revoked_at"] is None
    assert created["last_used_at"] is None and created["created_at"].endswith("Z")

    listing = await client.get(f"{API}/admin/api-keys", headers=bearer(admin))
    assert listing.status_code == 200
    items = listing.json()["data"]
    assert [k["id"] for k in items] == [created["id"]]
    assert items[0]["prefix"] == created["prefix"]
    assert "secret" not in items[0] and "key_hash" not in items[0]
    body_part = secret[len(created["prefix"]) + 1 :]
    assert body_part not in listing.text and secret not in listing.text
    # Nor does any other read of the key reveal it.
    one_more = await create_key(client, admin, [])
    assert secret not in one_more["secret"]

    # The database holds only the SHA-256 of the secret.
    async with app.state.db.sessionmaker() as session:
        rows = (await session.execute(text("SELECT * FROM api_keys"))).all()
        audit = (await session.execute(text("SELECT * FROM audit_log"))).all()
    dump = repr(rows) + repr(audit)
    assert secret not in dump and body_part not in dump
    key = await stored_key(app, created["id"])
    assert key.key_hash == hashlib.sha256(secret.encode()).hexdigest()

    log = await audit_rows(app, "api_key.create")
    assert len(log) == 2 and log[0].target_id == created["id"]
    assert log[0].actor_user_id == int(admin["user"]["id"])
    assert log[0].after == {
        "name": "uploader",
        "scopes": ["users:read"],
        "prefix": created["prefix"],
    }


async def test_key_with_scope_lists_users_and_records_last_used(client, app):
    admin = await make_admin(client, app)
    await register(client, "alice")
    key = await create_key(client, admin, ["users:read"])

    response = await client.get(f"{API}/admin/users", headers=key_header(key))
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["total"] == 2 and {u["username"] for u in data["items"]} == {"root", "alice"}
    alice_id = next(u["id"] for u in data["items"] if u["username"] == "alice")
    one = await client.get(f"{API}/admin/users/{alice_id}", headers=key_header(key))
    assert one.status_code == 200 and one.json()["data"]["username"] == "alice"

    used = (await stored_key(app, key["id"])).last_used_at
    assert used is not None and abs(datetime.now(UTC) - used) < timedelta(minutes=1)
    listed = (await client.get(f"{API}/admin/api-keys", headers=bearer(admin))).json()["data"]
    assert listed[0]["last_used_at"] is not None

    # A key reads; it cannot act as an administrator or a user.
    for method, path, body in (
        ("POST", f"/admin/users/{alice_id}/suspend", None),
        ("PUT", f"/admin/users/{alice_id}/role", {"role": "admin"}),
        ("POST", "/admin/api-keys", {"name": "escalate", "scopes": ["users:read"]}),
        ("GET", "/admin/api-keys", None),
        ("GET", "/auth/me", None),
    ):
        response = await client.request(method, API + path, json=body, headers=key_header(key))
        assert response.status_code == 401, (path, response.text)
    alice = (await client.get(f"{API}/admin/users/{alice_id}", headers=bearer(admin))).json()
    assert alice["data"]["role"] == "user" and alice["data"]["status"] == "active"


async def test_key_without_scope_is_403_scope_missing(client, app):
    admin = await make_admin(client, app)
    key = await create_key(client, admin, ["packages:read"])
    for path in ("/admin/users", f"/admin/users/{admin['user']['id']}"):
        response = await client.get(API + path, headers=key_header(key))
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["error"] == "SCOPE_MISSING" and body["code"] == 403002
        assert body["details"] == {"required_scope": "users:read"}


@pytest.mark.parametrize(
    "presented",
    [
        "garbage",
        "yk_",
        "yk_00000000_" + "A" * 43,
        "Bearer yk_whatever",
        "yk_" + "x" * 500,
    ],
)
async def test_unknown_or_garbage_key_is_401(client, app, presented):
    response = await client.get(f"{API}/admin/users", headers=key_header(presented))
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "API_KEY_INVALID" and response.json()["code"] == 401007


async def test_a_known_prefix_with_a_wrong_body_is_refused(client, app):
    admin = await make_admin(client, app)
    key = await create_key(client, admin, ["users:read"])
    forged = key["prefix"] + "_" + "B" * 43
    response = await client.get(f"{API}/admin/users", headers=key_header(forged))
    assert response.status_code == 401 and response.json()["error"] == "API_KEY_INVALID"


async def test_revoked_key_is_401(client, app):
    admin = await make_admin(client, app)
    key = await create_key(client, admin, ["users:read"])
    other = await create_key(client, admin, ["users:read"], name="other")
    assert (await client.get(f"{API}/admin/users", headers=key_header(key))).status_code == 200

    response = await client.delete(f"{API}/admin/api-keys/{key['id']}", headers=bearer(admin))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["revoked_at"] is not None
    assert "secret" not in response.json()["data"]
    denied = await client.get(f"{API}/admin/users", headers=key_header(key))
    assert denied.status_code == 401 and denied.json()["error"] == "API_KEY_INVALID"
    # Revoking one key leaves the others working; revoking twice is harmless.
    assert (await client.get(f"{API}/admin/users", headers=key_header(other))).status_code == 200
    again = await client.delete(f"{API}/admin/api-keys/{key['id']}", headers=bearer(admin))
    assert again.status_code == 200
    assert again.json()["data"]["revoked_at"] == response.json()["data"]["revoked_at"]

    listed = (await client.get(f"{API}/admin/api-keys", headers=bearer(admin))).json()["data"]
    revoked = {k["id"]: k["revoked_at"] for k in listed}
    assert revoked[key["id"]] is not None and revoked[other["id"]] is None

    missing = await client.delete(f"{API}/admin/api-keys/123456789", headers=bearer(admin))
    assert missing.status_code == 404 and missing.json()["error"] == "NOT_FOUND"
    log = await audit_rows(app, "api_key.revoke")
    assert [row.target_id for row in log] == [key["id"]]
    assert log[0].actor_user_id == int(admin["user"]["id"]) and log[0].ip


async def test_expired_key_is_401(client, app):
    admin = await make_admin(client, app)
    key = await create_key(client, admin, ["users:read"], expires_in_days=1)
    expires = datetime.fromisoformat(key["expires_at"].replace("Z", "+00:00"))
    assert timedelta(hours=23) < expires - datetime.now(UTC) <= timedelta(days=1)
    assert (await client.get(f"{API}/admin/users", headers=key_header(key))).status_code == 200

    async with app.state.db.sessionmaker() as session:
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == int(key["id"]))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        await session.commit()
    denied = await client.get(f"{API}/admin/users", headers=key_header(key))
    assert denied.status_code == 401 and denied.json()["error"] == "API_KEY_INVALID"


async def test_create_validation(client, app):
    admin = await make_admin(client, app)
    for body in (
        {"name": "k", "scopes": ["users:delete"]},
        {"name": "k", "scopes": ["*"]},
        {"name": "", "scopes": []},
        {"name": "   ", "scopes": []},
        {"name": "x" * 101, "scopes": []},
        {"name": "bad\x00name", "scopes": []},
        {"name": "k", "scopes": "users:read"},
        {"name": "k", "expires_in_days": 0},
        {"name": "k", "expires_in_days": 100000},
        {"name": "k", "secret": "yk_chosen_by_me"},
        {"scopes": []},
    ):
        response = await client.post(f"{API}/admin/api-keys", json=body, headers=bearer(admin))
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"] == "VALIDATION_ERROR"
    async with app.state.db.sessionmaker() as session:
        assert (await session.scalars(select(ApiKey))).all() == []
    assert await audit_rows(app) == []


async def test_non_admins_cannot_manage_keys(client, app):
    admin = await make_admin(client, app)
    key = await create_key(client, admin, ["users:read"])
    user = await register(client, "plain")
    for method, path, body in (
        ("POST", "/admin/api-keys", {"name": "mine", "scopes": ["users:read"]}),
        ("GET", "/admin/api-keys", None),
        ("DELETE", f"/admin/api-keys/{key['id']}", None),
    ):
        response = await client.request(method, API + path, json=body, headers=bearer(user))
        assert response.status_code == 403 and response.json()["error"] == "FORBIDDEN"
    # A user's bearer token plus a valid key: the user is the caller, and is not an admin.
    mixed = await client.get(f"{API}/admin/users", headers={**bearer(user), **key_header(key)})
    assert mixed.status_code == 403
    assert (await stored_key(app, key["id"])).revoked_at is None
