"""The models and the migration history agree on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from yuntu.kit import migrate
from yuntu.kit.db import create_engine
from yuntu.models import metadata

pytestmark = pytest.mark.anyio


def _diff(connection):
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "compare_server_default": True}
    )
    return compare_metadata(context, metadata), context.get_current_revision()


async def test_models_match_migrations(db_url):
    engine = create_engine(db_url)
    try:
        async with engine.connect() as connection:
            diff, revision = await connection.run_sync(_diff)
    finally:
        await engine.dispose()
    assert revision == migrate.head_revision()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_single_head_and_linear_history():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrate.alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
