"""Shared fixtures. Every database test runs on SQLite and, when YUNTU_TEST_DATABASE_URL names a
PostgreSQL database, on PostgreSQL too (under CI=true that leg is mandatory)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text

from yuntu.app import create_app
from yuntu.kit import migrate
from yuntu.kit.db import create_engine
from yuntu.models import metadata
from yuntu.settings import Settings

# Test modules with async tests declare `pytestmark = pytest.mark.anyio`.
pytest_plugins = ["tests.support.s3_fixtures"]
PG_URL = os.environ.get("YUNTU_TEST_DATABASE_URL", "").strip()
BACKENDS = ["sqlite"] + (["postgres"] if PG_URL else [])
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI", "").lower() == "true" and not PG_URL:
        raise pytest.UsageError("CI=true requires YUNTU_TEST_DATABASE_URL (the PostgreSQL leg)")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _reset_postgres(url: str) -> None:
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


@pytest.fixture(scope="session")
def migrated_databases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """One migrated database per backend for the whole session; tests truncate between runs."""
    urls = {"sqlite": f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"}
    if PG_URL:
        asyncio.run(_reset_postgres(PG_URL))
        urls["postgres"] = PG_URL
    for url in urls.values():
        migrate.upgrade(url)
    return urls


async def truncate_all(url: str) -> None:
    engine = create_engine(url)
    tables = [t.name for t in reversed(metadata.sorted_tables)]
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            # ON DELETE RESTRICT is checked row by row on SQLite: a table referring to itself
            # that way (a reversal to the transfer it reverses) drops those references first.
            for table in metadata.sorted_tables:
                for column in table.columns:
                    if any(
                        fk.column.table is table and fk.ondelete == "RESTRICT"
                        for fk in column.foreign_keys
                    ):
                        await connection.execute(
                            text(f"UPDATE {table.name} SET {column.name} = NULL")
                        )
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))
    await engine.dispose()


@pytest.fixture(params=BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def db_url(db_backend: str, migrated_databases: dict[str, str]) -> str:
    url = migrated_databases[db_backend]
    await truncate_all(url)
    return url


def make_settings(tmp_path: Path, db_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "var",
        "database_url": db_url,
        "secret_key": TEST_SECRET,
        "auto_migrate": False,
        "log_level": "WARNING",
        "workers": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module to change the app's settings."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, db_url: str, settings_overrides: dict[str, Any]) -> Settings:
    return make_settings(tmp_path, db_url, **settings_overrides)


@pytest.fixture
async def app(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application
        if "no_fsck" not in request.keywords:
            await assert_consistent(application)


async def assert_consistent(application: FastAPI) -> None:
    """`yuntu drive fsck` and `yuntu ledger verify` on the app's database and storage: every
    test ends clean (blob reference counts, drive usage and reservations, task counters, no
    orphan objects; balances equal the sums of transfers, holds, orders and bills consistent)."""
    from yuntu.drive import fsck
    from yuntu.ledger import verify

    await asyncio.sleep(0.05)  # after-commit storage clean-ups run as tasks
    report = await fsck.run(application.state.db)
    assert report.clean, report.as_dict()
    async with application.state.db.read_sessionmaker() as session:
        ledger = await verify.verify(session)
    assert ledger.ok, ledger.as_dict()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.10", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://yuntu.test") as http:
        yield http


API = "/api/v1"


async def register(
    client: httpx.AsyncClient,
    username: str = "alice",
    password: str = "correct-horse-42",
    **extra: Any,
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/auth/register", json={"username": username, "password": password, **extra}
    )
    assert response.status_code == 201, response.text
    return response.json()["data"]


async def make_admin(client: Any, app: Any, username: str = "root") -> dict[str, Any]:
    """Register a user, then promote them directly in the database."""
    from sqlalchemy import update

    from yuntu.models.identity import User

    tokens = await register(client, username)
    async with app.state.db.sessionmaker() as session:
        await session.execute(
            update(User).where(User.id == int(tokens["user"]["id"])).values(role="admin")
        )
        await session.commit()
    return tokens


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@pytest.fixture
def env_without_yuntu(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("YUNTU_"):
            monkeypatch.delenv(key)
    yield
