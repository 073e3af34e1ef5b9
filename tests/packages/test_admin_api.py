"""Package administration: validation, filters, updates, deletion, bad uploads (nothing left
behind), manual publishing, reprocessing, and ClamAV missing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API
from tests.packages.helpers import admin_headers, create_package, upload, wait_processed

pytestmark = pytest.mark.anyio


@pytest.fixture
def settings_overrides(tmp_path: Path) -> dict[str, Any]:
    # `flaky` fails while its flag file exists: a failed version, then a reprocess that works
    flag = tmp_path / "fail-flag"
    flag.write_text("1")
    script = tmp_path / "flaky.py"
    script.write_text(
        "import os, sys\n"
        f"if os.path.exists({str(flag)!r}):\n"
        "    print('tool refused the package'); sys.exit(3)\n"
        "print('ok')\n"
    )
    import sys

    return {
        "workers": 1,
        "worker_poll_interval_seconds": 0.05,
        "render_local_agent": False,
        "packages_steps": ["checksum", "clamav", "flaky"],
        "packages_commands": {"flaky": {"template": f"{sys.executable} {script} {{input}}"}},
        "packages_clamscan_path": "/nonexistent/clamscan",  # ClamAV missing, not required
        "packages_auto_publish": False,
        "packages_max_upload_bytes": 4096,
    }


async def test_create_validate_filter_update_delete(client: httpx.AsyncClient, app: Any) -> None:
    headers = await admin_headers(client, app)
    first = await create_package(client, headers, "Alpha.app")
    await create_package(client, headers, "beta_win", platform="windows")
    taken = await client.post(
        f"{API}/packages", json={"name": "ALPHA.APP", "platform": "ios"}, headers=headers
    )
    assert taken.status_code == 409 and taken.json()["error"] == "PACKAGE_NAME_TAKEN"
    for body in (
        {"name": "../x", "platform": "ios"},
        {"name": "", "platform": "ios"},
        {"name": "a" * 101, "platform": "ios"},
        {"name": "ok", "platform": "symbian"},
        {"name": "ok", "platform": "ios", "download_name": "a/b.apk"},
        {"name": "ok", "platform": "ios", "owner": "me"},
        {"name": "ok", "platform": "ios", "description": "bad\x00"},
    ):
        response = await client.post(f"{API}/packages", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)

    async def names(**params: Any) -> list[str]:
        response = await client.get(f"{API}/packages", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return [p["name"] for p in response.json()["data"]["items"]]

    assert await names() == ["beta_win", "Alpha.app"]
    assert await names(name="ALP") == ["Alpha.app"]
    assert await names(name="_") == ["beta_win"]  # a wildcard taken literally
    assert await names(platform="windows") == ["beta_win"]
    assert await names(status="no_version") == ["beta_win", "Alpha.app"]
    assert await names(status="available") == []
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await names(created_from=future) == []
    assert await names(created_to=future) == ["beta_win", "Alpha.app"]
    naive = await client.get(
        f"{API}/packages", params={"created_from": "2026-01-01T00:00:00"}, headers=headers
    )
    assert naive.status_code == 422

    updated = await client.patch(
        f"{API}/packages/{first['id']}",
        json={"name": "alpha2", "description": "new", "download_name": "alpha.apk"},
        headers=headers,
    )
    assert updated.status_code == 200, updated.text
    assert updated.json()["data"]["download_url"].endswith(f"/dist/{first['id']}/alpha.apk")
    clash = await client.patch(
        f"{API}/packages/{first['id']}", json={"name": "BETA_WIN"}, headers=headers
    )
    assert clash.status_code == 409
    null = await client.patch(f"{API}/packages/{first['id']}", json={"name": None}, headers=headers)
    assert null.status_code == 422
    for missing in ("1", "999999999999", "abc", "-5"):
        response = await client.get(f"{API}/packages/{missing}", headers=headers)
        assert response.status_code in (404, 422), response.text

    content = b"\x00" * 100
    version = await upload(client, headers, first["id"], content, "a.apk")
    await wait_processed(client, headers, first["id"], version["id"])
    deleted = await client.delete(f"{API}/packages/{first['id']}", headers=headers)
    assert deleted.status_code == 200
    assert (await client.get(f"{API}/packages/{first['id']}", headers=headers)).status_code == 404
    assert (await client.get(f"/dist/{first['id']}/alpha.apk")).status_code == 404
    audit = await client.get(
        f"{API}/admin/audit", params={"target_id": first["id"]}, headers=headers
    )
    actions = [e["action"] for e in audit.json()["data"]["items"]]
    assert actions[0] == "package.delete" and "package.update" in actions
    update_entry = next(e for e in audit.json()["data"]["items"] if e["action"] == "package.update")
    assert (
        update_entry["before"]["name"] == "Alpha.app" and update_entry["after"]["name"] == "alpha2"
    )
    # the fixture's fsck checks that the deleted versions released their blob references


async def test_bad_uploads_leave_nothing(client: httpx.AsyncClient, app: Any) -> None:
    headers = await admin_headers(client, app)
    package = await create_package(client, headers, "uploads")
    url = f"{API}/packages/{package['id']}/versions"
    too_big = await client.post(url, files={"file": ("a.apk", b"x" * 5000)}, headers=headers)
    assert too_big.status_code == 413
    no_file = await client.post(
        url, data={"release_notes": "hi"}, files={"other": ("a", b"1")}, headers=headers
    )
    assert no_file.status_code == 422
    not_multipart = await client.post(
        url, content=b"raw", headers=headers | {"Content-Type": "application/octet-stream"}
    )
    assert not_multipart.status_code == 415
    foreign = await client.post(
        f"{API}/packages/12345/versions", files={"file": ("a.apk", b"abc")}, headers=headers
    )
    assert foreign.status_code == 404
    bad_notes = await client.post(
        url, files={"file": ("a.apk", b"abc")}, data={"release_notes": "x\x00"}, headers=headers
    )
    assert bad_notes.status_code == 422
    truncated = await client.post(
        url,
        content=b'--b\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        headers=headers | {"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert truncated.status_code == 400
    listed = await client.get(url, headers=headers)
    assert listed.json()["data"]["total"] == 0
    # the app fixture's fsck finds no blob, reference or stored object left behind


async def test_manual_publish_reprocess_and_missing_clamav(
    client: httpx.AsyncClient, app: Any, tmp_path: Path
) -> None:
    headers = await admin_headers(client, app)
    package = await create_package(client, headers, "manual")
    version = await upload(client, headers, package["id"], b"\x00\x01" * 50, "m.bin")
    version = await wait_processed(client, headers, package["id"], version["id"])
    assert version["status"] == "processing_failed"
    steps = {s["name"]: s for s in version["steps"]}
    assert steps["clamav"]["status"] == "skipped" and "not installed" in steps["clamav"]["log"]
    assert steps["flaky"]["status"] == "failed" and steps["flaky"]["exit_code"] == 3
    assert "tool refused" in steps["flaky"]["log"]

    (tmp_path / "fail-flag").unlink()
    again = await client.post(
        f"{API}/packages/{package['id']}/versions/{version['id']}/reprocess", headers=headers
    )
    assert again.status_code == 200, again.text
    version = await wait_processed(client, headers, package["id"], version["id"])
    assert version["status"] == "processed" and version["runs"] == 2
    assert not version["is_current"]  # auto-publish is off
    first_run = await client.get(
        f"{API}/packages/{package['id']}/versions/{version['id']}/logs",
        params={"run": 1},
        headers=headers,
    )
    assert [s["status"] for s in first_run.json()["data"]] == ["succeeded", "skipped", "failed"]
    twice = await client.post(
        f"{API}/packages/{package['id']}/versions/{version['id']}/reprocess", headers=headers
    )
    assert twice.status_code == 409  # a processed version is final
    assert (await client.get(f"/dist/{package['id']}/m.bin")).status_code == 404

    published = await client.post(
        f"{API}/packages/{package['id']}/publish",
        json={"version_id": version["id"]},
        headers=headers,
    )
    assert published.status_code == 200 and published.json()["data"]["status"] == "available"
    served = await client.get(f"/dist/{package['id']}/m.bin")
    assert served.content == b"\x00\x01" * 50
    nothing_older = await client.post(f"{API}/packages/{package['id']}/rollback", headers=headers)
    assert nothing_older.status_code == 409
    other = await create_package(client, headers, "other")
    foreign = await client.post(
        f"{API}/packages/{other['id']}/publish", json={"version_id": version["id"]}, headers=headers
    )
    assert foreign.status_code == 404  # a version of another package
