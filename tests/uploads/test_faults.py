"""Storage faults: a full disk on the local backend (a real `yuntu serve` whose file-size limit
makes writes fail with EFBIG, as a full disk fails with ENOSPC) and an S3 endpoint that refuses
requests. Each answers with a clear error and leaves nothing half-written."""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import API, bearer, free_port, register
from tests.e2e.conftest import base_env, yuntu_command
from tests.support.s3_fixtures import s3_admin_client
from tests.uploads.test_transfer import drive_usage, file_ids, make_task

pytestmark = pytest.mark.anyio
MiB = 1024 * 1024
FILE_SIZE_LIMIT = 8 * MiB


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG, do not kill


@pytest.mark.slow
@pytest.mark.anyio
async def test_full_disk_on_local_backend(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path / "var", None, YUNTU_SECRET_KEY="fault-test-secret-0123456789-abcdefgh")
    process = subprocess.Popen(  # noqa: ASYNC220 (needs preexec_fn, which anyio lacks)
        [*yuntu_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,  # not a regular file: the size limit does not apply to it
        stderr=subprocess.DEVNULL,
        preexec_fn=_limit_file_size,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            for _ in range(300):
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await _sleep(0.1)
            headers = bearer(await register(client))
            data = os.urandom(12 * MiB)
            task = await make_task(client, headers, {"big.bin": data})
            url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['big.bin']}"
            assert (
                await client.post(f"{url}/multipart/init", json={}, headers=headers)
            ).status_code == 200
            first = await client.post(
                f"{url}/multipart/upload",
                params={"part_number": 1},
                content=data[: 5 * MiB],
                headers=headers,
            )
            assert first.status_code == 200
            full = await client.post(
                f"{url}/multipart/upload",
                params={"part_number": 2},
                content=data[5 * MiB : 10 * MiB],
                headers=headers,
            )
            assert full.status_code == 507, full.text
            assert full.json()["error"] == "STORAGE_FULL"
            listing = (await client.get(f"{url}/multipart", headers=headers)).json()["data"]
            assert listing["missing"] == [2, 3]  # the failed part was not recorded
            aborted = await client.post(f"{url}/multipart/abort", headers=headers)
            assert aborted.status_code == 200
            cancelled = await client.put(f"{API}/upload-tasks/{task['id']}/cancel", headers=headers)
            assert cancelled.status_code == 200
            await _sleep(0.3)  # the storage abort runs after commit
    finally:
        process.terminate()
        process.wait(30)
    fsck = subprocess.run(  # noqa: ASYNC221 (the server is stopped; nothing else runs)
        [*yuntu_command(), "drive", "fsck", "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


async def _sleep(seconds: float) -> None:
    import anyio

    await anyio.sleep(seconds)


@pytest.fixture
def settings_overrides(s3_storage_url: str) -> dict[str, Any]:
    return {"storage_url": s3_storage_url}


async def test_s3_refusing_requests(
    client: httpx.AsyncClient, app: Any, s3_storage_url: str, moto_endpoint: str
) -> None:
    headers = bearer(await register(client))
    data = os.urandom(2000)
    task = await make_task(client, headers, {"a.bin": data})
    url = f"{API}/upload-tasks/{task['id']}/files/{file_ids(task)['a.bin']}"
    bucket = urlsplit(s3_storage_url).hostname or ""
    admin = s3_admin_client(moto_endpoint)
    admin.delete_bucket(Bucket=bucket)
    try:
        failed = await client.post(f"{url}/upload", content=data, headers=headers)
        assert failed.status_code == 502, failed.text
        assert failed.json()["error"] == "STORAGE_UNAVAILABLE"
        assert "bucket" not in failed.text.lower()  # no backend detail leaks out
        init = await client.post(f"{url}/multipart/init", json={}, headers=headers)
        assert init.status_code in (400, 502)  # 2000 bytes is too small for multipart anyway
        health = await client.get("/health")
        assert health.status_code == 503
        files = (await client.get(f"{API}/upload-tasks/{task['id']}/files", headers=headers)).json()
        assert files["data"]["items"][0]["status"] == "pending"  # untouched, can be sent again
        assert await drive_usage(app) == (0, len(data))
    finally:
        admin.create_bucket(Bucket=bucket)
    ok = await client.post(f"{url}/upload", content=data, headers=headers)
    assert ok.status_code == 200
    assert ok.json()["data"]["sha256"] == hashlib.sha256(data).hexdigest()
