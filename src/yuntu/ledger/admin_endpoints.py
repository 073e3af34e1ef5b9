"""Administrator ledger tools under /api/v1/admin/ledger: credit or debit a user with a reason
(audited), reverse a transfer (audited), list transfers, a user's balances."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Query

from yuntu.identity.deps import ClientInfo, DbSession, IdempotentAdmin, Principal, require_scope
from yuntu.kit.errors import AppError, E
from yuntu.kit.routing import error_responses, make_router
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params
from yuntu.kit.text import line
from yuntu.ledger import accounts
from yuntu.ledger import admin as service
from yuntu.ledger.admin_schemas import (
    AccountSide,
    AdjustmentIn,
    AdminTransferOut,
    ReversalIn,
    UserBalancesOut,
    parse_amount,
    render_amount,
)
from yuntu.ledger.money import fen_to_str
from yuntu.ledger.schemas import TimeRangeQuery
from yuntu.ledger.transfers import Transfer
from yuntu.models.identity import User
from yuntu.models.ledger import Asset, LedgerAccount, LedgerTransfer, TransferType

router = make_router(prefix="/admin/ledger", tags=["admin"], responses=error_responses(401, 403))
Pagination = Annotated[PageParams, Depends(page_params)]
LedgerReader = Annotated[Principal, require_scope("ledger:read")]


def _out(
    transfer: LedgerTransfer | Transfer, debit: AccountSide, credit: AccountSide, **extra: object
) -> AdminTransferOut:
    return AdminTransferOut(
        id=transfer.id,
        asset=Asset(transfer.asset),
        amount=render_amount(transfer.asset, transfer.amount),
        type=TransferType(transfer.type),
        debit=debit,
        credit=credit,
        reference_type=transfer.reference_type,
        reference_id=transfer.reference_id,
        reverses_id=transfer.reverses_id,
        hold_id=transfer.hold_id,
        idempotency_key=transfer.idempotency_key,
        **extra,  # type: ignore[arg-type]
    )


def _side(account: LedgerAccount) -> AccountSide:
    return AccountSide(account_id=account.id, user_id=account.user_id, system=account.code)


async def _describe(session: DbSession, moved: Transfer) -> AdminTransferOut:
    row = await session.get(LedgerTransfer, moved.id)
    debit = await session.get(LedgerAccount, moved.debit_account_id)
    credit = await session.get(LedgerAccount, moved.credit_account_id)
    assert row is not None and debit is not None and credit is not None
    return _out(
        row,
        _side(debit),
        _side(credit),
        description=row.description,
        actor_user_id=row.actor_user_id,
        created_at=row.created_at,
    )


@router.post(
    "/adjustments",
    status_code=201,
    summary="Credit or debit a user (audited)",
    responses=error_responses(402, 404, 409),
)
async def adjust(
    body: AdjustmentIn, admin: IdempotentAdmin, session: DbSession, client: ClientInfo
) -> Envelope[AdminTransferOut]:
    """A transfer between the user and the `adjustments` account, with the reason as its
    description and an audit entry holding the balances before and after. A debit cannot take
    the user below zero (402). Send `Idempotency-Key` so a retried request moves money once."""
    moved = await service.adjust(
        session,
        admin_id=admin.user.id,
        user_id=body.user_id,
        asset=body.asset,
        direction=body.direction,
        amount=body.amount_minor,
        reason=body.reason,
        ip=client.ip,
        idempotency_key=admin.idempotency_key,
    )
    return Envelope(data=await _describe(session, moved))


@router.post(
    "/transfers/{transfer_id}/reverse",
    status_code=201,
    summary="Reverse a transfer (audited)",
    responses=error_responses(402, 404, 409),
)
async def reverse(
    transfer_id: Annotated[Id, Path()],
    body: ReversalIn,
    admin: IdempotentAdmin,
    session: DbSession,
    client: ClientInfo,
) -> Envelope[AdminTransferOut]:
    """Corrections are new transfers, never edits: the opposite movement of the transfer (or
    of `amount` of it), never more than is left unreversed (409 when nothing is)."""
    original = await session.get(LedgerTransfer, transfer_id)
    if original is None:
        raise AppError(E.NOT_FOUND)
    amount = None if body.amount is None else _amount(original.asset, body.amount)
    moved = await service.reverse_transfer(
        session,
        admin_id=admin.user.id,
        transfer_id=transfer_id,
        amount=amount,
        reason=body.reason,
        ip=client.ip,
        idempotency_key=admin.idempotency_key,
    )
    return Envelope(data=await _describe(session, moved))


def _amount(asset: str, value: str | int) -> int:
    try:
        return parse_amount(asset, value)
    except ValueError as exc:
        raise AppError(
            E.VALIDATION_ERROR, details=[{"field": "body.amount", "message": str(exc)}]
        ) from None


@router.get("/transfers", summary="List transfers")
async def list_transfers(
    _reader: LedgerReader,
    session: DbSession,
    pagination: Pagination,
    period: TimeRangeQuery,
    user_id: Annotated[Id | None, Query(description="Either side is this user")] = None,
    asset: Annotated[Asset | None, Query()] = None,
    type: Annotated[TransferType | None, Query()] = None,
    reference_type: Annotated[str | None, line(32), Query()] = None,
    reference_id: Annotated[str | None, line(64), Query()] = None,
) -> Envelope[Page[AdminTransferOut]]:
    """Newest first. Admins, or API keys with `ledger:read`."""
    filters = service.TransferFilter(
        user_id=user_id,
        asset=asset,
        type=type,
        reference_type=reference_type,
        reference_id=reference_id,
        since=period.since,
        until=period.until,
    )
    rows, total = await service.list_transfers(
        session, filters, pagination.offset, pagination.page_size
    )
    items = [
        _out(
            row,
            _side(debit),
            _side(credit),
            description=row.description,
            actor_user_id=row.actor_user_id,
            created_at=row.created_at,
        )
        for row, debit, credit in rows
    ]
    return Envelope(data=Page[AdminTransferOut](**make_page(items, total, pagination)))


@router.get(
    "/users/{user_id}/balances",
    summary="A user's balances",
    responses=error_responses(404),
)
async def user_balances(
    user_id: Annotated[Id, Path()], _reader: LedgerReader, session: DbSession
) -> Envelope[UserBalancesOut]:
    if await session.get(User, user_id) is None:
        raise AppError(E.NOT_FOUND)
    cny, cny_held = await accounts.balance_of(session, user_id, Asset.CNY)
    points, points_held = await accounts.balance_of(session, user_id, Asset.POINTS)
    return Envelope(
        data=UserBalancesOut(
            user_id=user_id,
            cny={
                "balance": fen_to_str(cny),
                "held": fen_to_str(cny_held),
                "total": fen_to_str(cny + cny_held),
            },
            points={"balance": points, "held": points_held, "total": points + points_held},
        )
    )
