"""Auto-publish never goes backwards: a version that finishes processing after a newer one
leaves the newer one current. Processing is driven by hand here (no worker runs), through the
same functions the job calls."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import API
from tests.packages.helpers import admin_headers, create_package, upload
from yuntu.models.packages import Package, PackageVersion
from yuntu.packages import versions

pytestmark = pytest.mark.anyio


async def finish(app: Any, version_id: str, error: str | None = None) -> None:
    settings = app.state.settings
    async with app.state.db.transaction() as session:
        version = await session.get(PackageVersion, int(version_id), with_for_update=True)
        await versions.start_run(session, version)
    async with app.state.db.transaction() as session:
        version = await session.get(PackageVersion, int(version_id), with_for_update=True)
        await versions.finish_run(session, settings, version, artifact=None, error=error)


async def current(app: Any, package_id: str) -> int | None:
    async with app.state.db.read_sessionmaker() as session:
        package = await session.get(Package, int(package_id))
        return package.current_version_id


async def test_a_late_older_version_does_not_replace_a_newer_one(
    client: httpx.AsyncClient, app: Any
) -> None:
    headers = await admin_headers(client, app)
    package = await create_package(client, headers, "ordered")
    old = await upload(client, headers, package["id"], b"\x00old" * 10, "a.bin")
    new = await upload(client, headers, package["id"], b"\x00new" * 10, "a.bin")
    await finish(app, new["id"])
    assert await current(app, package["id"]) == int(new["id"])
    await finish(app, old["id"])
    assert await current(app, package["id"]) == int(new["id"])  # still the newer one
    served = await client.get(f"/dist/{package['id']}/a.bin")
    assert served.content == b"\x00new" * 10

    # a failed run changes nothing that is published
    third = await upload(client, headers, package["id"], b"\x00bad" * 10, "a.bin")
    await finish(app, third["id"], error="step clamav failed")
    assert await current(app, package["id"]) == int(new["id"])
    listed = await client.get(f"{API}/packages", params={"name": "ordered"}, headers=headers)
    assert listed.json()["data"]["items"][0]["status"] == "available"
    reprocess = await client.post(
        f"{API}/packages/{package['id']}/versions/{third['id']}/reprocess", headers=headers
    )
    assert reprocess.status_code == 200 and reprocess.json()["data"]["status"] == "processing"
    audit = await client.get(
        f"{API}/admin/audit", params={"action": "package.reprocess"}, headers=headers
    )
    entry = audit.json()["data"]["items"][0]
    assert entry["target_id"] == package["id"] and entry["after"]["version_id"] == third["id"]
