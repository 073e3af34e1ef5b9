"""Engine, session factory, declarative base and column types shared by every domain."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import BigInteger, DateTime, MetaData, Table, event, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.types import TypeDecorator

from yuntu.kit.ids import new_id

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def like_literal(value: str) -> str:
    """`value` for a LIKE pattern with `escape="\\"`: its wildcards match themselves."""
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on both databases (SQLite stores naive text, so we re-attach UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not accepted; use UTC-aware values")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime(), int: BigInteger()}


class IdMixin:
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, default=new_id)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the driver: we emit BEGIN IMMEDIATE ourselves.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _begin_immediate(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str, *, read_only: bool = False, **kwargs: Any) -> AsyncEngine:
    """`read_only` matters on SQLite only: such connections read in autocommit beside the
    writer under WAL; every other transaction is BEGIN IMMEDIATE."""
    # Bound parameters (password hashes, emails, tokens) must never reach a log or a traceback.
    kwargs.setdefault("hide_parameters", True)
    if url.startswith("sqlite"):
        if read_only:
            # Each read runs in SQLite's own autocommit (no BEGIN, COMMIT or reset round trips
            # to the driver thread); a request that reads twice may see two snapshots.
            kwargs.setdefault("pool_reset_on_return", None)
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if not read_only:
            # Writers take the lock at BEGIN, so a read-then-write transaction never fails to
            # upgrade its lock after another writer committed (SQLite's "database is locked").
            event.listen(engine.sync_engine, "begin", _begin_immediate)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    return create_async_engine(url, **kwargs)


_AFTER_COMMIT = "yuntu_after_commit"
_DATABASE = "yuntu_database"


def on_commit(session: AsyncSession | Session, callback: Callable[[], object]) -> None:
    """Run `callback` once the session's transaction commits (dropped on rollback): how work
    is announced only after it is durable (job wake-ups, live events)."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(_AFTER_COMMIT, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    for callback in session.info.pop(_AFTER_COMMIT, []):
        try:
            callback()
        except Exception:  # an announcement must never undo or fail a committed transaction
            logging.getLogger("yuntu.db").exception("after-commit callback failed")


@event.listens_for(Session, "after_rollback")
def _drop_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT, None)


def database_of(session: AsyncSession | Session) -> Database:
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    return sync.info[_DATABASE]  # type: ignore[no-any-return]


class Database:
    """Owns the engine and the session factory for one process."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = url
        self.engine = create_engine(url, **engine_kwargs)
        # Process-wide collaborators that services reach through their session (database_of):
        # the live-event bus and the job wake-up, set by the app or worker that owns this.
        self.bus: Any = None
        self.job_waker: Any = None
        self.auth_cache: Any = None
        self.storage: Any = None  # the BlobStore (yuntu.storage)
        self.settings: Any = None
        # Values that never change once committed (system account ids), per database.
        self.constants: dict[Any, Any] = {}
        info = {_DATABASE: self}
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, info=info)
        # Sessions for requests that only read. On SQLite they must not write: the harness gives
        # them to GET/HEAD routes unless a route is marked with kit.http.writes.
        self.read_engine = (
            create_engine(url, read_only=True, **engine_kwargs)
            if self.engine.dialect.name == "sqlite"
            else self.engine
        )
        self.read_sessionmaker = async_sessionmaker(
            self.read_engine, expire_on_commit=False, info=info
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A unit of work outside a request (CLI, jobs): commit on success, roll back on error."""
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def insert_ignoring_conflicts(dialect: str, table: Any) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING on either database (add .values() and .returning())."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


_MISSING = object()


async def bulk_insert(
    session: AsyncSession, table: Table, rows: list[dict[str, Any]], *, chunk: int = 5000
) -> None:
    """INSERT thousands of rows (all with the same keys) as one executemany per chunk, through
    the driver. Core's executemany converts every value of every row in Python; here each column's
    converter runs once per distinct value (a batch shares its timestamps), which makes 10,000
    rows about three times cheaper. Rows must give every column that has a Python-side default
    (they are not applied here)."""
    if not rows:
        return
    keys = list(rows[0])
    missing = [
        column.key
        for column in table.columns
        if column.default is not None and column.key not in keys
    ]
    if missing:
        raise ValueError(f"bulk_insert into {table.name} needs values for {missing}")
    connection = await session.connection()
    dialect = connection.dialect
    compiled = insert(table).compile(dialect=dialect, column_keys=keys)
    if not compiled.positional or not compiled.positiontup:  # a named-parameter driver
        for start in range(0, len(rows), chunk):
            await session.execute(insert(table), rows[start : start + chunk])
        return
    order = list(compiled.positiontup)
    # dialect_impl: the dialect's own processor too (SQLite's DATETIME text with microseconds).
    converters = [table.c[key].type.dialect_impl(dialect).bind_processor(dialect) for key in order]
    active: list[tuple[int, Callable[[Any], Any], dict[Any, Any]]] = [
        (i, process, {}) for i, process in enumerate(converters) if process is not None
    ]
    sql = str(compiled)
    for start in range(0, len(rows), chunk):
        batch = []
        for row in rows[start : start + chunk]:
            values = [row[key] for key in order]
            for i, process, cache in active:
                value = values[i]
                try:
                    converted = cache.get(value, _MISSING)
                except TypeError:  # unhashable (a JSON document): convert every time
                    values[i] = process(value)
                    continue
                if converted is _MISSING:
                    converted = cache[value] = process(value)
                values[i] = converted
            batch.append(tuple(values))
        await connection.exec_driver_sql(sql, batch)


__all__ = [
    "Base",
    "BigInteger",
    "Database",
    "IdMixin",
    "TimestampMixin",
    "UTCDateTime",
    "bulk_insert",
    "insert_ignoring_conflicts",
    "utcnow",
]
