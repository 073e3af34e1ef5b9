"""Transfers: the only way a balance changes.

`transfer` debits one account and credits another of the same asset, in the caller's
transaction: both balances move by conditional updates (a debit that would take a user account
below zero matches no row and raises 402), then the append-only row is written. Concurrent
spends on one account serialize on its row lock (PostgreSQL re-checks the condition after the
lock) or on SQLite's single writer.

Each transfer has a unique idempotency key. Sending the same key again with the same movement
returns the first transfer; with a different movement it is refused (409), as TigerBeetle's
`exists_with_different_*` results."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from yuntu.kit.db import utcnow
from yuntu.kit.errors import AppError, E
from yuntu.kit.ids import new_id
from yuntu.ledger.accounts import ACCOUNTS, insufficient, is_system, run
from yuntu.models.ledger import LedgerTransfer, TransferType

TRANSFERS = cast(Table, LedgerTransfer.__table__)
MAX_AMOUNT = 10**15  # far above any real movement; keeps sums inside 64 bits
KEY_LENGTH = 255  # the column's width


def stored_key(key: str) -> str:
    """The key as stored. Keys derived from a client's Idempotency-Key (up to 255 characters
    itself) with a prefix, or a capture's `:overflow`, can be longer than the column: those are
    kept as their first 150 and last 40 characters around their SHA-256, still one stored key
    per key, with the prefix and the suffix readable."""
    if len(key) <= KEY_LENGTH:
        return key
    return f"{key[:150]}#{hashlib.sha256(key.encode()).hexdigest()}{key[-40:]}"


@dataclass(frozen=True, slots=True)
class Reference:
    """What a movement is for: an order, a bill, a render task, a generation, a subscription."""

    type: str
    id: str | int

    def values(self) -> dict[str, str]:
        return {"reference_type": self.type, "reference_id": str(self.id)[:64]}


@dataclass(frozen=True, slots=True)
class Transfer:
    id: int
    idempotency_key: str
    asset: str
    debit_account_id: int
    credit_account_id: int
    amount: int
    type: str
    debit_balance_after: int
    credit_balance_after: int
    hold_id: int | None
    reverses_id: int | None
    reference_type: str | None
    reference_id: str | None
    created: bool  # False: an earlier transfer with the same key and movement


_FIELDS = tuple(name for name in Transfer.__slots__ if name != "created")  # type: ignore[attr-defined]
_COLUMNS = (
    *_FIELDS,
    "description",
    "actor_user_id",
    "created_at",
)

# The statements of every transfer, built once (see accounts.run).
_FIND = select(*(TRANSFERS.c[name] for name in _FIELDS)).where(
    TRANSFERS.c.idempotency_key == bindparam("key")
)
_MOVE = (
    update(ACCOUNTS)
    .where(ACCOUNTS.c.id == bindparam("account"), ACCOUNTS.c.asset == bindparam("asset"))
    .values(balance=ACCOUNTS.c.balance + bindparam("delta"), updated_at=bindparam("now"))
    .returning(ACCOUNTS.c.balance)
)
_MOVE_GUARDED = _MOVE.where(
    or_(ACCOUNTS.c.allow_negative, ACCOUNTS.c.balance >= bindparam("needed"))
)
_EXISTS = select(ACCOUNTS.c.id).where(
    ACCOUNTS.c.id == bindparam("account"), ACCOUNTS.c.asset == bindparam("asset")
)
# Only the idempotency key may conflict: any other unique violation (two processes sharing a
# snowflake node id) is an error, not a replay.
_INSERTS = {
    name: insert(TRANSFERS)
    .values({column: bindparam(column) for column in _COLUMNS})
    .on_conflict_do_nothing(index_elements=[TRANSFERS.c.idempotency_key])
    .returning(TRANSFERS.c.id)
    for name, insert in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}


def _from_row(row: Any, created: bool) -> Transfer:
    return Transfer(**{name: getattr(row, name) for name in _FIELDS}, created=created)


async def find(session: AsyncSession, key: str) -> Transfer | None:
    row = (await run(session, _FIND, {"key": stored_key(key)})).first()
    return None if row is None else _from_row(row, created=False)


def _same_movement(existing: Transfer, values: dict[str, Any]) -> bool:
    return all(
        getattr(existing, name) == values[name]
        for name in ("asset", "debit_account_id", "credit_account_id", "amount", "type")
    )


async def _move(
    session: AsyncSession | AsyncConnection, account_id: int, asset: str, delta: int, *, guard: bool
) -> int:
    """Add `delta` to one balance; a guarded debit of an account that may not go negative
    matches no row when the balance is short. Returns the new balance."""
    params = {"account": account_id, "asset": asset, "delta": delta, "now": utcnow()}
    if guard:
        params["needed"] = -delta
    balance = (await run(session, _MOVE_GUARDED if guard else _MOVE, params)).scalar()
    if balance is None:
        if guard:
            exists = (await run(session, _EXISTS, {"account": account_id, "asset": asset})).scalar()
            if exists is not None:
                raise AppError(insufficient(asset))
        raise LookupError(f"ledger account {account_id} of {asset} does not exist")
    return int(balance)


async def _ordered_accounts(session: AsyncSession, ids: tuple[int, int]) -> list[int]:
    """Every transaction locks account rows in one global order (user accounts before system
    accounts, then by id), so two opposite movements cannot deadlock. The shared system rows come
    last, which also keeps their locks shortest."""
    kinds = [is_system(session, account) for account in ids]
    if None not in kinds:  # both seen committed before: no need to ask
        known = dict(zip(ids, kinds, strict=True))
        return sorted(ids, key=lambda account: (known[account], account))
    rows = (
        await session.execute(
            select(ACCOUNTS.c.id, ACCOUNTS.c.code.is_not(None)).where(ACCOUNTS.c.id.in_(ids))
        )
    ).all()
    order = {int(row[0]): (bool(row[1]), int(row[0])) for row in rows}
    return sorted(ids, key=lambda account: order.get(account, (True, account)))


async def transfer(
    session: AsyncSession,
    *,
    key: str,
    asset: str,
    debit: int,
    credit: int,
    amount: int,
    type: TransferType,
    reference: Reference | None = None,
    hold_id: int | None = None,
    reverses_id: int | None = None,
    description: str | None = None,
    actor_user_id: int | None = None,
    system_last: bool | None = None,
) -> Transfer:
    """Move `amount` from account `debit` to account `credit` (ids; see ledger.accounts).

    `system_last` tells which of the two is the shared system account when the caller knows
    (saves a lookup): True means `credit` is the system side, False `debit`."""
    if not 0 < amount <= MAX_AMOUNT:
        raise ValueError(f"transfer amount out of range: {amount}")
    if debit == credit:
        raise ValueError("a transfer needs two different accounts")
    key = stored_key(key)
    values: dict[str, Any] = {
        "asset": asset,
        "debit_account_id": debit,
        "credit_account_id": credit,
        "amount": amount,
        "type": type.value,
    }
    await session.flush()  # pending ORM rows first, as autoflush would (a hold placed just now)
    connection = await session.connection()
    found = (await run(connection, _FIND, {"key": key})).first()
    existing = None if found is None else _from_row(found, created=False)
    if existing is not None:
        if _same_movement(existing, values):
            return existing
        raise AppError(E.IDEMPOTENCY_KEY_REUSED, details={"idempotency_key": key})

    if system_last is None:
        order = await _ordered_accounts(session, (debit, credit))
    else:
        order = [debit, credit] if system_last else [credit, debit]
    after: dict[int, int] = {}
    for account in order:
        try:
            delta = -amount if account == debit else amount
            after[account] = await _move(connection, account, asset, delta, guard=account == debit)
        except AppError:
            await _undo(connection, after, debit, asset, amount)
            raise

    row = {
        **values,
        "id": new_id(),
        "idempotency_key": key,
        "hold_id": hold_id,
        "reverses_id": reverses_id,
        "description": (description or "")[:255] or None,
        "actor_user_id": actor_user_id,
        "debit_balance_after": after[debit],
        "credit_balance_after": after[credit],
        "created_at": utcnow(),
        "reference_type": None,
        "reference_id": None,
        **(reference.values() if reference else {}),
    }
    inserted = (await run(connection, _INSERTS[connection.dialect.name], row)).scalar()
    if inserted is None:
        # A concurrent transaction committed the same key after our check: undo ours and let
        # the client retry into the replay.
        await _undo(connection, after, debit, asset, amount)
        raise AppError(E.IDEMPOTENCY_IN_FLIGHT, details={"idempotency_key": key})
    return Transfer(**{name: row[name] for name in _FIELDS}, created=True)


async def _undo(
    session: AsyncSession | AsyncConnection,
    moved: dict[int, int],
    debit: int,
    asset: str,
    amount: int,
) -> None:
    """Take back the balance changes of a refused transfer, so that it changed nothing even
    for a caller that handles the error and commits (one side may already have moved: the rows
    are updated in lock order, not debit first)."""
    for account in moved:
        await _move(session, account, asset, amount if account == debit else -amount, guard=False)


async def reverse(
    session: AsyncSession,
    original_id: int,
    *,
    key: str | None = None,
    amount: int | None = None,
    type: TransferType = TransferType.REVERSAL,
    description: str | None = None,
    actor_user_id: int | None = None,
    partial_ok: bool = False,
    to: int | None = None,
) -> Transfer | None:
    """A correction: move (part of) an earlier transfer back, to its debit side or to account
    `to`. Never more than what is left unreversed. With `partial_ok`, a side that cannot cover
    it gives back what it holds (None if nothing): a refund after the points were spent."""
    # Reversals of one transfer take turns on its row (FOR NO KEY UPDATE: rows that merely
    # reference it are not blocked), so each reads what the previous ones left; otherwise two
    # reversals with different keys could each take back the whole amount.
    original = (
        await session.execute(
            select(TRANSFERS).where(TRANSFERS.c.id == original_id).with_for_update(key_share=True)
        )
    ).first()
    if original is None:
        raise LookupError(f"transfer {original_id} does not exist")
    reversed_so_far = int(
        await session.scalar(
            select(func.coalesce(func.sum(TRANSFERS.c.amount), 0)).where(
                TRANSFERS.c.reverses_id == original_id
            )
        )
        or 0
    )
    wanted = original.amount - reversed_so_far if amount is None else amount
    wanted = min(wanted, original.amount - reversed_so_far)
    if partial_ok:
        holder = (
            await session.execute(
                select(ACCOUNTS.c.balance, ACCOUNTS.c.allow_negative).where(
                    ACCOUNTS.c.id == original.credit_account_id
                )
            )
        ).one()
        if not holder.allow_negative:
            wanted = min(wanted, int(holder.balance))
    if wanted <= 0:
        return None
    return await transfer(
        session,
        key=key or f"reversal:{original_id}:{reversed_so_far}",
        asset=original.asset,
        debit=original.credit_account_id,
        credit=to if to is not None else original.debit_account_id,
        amount=wanted,
        type=type,
        reverses_id=original_id,
        hold_id=None,
        reference=(
            Reference(original.reference_type, original.reference_id)
            if original.reference_type
            else None
        ),
        description=description,
        actor_user_id=actor_user_id,
    )
