"""Ledger accounts: one per user and asset, created on first movement, and the system accounts
on the other side of every user movement.

Account ids never change once committed (accounts are never deleted), so each Database keeps
them after commit: a transfer from a known user to a known system account then costs no lookup.
`run` executes the ledger's hot statements, built once, straight through the driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from yuntu.kit.db import database_of, insert_ignoring_conflicts, on_commit, utcnow
from yuntu.kit.errors import E, ErrorSpec
from yuntu.kit.ids import new_id
from yuntu.models.ledger import Asset, HoldStatus, LedgerAccount, LedgerHold, SystemAccount

ACCOUNTS = cast(Table, LedgerAccount.__table__)
_USER_ACCOUNTS = "ledger.user_accounts"  # Database.constants: {(user id, asset): account id}
_USER_IDS = "ledger.user_account_ids"  # {account id} of those
_SYSTEM_IDS = "ledger.system_account_ids"  # {account id} of system accounts
_CACHE_LIMIT = 100_000  # user accounts remembered per process before starting afresh

_FIND_USER = select(ACCOUNTS.c.id).where(
    ACCOUNTS.c.user_id == bindparam("owner"), ACCOUNTS.c.asset == bindparam("asset")
)
_FIND_SYSTEM = select(ACCOUNTS.c.id).where(
    ACCOUNTS.c.code == bindparam("owner"), ACCOUNTS.c.asset == bindparam("asset")
)

_Compiled = tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]] | None
_COMPILED: dict[tuple[Executable, str], _Compiled] = {}


async def run(
    session: AsyncSession | AsyncConnection, statement: Executable, params: dict[str, Any]
) -> CursorResult[Any]:
    """Execute a statement built once at import (bound parameters only) through the driver:
    compiled once per dialect, then only the parameters are converted per call. Building and
    compiling statements per call cost the ledger more CPU than the database's own work.
    Given the session, it flushes first, as the session's own execute would (autoflush); given
    its connection (several statements in a row), the caller has flushed."""
    if isinstance(session, AsyncSession):
        await session.flush()
        connection = await session.connection()
    else:
        connection = session
    dialect = connection.dialect
    key = (statement, dialect.name)  # the statement object itself: kept alive, never reused
    if key not in _COMPILED:
        compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=dialect))
        entry: _Compiled = None
        if compiled.positional and compiled.positiontup:
            names = tuple(compiled.positiontup)
            processors: tuple[Callable[[Any], Any] | None, ...] = tuple(
                cast(
                    "Callable[[Any], Any] | None",
                    compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect),
                )
                for name in names
            )
            entry = (str(compiled), names, processors)
        _COMPILED[key] = entry
    found = _COMPILED[key]
    if found is None:  # a driver with named parameters: the ordinary path
        return cast(CursorResult[Any], await connection.execute(statement, params))
    sql, names, processors = found
    values = tuple(
        params[name] if process is None else process(params[name])
        for name, process in zip(names, processors, strict=True)
    )
    return await connection.exec_driver_sql(sql, values)


def _constants(session: AsyncSession) -> dict[Any, Any] | None:
    try:
        return database_of(session).constants
    except KeyError:  # a session not made by a Database: nothing to remember ids in
        return None


def is_system(session: AsyncSession, account_id: int) -> bool | None:
    """Whether a committed account is a system account, from what this process has seen
    (None: not known; ask the database)."""
    constants = _constants(session)
    if constants is None:
        return None
    if account_id in constants.get(_SYSTEM_IDS, ()):
        return True
    if account_id in constants.get(_USER_IDS, ()):
        return False
    return None


def insufficient(asset: str) -> ErrorSpec:
    return E.INSUFFICIENT_POINTS if asset == Asset.POINTS else E.INSUFFICIENT_BALANCE


async def _get_or_create(
    session: AsyncSession, *, user_id: int | None, code: str | None, asset: str
) -> int:
    find = _FIND_USER if code is None else _FIND_SYSTEM
    params = {"owner": user_id if code is None else code, "asset": asset}
    found = (await run(session, find, params)).scalar()
    if found is not None:
        return int(found)
    now = utcnow()
    statement = (
        insert_ignoring_conflicts(session.bind.dialect.name, ACCOUNTS)
        .values(
            id=new_id(),
            user_id=user_id,
            code=code,
            asset=asset,
            balance=0,
            allow_negative=code is not None,
            created_at=now,
            updated_at=now,
        )
        .returning(ACCOUNTS.c.id)
    )
    created = await session.scalar(statement)
    if created is None:  # another transaction created it meanwhile
        created = (await run(session, find, params)).scalar()
    assert created is not None
    return int(created)


async def user_account(session: AsyncSession, user_id: int, asset: str) -> int:
    """The user's account for `asset`, created if this is its first movement (write session)."""
    constants = _constants(session)
    if constants is None:
        return await _get_or_create(session, user_id=user_id, code=None, asset=asset)
    known: dict[tuple[int, str], int] = constants.setdefault(_USER_ACCOUNTS, {})
    cached = known.get((user_id, asset))
    if cached is not None:
        return cached
    account_id = await _get_or_create(session, user_id=user_id, code=None, asset=asset)

    def remember() -> None:  # only once committed: a rolled-back creation leaves no id behind
        ids: set[int] = constants.setdefault(_USER_IDS, set())
        if len(known) >= _CACHE_LIMIT:
            known.clear()
            ids.clear()
        known[(user_id, asset)] = account_id
        ids.add(account_id)

    on_commit(session, remember)
    return account_id


async def system_account(session: AsyncSession, code: SystemAccount, asset: str) -> int:
    # System account ids never change once created: cached per database after their commit.
    constants = database_of(session).constants
    cached = constants.get(("ledger.system", code, asset))
    if cached is not None:
        return int(cached)
    account_id = await _get_or_create(session, user_id=None, code=code, asset=asset)

    def remember() -> None:
        constants.setdefault(("ledger.system", code, asset), account_id)
        constants.setdefault(_SYSTEM_IDS, set()).add(account_id)

    on_commit(session, remember)
    return account_id


async def find_user_account(session: AsyncSession, user_id: int, asset: str) -> int | None:
    """Without creating it (read sessions)."""
    found = await session.scalar(
        select(ACCOUNTS.c.id).where(ACCOUNTS.c.user_id == user_id, ACCOUNTS.c.asset == asset)
    )
    return None if found is None else int(found)


async def balance_of(session: AsyncSession, user_id: int, asset: str) -> tuple[int, int]:
    """(available balance, amount on hold) of a user; zeros for a user who never moved any."""
    balance = await session.scalar(
        select(ACCOUNTS.c.balance).where(ACCOUNTS.c.user_id == user_id, ACCOUNTS.c.asset == asset)
    )
    if balance is None:
        return 0, 0
    held = await session.scalar(
        select(
            func.coalesce(
                func.sum(LedgerHold.amount - LedgerHold.captured - LedgerHold.released), 0
            )
        )
        .join(LedgerAccount, LedgerAccount.id == LedgerHold.account_id)
        .where(
            LedgerAccount.user_id == user_id,
            LedgerAccount.asset == asset,
            LedgerHold.status == HoldStatus.PENDING,
        )
    )
    return int(balance), int(held or 0)
