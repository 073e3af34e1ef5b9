"""Admin user management: access control, search and pagination, suspend, reactivate, role
changes, and the audit trail every change leaves."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import select, update

from tests.conftest import API, bearer, make_admin, make_settings, register
from yuntu.app import create_app
from yuntu.identity import service as identity_service
from yuntu.models.audit import AuditEntry
from yuntu.models.identity import User

pytestmark = pytest.mark.anyio

PASSWORD = "correct-horse-42"
CLIENT_IP = "203.0.113.10"  # the peer address the `client` fixture uses


async def login(client: httpx.AsyncClient, account: str, password: str = PASSWORD):
    return await client.post(f"{API}/auth/login", json={"account": account, "password": password})


async def audit_rows(app: FastAPI, action: str | None = None) -> list[AuditEntry]:
    async with app.state.db.sessionmaker() as session:
        stmt = select(AuditEntry).order_by(AuditEntry.created_at, AuditEntry.id)
        if action:
            stmt = stmt.where(AuditEntry.action == action)
        return list((await session.scalars(stmt)).all())


def error(response: httpx.Response) -> str:
    return response.json()["error"]


async def list_users(client, admin, **params: Any) -> dict:
    response = await client.get(f"{API}/admin/users", params=params, headers=bearer(admin))
    assert response.status_code == 200, response.text
    return response.json()["data"]


# ---- access control -----------------------------------------------------------------------------


async def test_no_token_401_and_non_admin_403(client):
    user = await register(client, "plain")
    uid = user["user"]["id"]
    calls = [
        ("GET", f"{API}/admin/users", None),
        ("GET", f"{API}/admin/users/{uid}", None),
        ("POST", f"{API}/admin/users/{uid}/suspend", None),
        ("POST", f"{API}/admin/users/{uid}/reactivate", None),
        ("PUT", f"{API}/admin/users/{uid}/role", {"role": "admin"}),
        ("GET", f"{API}/admin/api-keys", None),
        ("POST", f"{API}/admin/api-keys", {"name": "k", "scopes": []}),
    ]
    for method, url, body in calls:
        anonymous = await client.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, url, anonymous.text)
        assert error(anonymous) == "UNAUTHENTICATED"
        forbidden = await client.request(method, url, json=body, headers=bearer(user))
        assert forbidden.status_code == 403, (method, url, forbidden.text)
        body_json = forbidden.json()
        assert body_json["error"] == "FORBIDDEN" and body_json["code"] == 403001
        assert body_json["data"] is None
    # The non-admin did not promote themself.
    me = await client.get(f"{API}/auth/me", headers=bearer(user))
    assert me.json()["data"]["role"] == "user"


async def test_admin_created_by_service_function_can_list(client, app):
    async with app.state.db.sessionmaker() as session:
        await identity_service.create_user(
            session, username="boss", email=None, phone=None, password=PASSWORD, role="admin"
        )
        await session.commit()
    tokens = (await login(client, "boss")).json()["data"]
    data = await list_users(client, tokens)
    assert [u["username"] for u in data["items"]] == ["boss"]
    assert data["items"][0]["role"] == "admin"


# ---- list, search, filters, pagination ----------------------------------------------------------


async def test_list_search_filters_and_pagination(client, app):
    admin = await make_admin(client, app)
    await register(client, "alice", email="alice@example.com", nickname="Wonder")
    await register(client, "bob", email="bob@corp.example.org")
    await register(client, "carol_x", email="carol@example.com", phone="13800138000")
    await register(client, "dave", nickname="MixedCase")

    data = await list_users(client, admin)
    assert set(data) == {"items", "total", "page", "page_size", "pages"}
    assert data["total"] == 5 and data["page"] == 1 and data["page_size"] == 20
    assert data["pages"] == 1
    # Newest first; ids are strings.
    assert [u["username"] for u in data["items"]][:2] == ["dave", "carol_x"]
    for item in data["items"]:
        assert isinstance(item["id"], str) and item["id"].isdigit()
        assert "password_hash" not in item and "password" not in item

    async def names(**params: Any) -> list[str]:
        return sorted(u["username"] for u in (await list_users(client, admin, **params))["items"])

    assert await names(q="ALI") == ["alice"]  # username, case-insensitive
    assert await names(q="corp.example") == ["bob"]  # email
    assert await names(q="example.com") == ["alice", "carol_x"]
    assert await names(q="1380013") == ["carol_x"]  # phone
    assert await names(q="mixedcase") == ["dave"]  # nickname, case-insensitive
    assert await names(q="_") == ["carol_x"]  # LIKE wildcards are literal
    assert await names(q="%") == []
    assert await names(q="\\") == []
    assert await names(q="nobody") == []
    assert await names(role="admin") == ["root"]
    assert await names(role="user") == ["alice", "bob", "carol_x", "dave"]
    assert await names(status="active", q="bob") == ["bob"]
    assert await names(status="suspended") == []

    page1 = await list_users(client, admin, page=1, page_size=2)
    page3 = await list_users(client, admin, page=3, page_size=2)
    beyond = await list_users(client, admin, page=9, page_size=2)
    assert (page1["total"], page1["pages"], len(page1["items"])) == (5, 3, 2)
    assert (page3["page"], len(page3["items"])) == (3, 1)
    assert beyond["items"] == [] and beyond["total"] == 5
    everyone = [
        u["id"]
        for p in (1, 2, 3)
        for u in (await list_users(client, admin, page=p, page_size=2))["items"]
    ]
    assert len(set(everyone)) == 5  # stable order, no duplicates across pages

    for params in (
        {"page_size": 101},
        {"page": 0},
        {"status": "bogus"},
        {"role": "root"},
        {"q": "x" * 101},
        {"q": "a\x00b"},
    ):
        response = await client.get(f"{API}/admin/users", params=params, headers=bearer(admin))
        assert response.status_code == 422, (params, response.text)
        assert error(response) == "VALIDATION_ERROR"


async def test_get_one_user_and_unknown_id(client, app):
    admin = await make_admin(client, app)
    alice = await register(client, "alice", email="alice@example.com")
    uid = alice["user"]["id"]
    response = await client.get(f"{API}/admin/users/{uid}", headers=bearer(admin))
    assert response.status_code == 200
    data = response.json()["data"]
    assert (
        data["id"] == uid and data["username"] == "alice" and data["email"] == "alice@example.com"
    )
    assert data["created_at"].endswith("Z")

    missing = await client.get(f"{API}/admin/users/123456789", headers=bearer(admin))
    assert missing.status_code == 404 and error(missing) == "NOT_FOUND"
    for bad in ("abc", "0", "-1", "99999999999999999999"):
        response = await client.get(f"{API}/admin/users/{bad}", headers=bearer(admin))
        assert response.status_code == 422, (bad, response.text)
    for method, path in (("POST", "suspend"), ("POST", "reactivate")):
        response = await client.request(
            method, f"{API}/admin/users/123456789/{path}", headers=bearer(admin)
        )
        assert response.status_code == 404
    response = await client.put(
        f"{API}/admin/users/123456789/role", json={"role": "admin"}, headers=bearer(admin)
    )
    assert response.status_code == 404
    assert await audit_rows(app) == []


# ---- suspend and reactivate ---------------------------------------------------------------------


async def test_suspend_cuts_off_tokens_refresh_and_login_then_reactivate(client, app):
    admin = await make_admin(client, app)
    victim = await register(client, "mallory")
    second = (await login(client, "mallory")).json()["data"]  # another live session
    uid = victim["user"]["id"]
    assert (await client.get(f"{API}/auth/me", headers=bearer(victim))).status_code == 200

    response = await client.post(
        f"{API}/admin/users/{uid}/suspend",
        json={"reason": "abuse report #12"},
        headers=bearer(admin),
    )
    assert response.status_code == 200, response.text
    assert response.json()["data"]["status"] == "suspended"

    for tokens in (victim, second):
        me = await client.get(f"{API}/auth/me", headers=bearer(tokens))
        assert me.status_code == 401 and error(me) in {"ACCOUNT_DISABLED", "SESSION_REVOKED"}
        refreshed = await client.post(
            f"{API}/auth/refresh", json={"refresh_token": tokens["refresh_token"]}
        )
        assert refreshed.status_code == 401, refreshed.text
    denied = await login(client, "mallory")
    assert denied.status_code == 401 and error(denied) == "ACCOUNT_DISABLED"
    wrong = await login(client, "mallory", "not-the-password-1")
    assert wrong.status_code == 401 and error(wrong) == "INVALID_CREDENTIALS"

    listed = await list_users(client, admin, status="suspended")
    assert [u["id"] for u in listed["items"]] == [uid]

    response = await client.post(f"{API}/admin/users/{uid}/reactivate", headers=bearer(admin))
    assert response.status_code == 200 and response.json()["data"]["status"] == "active"
    fresh = await login(client, "mallory")
    assert fresh.status_code == 200, fresh.text
    me = await client.get(f"{API}/auth/me", headers=bearer(fresh.json()["data"]))
    assert me.status_code == 200
    # Reactivation does not resurrect the sessions the suspension revoked.
    old = await client.get(f"{API}/auth/me", headers=bearer(victim))
    assert old.status_code == 401

    rows = await audit_rows(app)
    assert [r.action for r in rows] == ["user.suspended", "user.active"]
    suspend_row, reactivate_row = rows
    assert suspend_row.actor_user_id == int(admin["user"]["id"])
    assert suspend_row.target_type == "user" and suspend_row.target_id == uid
    assert suspend_row.before == {"status": "active"}
    assert suspend_row.after == {"status": "suspended", "reason": "abuse report #12"}
    assert suspend_row.ip == CLIENT_IP and suspend_row.created_at is not None
    assert reactivate_row.before == {"status": "suspended"}
    assert reactivate_row.after["status"] == "active"
    assert reactivate_row.ip == CLIENT_IP


async def test_suspend_body_validation(client, app):
    admin = await make_admin(client, app)
    uid = (await register(client, "target"))["user"]["id"]
    for body in ({"reason": "x" * 201}, {"reason": "bad\x07"}, {"unexpected": 1}):
        response = await client.post(
            f"{API}/admin/users/{uid}/suspend", json=body, headers=bearer(admin)
        )
        assert response.status_code == 422, (body, response.text)
    user = (await client.get(f"{API}/admin/users/{uid}", headers=bearer(admin))).json()["data"]
    assert user["status"] == "active"
    assert await audit_rows(app) == []


async def test_suspended_admin_loses_admin_access_at_once(client, app):
    first = await make_admin(client, app, "root")
    second = await make_admin(client, app, "deputy")
    response = await client.post(
        f"{API}/admin/users/{second['user']['id']}/suspend", headers=bearer(first)
    )
    assert response.status_code == 200
    blocked = await client.get(f"{API}/admin/users", headers=bearer(second))
    assert blocked.status_code == 401


async def test_admin_cannot_suspend_or_demote_self(client, app):
    admin = await make_admin(client, app)
    uid = admin["user"]["id"]
    for method, path, body in (
        ("POST", "suspend", None),
        ("POST", "reactivate", None),
        ("PUT", "role", {"role": "user"}),
    ):
        response = await client.request(
            method, f"{API}/admin/users/{uid}/{path}", json=body, headers=bearer(admin)
        )
        assert response.status_code == 409, (path, response.text)
        assert error(response) == "CONFLICT"
    me = (await client.get(f"{API}/auth/me", headers=bearer(admin))).json()["data"]
    assert me["role"] == "admin" and me["status"] == "active"
    assert await audit_rows(app) == []


async def test_deleted_user_status_cannot_change(client, app):
    admin = await make_admin(client, app)
    uid = (await register(client, "gone"))["user"]["id"]
    async with app.state.db.sessionmaker() as session:
        await session.execute(update(User).where(User.id == int(uid)).values(status="deleted"))
        await session.commit()
    for path in ("suspend", "reactivate"):
        response = await client.post(f"{API}/admin/users/{uid}/{path}", headers=bearer(admin))
        assert response.status_code == 409 and error(response) == "CONFLICT"
    assert (await list_users(client, admin, status="deleted"))["total"] == 1


# ---- roles --------------------------------------------------------------------------------------


async def test_role_change_promotes_and_demotes(client, app):
    admin = await make_admin(client, app)
    bob = await register(client, "bob")
    uid = bob["user"]["id"]
    assert (await client.get(f"{API}/admin/users", headers=bearer(bob))).status_code == 403

    response = await client.put(
        f"{API}/admin/users/{uid}/role", json={"role": "admin"}, headers=bearer(admin)
    )
    assert response.status_code == 200 and response.json()["data"]["role"] == "admin"
    # Bob's existing token carries no role: the promotion applies at once.
    assert (await client.get(f"{API}/admin/users", headers=bearer(bob))).status_code == 200

    response = await client.put(
        f"{API}/admin/users/{uid}/role", json={"role": "user"}, headers=bearer(admin)
    )
    assert response.status_code == 200 and response.json()["data"]["role"] == "user"
    assert (await client.get(f"{API}/admin/users", headers=bearer(bob))).status_code == 403

    for body in ({"role": "superuser"}, {}, {"role": "admin", "extra": True}):
        response = await client.put(
            f"{API}/admin/users/{uid}/role", json=body, headers=bearer(admin)
        )
        assert response.status_code == 422, (body, response.text)

    rows = await audit_rows(app, "user.role")
    assert [(r.before, r.after) for r in rows] == [
        ({"role": "user"}, {"role": "admin"}),
        ({"role": "admin"}, {"role": "user"}),
    ]
    for row in rows:
        assert row.actor_user_id == int(admin["user"]["id"])
        assert row.target_type == "user" and row.target_id == uid and row.ip == CLIENT_IP


async def test_audit_ip_is_the_client_behind_a_trusted_proxy(tmp_path, db_url):
    proxied_app = create_app(make_settings(tmp_path, db_url, trusted_proxies=["10.0.0.0/8"]))
    async with LifespanManager(proxied_app):
        transport = httpx.ASGITransport(app=proxied_app, client=("10.1.2.3", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://yuntu.test") as http:
            admin = await make_admin(http, proxied_app)
            uid = (await register(http, "target"))["user"]["id"]
            headers = {**bearer(admin), "X-Forwarded-For": "198.51.100.7"}
            response = await http.post(f"{API}/admin/users/{uid}/suspend", headers=headers)
            assert response.status_code == 200
            rows = await audit_rows(proxied_app, "user.suspended")
    assert [r.ip for r in rows] == ["198.51.100.7"]
