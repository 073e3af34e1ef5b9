"""Shared steps of the package distribution tests: an administrator, packages, uploads, and
waiting for processing to end."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import httpx

from tests.conftest import API, bearer, make_admin

# An external tool that rewrites the artifact: copies its input and appends a marker, so the
# served bytes show the step ran.
HARDEN_SCRIPT = """
import sys
data = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(data + b"#hardened")
print("hardened", len(data), "bytes")
"""
MARKER = b"#hardened"


def harden_command(tmp_path: Path) -> dict[str, Any]:
    script = tmp_path / "harden.py"
    script.write_text(HARDEN_SCRIPT)
    return {"template": f"{sys.executable} {script} {{input}} {{output}}", "timeout_seconds": 60}


async def admin_headers(client: httpx.AsyncClient, app: Any) -> dict[str, str]:
    return bearer(await make_admin(client, app))


async def create_package(
    client: httpx.AsyncClient, headers: dict[str, str], name: str = "demo", **extra: Any
) -> dict[str, Any]:
    body = {"name": name, "platform": "android", "description": "Demo app"} | extra
    response = await client.post(f"{API}/packages", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def upload(
    client: httpx.AsyncClient,
    headers: dict[str, str],
    package_id: str,
    content: bytes,
    filename: str = "app.apk",
    notes: str = "",
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/packages/{package_id}/versions",
        files={"file": (filename, content, "application/octet-stream")},
        data={"release_notes": notes},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]  # type: ignore[no-any-return]


async def wait_processed(
    client: httpx.AsyncClient, headers: dict[str, str], package_id: str, version_id: str
) -> dict[str, Any]:
    """The version once processing ended (processed or processing_failed), with its steps."""
    with anyio.fail_after(60):
        while True:
            response = await client.get(
                f"{API}/packages/{package_id}/versions/{version_id}", headers=headers
            )
            assert response.status_code == 200, response.text
            version = response.json()["data"]
            if version["status"] in ("processed", "processing_failed"):
                return version  # type: ignore[no-any-return]
            await anyio.sleep(0.05)


async def download(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    return await client.get(url, **kwargs)
