"""Ledger fixtures: a Database on the test database and users created directly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from yuntu.kit.db import Database
from yuntu.ledger import verify
from yuntu.models.identity import User


@pytest.fixture
async def ledger_db(db_url: str) -> AsyncIterator[Database]:
    """The ledger's services on a clean database; every test ends with `ledger verify` clean."""
    db = Database(db_url)
    try:
        yield db
        async with db.read_sessionmaker() as session:
            report = await verify.verify(session)
        assert report.ok, report.as_dict()
    finally:
        await db.dispose()


async def make_user(db: Database, name: str) -> int:
    async with db.transaction() as session:
        user = User(username=name, username_key=name.casefold())
        session.add(user)
        await session.flush()
        return user.id
