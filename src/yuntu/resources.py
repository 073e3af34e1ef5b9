"""Process-wide resources every entry point needs (server, worker, CLI): the database and the
blob store, opened together so services reach both through their session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from yuntu.kit.db import Database
from yuntu.settings import Settings
from yuntu.storage import open_store


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    db = Database(settings.effective_database_url)
    db.settings = settings
    store = open_store(settings.effective_storage_url)
    try:
        await store.start()
        db.storage = store
        yield db
    finally:
        await store.close()
        await db.dispose()
