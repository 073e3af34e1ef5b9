"""The whole distribution flow over HTTP with the real job worker, real ClamAV (a sigtool-made
signature database) and a real external tool: upload -> processing -> publish -> replace ->
rollback, with the permanent links serving the right bytes at every step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API
from tests.packages.helpers import (
    MARKER,
    admin_headers,
    create_package,
    harden_command,
    upload,
    wait_processed,
)
from tests.support.app_packages import build_apk, build_ipa
from tests.support.clamav import SIGNATURE, make_signature_db

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    _, _, database = make_signature_db(tmp_path)
    return {
        "workers": 1,
        "worker_poll_interval_seconds": 0.05,
        "render_local_agent": False,
        "packages_steps": ["checksum", "metadata", "clamav", "harden"],
        "packages_commands": {"harden": harden_command(tmp_path)},
        "packages_clamav_database": str(database),
        "packages_clamav_required": True,
    }


async def current_bytes(client: httpx.AsyncClient, package: dict[str, Any]) -> bytes:
    by_id = await client.get(f"/dist/{package['id']}/{package['download_name']}")
    by_name = await client.get(f"/dist/by-name/{package['name'].upper()}")
    assert by_id.status_code == by_name.status_code == 200, by_id.text
    assert by_id.content == by_name.content
    return by_id.content


async def test_upload_process_publish_replace_rollback(
    client: httpx.AsyncClient, app: Any, tmp_path: Path
) -> None:
    headers = await admin_headers(client, app)
    package = await create_package(client, headers, "demo-app")
    assert package["status"] == "no_version"
    link = f"/dist/{package['id']}/app.apk"
    assert (await client.get(link)).status_code == 404  # nothing published yet

    # v1: a clean APK, processed (metadata parsed, scanned, hardened) and published at once
    apk1 = build_apk(
        tmp_path / "v1.apk", package="com.demo.app", version_name="1.0.0", version_code=1
    ).read_bytes()
    v1 = await upload(client, headers, package["id"], apk1, "app.apk", "first release")
    assert v1["seq"] == 1 and v1["status"] in ("uploaded", "processing", "processed")
    v1 = await wait_processed(client, headers, package["id"], v1["id"])
    assert v1["status"] == "processed", v1
    assert [s["status"] for s in v1["steps"]] == ["succeeded"] * 4
    assert [s["name"] for s in v1["steps"]] == ["checksum", "metadata", "clamav", "harden"]
    assert all(s["duration_ms"] is not None for s in v1["steps"])
    assert v1["steps"][2]["exit_code"] == 0 and v1["steps"][3]["exit_code"] == 0
    assert "hardened" in v1["steps"][3]["log"]
    assert (v1["app_id"], v1["version_name"], v1["version_code"]) == ("com.demo.app", "1.0.0", "1")
    assert v1["app_metadata"]["min_sdk"] == 21
    assert v1["artifact_size"] == len(apk1) + len(MARKER) and v1["is_current"]
    package = (await client.get(f"{API}/packages/{package['id']}", headers=headers)).json()["data"]
    assert package["status"] == "available" and package["download_name"] == "app.apk"
    assert package["download_url"] == f"http://yuntu.test{link}"
    assert await current_bytes(client, package) == apk1 + MARKER

    # v2: a file the custom signature flags: its processing fails, v1 stays live
    infected = (tmp_path / "clamav" / "yuntu-test-fixture.bin").read_bytes()
    v2 = await upload(client, headers, package["id"], infected, "app.apk")
    v2 = await wait_processed(client, headers, package["id"], v2["id"])
    assert v2["status"] == "processing_failed" and "clamav" in v2["error"]
    steps = {s["name"]: s for s in v2["steps"]}
    assert steps["clamav"]["status"] == "failed" and steps["clamav"]["exit_code"] == 1
    assert SIGNATURE in steps["clamav"]["log"]
    assert steps["metadata"]["status"] == "succeeded" and steps["harden"]["status"] == "skipped"
    assert v2["artifact_sha256"] is None and not v2["is_current"]
    assert await current_bytes(client, package) == apk1 + MARKER

    # v3 replaces v1 behind the same link
    apk3 = build_apk(
        tmp_path / "v3.apk", package="com.demo.app", version_name="1.1.0", version_code=2
    ).read_bytes()
    v3 = await upload(client, headers, package["id"], apk3, "app-1.1.apk")
    v3 = await wait_processed(client, headers, package["id"], v3["id"])
    assert v3["status"] == "processed" and v3["is_current"]
    assert await current_bytes(client, package) == apk3 + MARKER

    # rollback without a version: the newest processed one before the current (v1, not v2)
    rolled = await client.post(f"{API}/packages/{package['id']}/rollback", headers=headers)
    assert rolled.status_code == 200, rolled.text
    assert rolled.json()["data"]["current_version_id"] == v1["id"]
    assert await current_bytes(client, package) == apk1 + MARKER

    # publishing a failed version is refused; publishing v3 again works
    refused = await client.post(
        f"{API}/packages/{package['id']}/publish", json={"version_id": v2["id"]}, headers=headers
    )
    assert refused.status_code == 409 and refused.json()["code"] == 409015
    again = await client.post(
        f"{API}/packages/{package['id']}/publish", json={"version_id": v3["id"]}, headers=headers
    )
    assert again.status_code == 200 and again.json()["data"]["current_version_id"] == v3["id"]
    assert await current_bytes(client, package) == apk3 + MARKER

    # the versions list: newest first, the current one marked
    listed = (await client.get(f"{API}/packages/{package['id']}/versions", headers=headers)).json()
    assert [v["seq"] for v in listed["data"]["items"]] == [3, 2, 1]
    assert [v["is_current"] for v in listed["data"]["items"]] == [True, False, False]

    # every administrative action is in the audit log, with who, before/after and the address
    audit = await client.get(
        f"{API}/admin/audit",
        params={"target_type": "package", "target_id": package["id"], "page_size": 100},
        headers=headers,
    )
    entries = audit.json()["data"]["items"]
    actions = [e["action"] for e in reversed(entries)]
    assert actions == [
        "package.create",
        "package.version_upload",
        "package.auto_publish",
        "package.version_upload",
        "package.version_upload",
        "package.auto_publish",
        "package.rollback",
        "package.publish",
    ]
    rollback_entry = next(e for e in entries if e["action"] == "package.rollback")
    assert rollback_entry["before"]["current_version_id"] == v3["id"]
    assert rollback_entry["after"]["current_version_id"] == v1["id"]
    assert rollback_entry["ip"] == "203.0.113.10" and rollback_entry["actor_user_id"]


async def test_ranges_etags_and_head_on_the_permanent_link(
    client: httpx.AsyncClient, app: Any, tmp_path: Path
) -> None:
    headers = await admin_headers(client, app)
    package = await create_package(client, headers, "ios-app", platform="ios")
    ipa = build_ipa(
        tmp_path / "a.ipa", bundle_id="com.demo.ios", short_version="2.0", build="20"
    ).read_bytes()
    version = await upload(client, headers, package["id"], ipa, "Demo.ipa")
    version = await wait_processed(client, headers, package["id"], version["id"])
    assert version["app_id"] == "com.demo.ios" and version["version_name"] == "2.0"
    body = ipa + MARKER
    link = f"/dist/{package['id']}/Demo.ipa"

    whole = await client.get(link)
    etag = whole.headers["etag"]
    assert whole.content == body and etag == f'"{version["artifact_sha256"]}"'
    assert whole.headers["cache-control"].startswith("public, max-age=")
    assert 'filename="Demo.ipa"' in whole.headers["content-disposition"]
    part = await client.get(link, headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.content == body[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{len(body)}"
    assert (await client.get(link, headers={"If-None-Match": etag})).status_code == 304
    head = await client.head(link)
    assert head.status_code == 200 and head.headers["content-length"] == str(len(body))
    beyond = await client.get(link, headers={"Range": f"bytes={len(body) + 5}-"})
    assert beyond.status_code == 416

    # a disabled package's links answer 404 until enabled again
    off = await client.patch(
        f"{API}/packages/{package['id']}", json={"disabled": True}, headers=headers
    )
    assert off.status_code == 200 and off.json()["data"]["status"] == "disabled"
    assert (await client.get(link)).status_code == 404
    on = await client.patch(
        f"{API}/packages/{package['id']}", json={"disabled": False}, headers=headers
    )
    assert on.json()["data"]["status"] == "available"
    assert (await client.get(link)).status_code == 200
    for bad in (
        "/dist/abc/x.ipa",
        "/dist/99999999999999999999/x",
        "/dist/by-name/..%2F..",
        "/dist/by-name/nope",
    ):
        response = await client.get(bad)
        assert response.status_code == 404, (bad, response.text)
