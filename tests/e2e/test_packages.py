"""Package distribution against a running `yuntu serve` on S3 storage (moto): the first
administrator from `yuntu packages init-admin --api-key`, a CI-style upload with that key (a
file larger than one S3 part, streamed), real ClamAV, the client query API and the permanent link
redirecting to a presigned S3 URL; then `yuntu drive fsck`."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.e2e.conftest import running_server
from tests.support.clamav import make_signature_db

API = "/api/v1"
SIZE = 12 * 1024 * 1024 + 123  # more than two 5 MiB parts


@pytest.mark.parametrize("backend", BACKENDS)
def test_ci_upload_then_clients_download_from_storage(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    _, _, database = make_signature_db(tmp_path)
    extra = {
        "YUNTU_SECRET_KEY": "e2e-secret-key-0123456789-abcdefghijklmnop",
        "YUNTU_STORAGE_URL": request.getfixturevalue("s3_storage_url"),
        "YUNTU_PACKAGES_DELIVERY": "redirect",
        "YUNTU_PACKAGES_CLAMAV_DATABASE": str(database),
        "YUNTU_PACKAGES_CLAMAV_REQUIRED": "true",
        "YUNTU_RENDER_LOCAL_AGENT": "false",
    }
    content = os.urandom(SIZE)
    with running_server(backend, tmp_path, **extra) as server:
        init = server.cli(
            "packages",
            "init-admin",
            "--username",
            "boss",
            "--password",
            "B0ss-pass-phrase",
            "--api-key",
        )
        assert init.returncode == 0, init.stderr
        ci = {"X-API-Key": json.loads(init.stdout)["api_key"]}
        with httpx.Client(base_url=server.base_url, timeout=120) as http:
            created = http.post(
                f"{API}/packages", json={"name": "desktop", "platform": "windows"}, headers=ci
            )
            assert created.status_code == 201, created.text
            package = created.json()["data"]
            uploaded = http.post(
                f"{API}/packages/{package['id']}/versions",
                files={"file": ("Setup.exe", content)},
                data={"release_notes": "nightly"},
                headers=ci,
            )
            assert uploaded.status_code == 201, uploaded.text
            version = uploaded.json()["data"]
            assert version["sha256"] == hashlib.sha256(content).hexdigest()
            assert version["uploaded_by_key"] is not None

            deadline = time.monotonic() + 90
            while True:
                state = http.get(
                    f"{API}/packages/{package['id']}/versions/{version['id']}", headers=ci
                ).json()["data"]
                if state["status"] in ("processed", "processing_failed"):
                    break
                assert time.monotonic() < deadline, state
                time.sleep(0.2)
            assert state["status"] == "processed", state
            assert [s["status"] for s in state["steps"]] == ["succeeded"] * 3

            login = http.post(
                f"{API}/auth/login", json={"account": "boss", "password": "B0ss-pass-phrase"}
            )
            admin = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
            key = http.post(
                f"{API}/admin/api-keys",
                json={"name": "app", "scopes": ["packages:read"]},
                headers=admin,
            ).json()["data"]["secret"]
            answer = http.get(
                f"{API}/package/query",
                params={"package_name": "desktop"},
                headers={"X-API-Key": key},
            )
            assert answer.status_code == 200, answer.text
            found = answer.json()["data"]
            assert found["size"] == SIZE and found["status"] == "available"
            assert found["download_url"] == f"{server.base_url}/dist/{package['id']}/Setup.exe"

            redirect = http.get(found["download_url"])
            assert redirect.status_code == 302
            target = redirect.headers["location"]
            assert "X-Amz-Signature=" in target  # straight from storage, not through us
            served = httpx.get(target, timeout=120)
            assert served.status_code == 200 and served.content == content

        fsck = server.cli("drive", "fsck", "--json")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
