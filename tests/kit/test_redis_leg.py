"""Distributed mode pieces backed by a real Redis on loopback: shared login throttling across
processes (two app instances here) and the Redis component in /health."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests.conftest import API, make_settings
from yuntu.app import create_app

pytestmark = pytest.mark.anyio

REDIS_URL = os.environ.get("YUNTU_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _reachable(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 1):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_url() -> str:
    if not _reachable(REDIS_URL):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but Redis at {REDIS_URL} is unreachable")
        pytest.skip(f"Redis at {REDIS_URL} unreachable")
    return REDIS_URL


async def _client(app):
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 4000))
    return httpx.AsyncClient(transport=transport, base_url="http://yuntu.test")


async def test_login_throttle_is_shared_between_instances(tmp_path, db_url, redis_url):
    first = create_app(make_settings(tmp_path / "a", db_url, redis_url=redis_url))
    second = create_app(make_settings(tmp_path / "b", db_url, redis_url=redis_url))
    async with LifespanManager(first), LifespanManager(second):
        await first.state.limiter.reset()
        async with await _client(first) as one, await _client(second) as two:
            for index in range(10):
                target = one if index % 2 else two
                response = await target.post(
                    f"{API}/auth/login", json={"username": "victim", "password": "guess-123x"}
                )
                assert response.status_code == 401
            blocked = await one.post(
                f"{API}/auth/login", json={"username": "victim", "password": "guess-123x"}
            )
            assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) >= 1
            health = (await two.get("/health")).json()["data"]
            assert health["components"]["redis"]["status"] == "ok"
        await first.state.limiter.reset()


async def test_health_is_503_when_redis_is_down(tmp_path, db_url):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    app = create_app(make_settings(tmp_path, db_url, redis_url=f"redis://127.0.0.1:{dead_port}/0"))
    async with LifespanManager(app), await _client(app) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["data"]["status"] == "down"
    assert body["data"]["components"]["redis"]["status"] == "down"
    assert body["data"]["components"]["database"]["status"] == "ok"


async def test_health_is_503_when_the_database_is_down(tmp_path):
    missing = tmp_path / "no" / "such" / "dir" / "db.sqlite"
    app = create_app(make_settings(tmp_path, f"sqlite+aiosqlite:///{missing}"))
    async with LifespanManager(app), await _client(app) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    assert response.json()["data"]["components"]["database"]["status"] == "down"


async def test_session_cache_invalidation_crosses_instances(tmp_path, db_url, redis_url):
    import asyncio

    first = create_app(make_settings(tmp_path / "a", db_url, redis_url=redis_url))
    second = create_app(make_settings(tmp_path / "b", db_url, redis_url=redis_url))
    async with LifespanManager(first), LifespanManager(second):
        await first.state.limiter.reset()
        async with await _client(first) as one, await _client(second) as two:
            response = await one.post(
                f"{API}/auth/register", json={"username": "crossy", "password": "correct-horse-42"}
            )
            tokens = response.json()["data"]
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            for _ in range(2):  # instance two caches the session
                assert (await two.get(f"{API}/auth/me", headers=headers)).status_code == 200
            await one.post(f"{API}/auth/logout", json={}, headers=headers)
            status = 200
            for _ in range(50):  # delivered over Redis within milliseconds
                status = (await two.get(f"{API}/auth/me", headers=headers)).status_code
                if status == 401:
                    break
                await asyncio.sleep(0.02)
            assert status == 401
        await first.state.limiter.reset()
