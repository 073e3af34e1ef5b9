"""The client query API (`X-API-Key`, scope `packages:read`, rate-limited per key), the CDN base
URL and redirect delivery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API
from tests.packages.helpers import admin_headers, create_package, upload, wait_processed

pytestmark = pytest.mark.anyio
CDN = "https://dl.example.com"


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {
        "workers": 1,
        "worker_poll_interval_seconds": 0.05,
        "render_local_agent": False,
        "packages_steps": ["checksum", "metadata"],
        "packages_query_per_minute": 5,
        "packages_cdn_base_url": CDN + "/",
        "packages_delivery": "redirect",
    }


async def make_key(
    client: httpx.AsyncClient, headers: dict[str, str], scopes: list[str]
) -> tuple[str, str]:
    response = await client.post(
        f"{API}/admin/api-keys", json={"name": "client", "scopes": scopes}, headers=headers
    )
    assert response.status_code == 201, response.text
    data = response.json()["data"]
    return data["id"], data["secret"]


async def published(
    client: httpx.AsyncClient, headers: dict[str, str], content: bytes
) -> dict[str, Any]:
    package = await create_package(client, headers, "Client-App", download_name="release.apk")
    version = await upload(client, headers, package["id"], content, "build-77.apk")
    version = await wait_processed(client, headers, package["id"], version["id"])
    assert version["status"] == "processed"
    return package


async def test_query_with_valid_wrong_scope_and_revoked_keys(
    client: httpx.AsyncClient, app: Any
) -> None:
    headers = await admin_headers(client, app)
    content = b"\x00binary package bytes" * 100
    package = await published(client, headers, content)
    key_id, secret = await make_key(client, headers, ["packages:read"])
    _, wrong = await make_key(client, headers, ["users:read"])

    by_id = await client.get(
        f"{API}/package/query", params={"package_id": package["id"]}, headers={"X-API-Key": secret}
    )
    assert by_id.status_code == 200, by_id.text
    data = by_id.json()["data"]
    assert by_id.json()["code"] == 0
    assert data["package_id"] == package["id"] and data["name"] == "Client-App"
    assert data["status"] == "available" and data["size"] == len(content)
    assert data["download_url"] == f"{CDN}/dist/{package['id']}/release.apk"
    assert data["version"] == "1" and data["md5"] and data["updated_at"].endswith("Z")
    by_name = await client.get(
        f"{API}/package/query", params={"package_name": "client-app"}, headers={"X-API-Key": secret}
    )
    assert by_name.json()["data"] == data

    scope = await client.get(
        f"{API}/package/query", params={"package_id": package["id"]}, headers={"X-API-Key": wrong}
    )
    assert scope.status_code == 403 and scope.json()["error"] == "SCOPE_MISSING"
    for bad in ("", "yk_nope", "x" * 300):
        response = await client.get(
            f"{API}/package/query", params={"package_id": package["id"]}, headers={"X-API-Key": bad}
        )
        assert response.status_code == 401, (bad, response.text)
    missing = await client.get(
        f"{API}/package/query", params={"package_name": "nope"}, headers={"X-API-Key": secret}
    )
    assert missing.status_code == 404
    for params in ({}, {"package_id": package["id"], "package_name": "client-app"}):
        response = await client.get(
            f"{API}/package/query", params=params, headers={"X-API-Key": secret}
        )
        assert response.status_code == 422, response.text

    revoked = await client.delete(f"{API}/admin/api-keys/{key_id}", headers=headers)
    assert revoked.status_code == 200
    after = await client.get(
        f"{API}/package/query", params={"package_id": package["id"]}, headers={"X-API-Key": secret}
    )
    assert after.status_code == 401 and after.json()["error"] == "API_KEY_INVALID"


async def test_query_is_rate_limited_per_key(client: httpx.AsyncClient, app: Any) -> None:
    headers = await admin_headers(client, app)
    package = await create_package(client, headers, "limited")
    _, first = await make_key(client, headers, ["packages:read"])
    _, second = await make_key(client, headers, ["packages:admin"])  # admin implies read
    query = {"package_id": package["id"]}
    for _ in range(5):
        ok = await client.get(f"{API}/package/query", params=query, headers={"X-API-Key": first})
        assert ok.status_code == 200
        assert ok.json()["data"]["status"] == "no_version"
        assert ok.json()["data"]["download_url"] is None
    limited = await client.get(f"{API}/package/query", params=query, headers={"X-API-Key": first})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    other = await client.get(f"{API}/package/query", params=query, headers={"X-API-Key": second})
    assert other.status_code == 200  # each key has its own budget


async def test_redirect_delivery_points_at_a_short_lived_signed_url(
    client: httpx.AsyncClient, app: Any
) -> None:
    headers = await admin_headers(client, app)
    content = b"\x01\x02redirected" * 50
    package = await published(client, headers, content)
    for link in (f"/dist/{package['id']}/release.apk", "/dist/by-name/client-app"):
        response = await client.get(link)
        assert response.status_code == 302, response.text
        assert "max-age=" in response.headers["cache-control"]
        target = response.headers["location"]
        served = await client.get(target)  # the local store signs our own /dl link
        assert served.status_code == 200 and served.content == content
        assert 'filename="release.apk"' in served.headers["content-disposition"]
    tampered = await client.get(target[:-1] + ("0" if target[-1] != "0" else "1"))
    assert tampered.status_code == 403


async def test_admin_endpoints_refuse_non_admins_and_honour_grants(
    client: httpx.AsyncClient, app: Any, tmp_path: Path
) -> None:
    from tests.conftest import bearer, register

    headers = await admin_headers(client, app)
    package = await create_package(client, headers, "granted")
    staff = await register(client, "staff")
    staff_headers = bearer(staff)
    denied = await client.get(f"{API}/packages", headers=staff_headers)
    assert denied.status_code == 403
    assert (
        await client.get(
            f"{API}/package/query", params={"package_id": package["id"]}, headers=staff_headers
        )
    ).status_code == 403

    # read grant: packages and logs visible, nothing writable
    grant = await client.put(
        f"{API}/admin/users/{staff['user']['id']}/grants",
        json={"grants": ["packages:read"]},
        headers=headers,
    )
    assert grant.status_code == 200 and grant.json()["data"]["grants"] == ["packages:read"]
    listed = await client.get(f"{API}/packages", headers=staff_headers)
    assert listed.status_code == 200 and listed.json()["data"]["total"] == 1
    write = await client.post(
        f"{API}/packages", json={"name": "x", "platform": "ios"}, headers=staff_headers
    )
    assert write.status_code == 403, write.text
    # admin grant: may create and upload; the audit log names the user
    await client.put(
        f"{API}/admin/users/{staff['user']['id']}/grants",
        json={"grants": ["packages:admin"]},
        headers=headers,
    )
    created = await create_package(client, staff_headers, "staff-made")
    version = await upload(client, staff_headers, created["id"], b"\x00abc" * 10, "a.bin")
    assert version["uploaded_by"] == staff["user"]["id"]
    await wait_processed(client, staff_headers, created["id"], version["id"])
    audit = await client.get(
        f"{API}/admin/audit", params={"action": "package."}, headers=staff_headers
    )
    assert audit.status_code == 403  # the audit log is for administrators
    audit = await client.get(
        f"{API}/admin/audit",
        params={"actor_user_id": staff["user"]["id"], "action": "package."},
        headers=headers,
    )
    assert {e["action"] for e in audit.json()["data"]["items"]} >= {
        "package.create",
        "package.version_upload",
    }
    grants = await client.get(
        f"{API}/admin/audit", params={"action": "user.grants"}, headers=headers
    )
    assert grants.json()["data"]["total"] == 2
    assert grants.json()["data"]["items"][0]["after"] == {"grants": ["packages:admin"]}
