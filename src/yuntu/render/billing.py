"""Render billing: the estimate held on submission, each succeeded frame task charged to the
task's bill, the hold's rest released when the task ends.

Rules (docs/decisions.md, render billing):
- Submitting holds the estimate (capped by the budget) on the CNY balance; 402 leaves a draft.
- A succeeded frame task costs `RateCard.frame_cost(core_seconds, priority, frames)`, charged
  as one bill line (key `frame:{frame id}:{attempt}`, so a repeated finish charges once). It is
  taken from the hold first, then from the balance when the render costs more than estimated.
- Never more than the budget, and never a negative balance: a charge is capped at what the
  budget and the money (the hold's rest plus the balance) allow. A capped charge pauses the task
  (`paused_reason` budget or balance), so no new frame starts; frames already running finish
  and are charged what is left (possibly nothing).
- Frames that fail, frames whose agent failed, cancelled frames: no charge.
- Completed and cancelled tasks close their bill (the hold's rest goes back). A failed task
  releases its hold but keeps its bill open: retried frames are charged to the same bill, from
  the balance. Deleting the task closes the bill.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.ledger import accounts, bills, holds
from yuntu.ledger.transfers import Reference
from yuntu.models.ledger import Asset, Bill, HoldStatus
from yuntu.models.render import FrameTask, PausedReason, RenderTask
from yuntu.render import frames as frame_specs
from yuntu.render.pricing import RateCard
from yuntu.render.states import TaskStatus as T
from yuntu.settings import Settings

REFERENCE_TYPE = "render_task"


_CARDS: dict[int, tuple[Settings, RateCard]] = {}


def rate_card(settings: Settings) -> RateCard:
    """The settings' rate card, built once per settings object."""
    cached = _CARDS.get(id(settings))
    if cached is None or cached[0] is not settings:
        if len(_CARDS) > 64:
            _CARDS.clear()
        cached = _CARDS[id(settings)] = (settings, settings.rate_card())
    return cached[1]


def reference(task_id: int) -> Reference:
    return Reference(REFERENCE_TYPE, task_id)


def hold_amount(task: RenderTask) -> int:
    return task.estimate if task.budget is None else min(task.estimate, task.budget)


async def hold_estimate(session: AsyncSession, task: RenderTask, settings: Settings) -> None:
    """Hold the estimate and open the task's bill (402 INSUFFICIENT_BALANCE when the balance
    does not cover it: the caller keeps the task a draft)."""
    amount = hold_amount(task)
    hold_id = None
    if amount > 0:
        hold = await holds.place(
            session,
            key=f"render:{task.id}:hold",
            user_id=task.user_id,
            asset=Asset.CNY,
            amount=amount,
            expires_in=timedelta(days=settings.render_hold_days),
            reference=reference(task.id),
            description=f"Render estimate: {task.name}",
        )
        hold_id = hold.id
    bill = await bills.open_bill(
        session,
        user_id=task.user_id,
        asset=Asset.CNY,
        title=f"Render: {task.name}",
        reference=reference(task.id),
        hold_id=hold_id,
    )
    task.hold_id, task.bill_id = hold_id, bill.id
    await session.flush()


async def _money_left(session: AsyncSession, task: RenderTask) -> int:
    """What a charge to this task may take: the hold's rest and the balance."""
    available, _held = await accounts.balance_of(session, task.user_id, Asset.CNY)
    if task.hold_id is not None:
        hold = await holds.get(session, task.hold_id)
        if hold.status == HoldStatus.PENDING:
            available += hold.remaining
    return available


async def charge_frame(
    session: AsyncSession, task_id: int, frame_id: int, settings: Settings
) -> int:
    """Charge a frame task that just succeeded; returns the fen charged."""
    task = await session.get(RenderTask, task_id, populate_existing=True)
    frame = await session.get(FrameTask, frame_id, populate_existing=True)
    assert task is not None and frame is not None
    metered = rate_card(settings).frame_cost(
        frame.core_seconds or 0, task.priority, frame.frame_count
    )
    cost = metered
    short: PausedReason | None = None
    if task.budget is not None and cost > task.budget - task.cost:
        cost, short = max(0, task.budget - task.cost), PausedReason.BUDGET
    if cost > 0:
        money = await _money_left(session, task)
        if cost > money:
            cost, short = money, PausedReason.BALANCE
    if cost > 0:
        bill = await _bill_of(session, task)
        await bills.charge(
            session,
            bill,
            cost,
            key=f"frame:{frame.id}:{frame.attempts}",
            description=f"{task.name}: frames {frame_specs.describe(frame.frames)}",
            quantity=frame.frame_count,
            unit="frame",
            details={
                "task_id": str(task.id),
                "frame_task_id": str(frame.id),
                "frames": frame_specs.describe(frame.frames),
                "core_seconds": frame.core_seconds,
                "metered": metered,
            },
        )
        await session.execute(
            update(FrameTask)
            .where(FrameTask.id == frame.id)
            .values(cost=cost)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(RenderTask)
            .where(RenderTask.id == task.id)
            .values(cost=RenderTask.cost + cost)
            .execution_options(synchronize_session=False)
        )
    if short is not None:
        await pause_for(session, task.id, short)
    return cost


async def _bill_of(session: AsyncSession, task: RenderTask) -> Bill:
    if task.bill_id is not None:
        bill = await session.get(Bill, task.bill_id)
        if bill is not None:
            return bill
    bill = await bills.open_bill(
        session,
        user_id=task.user_id,
        asset=Asset.CNY,
        title=f"Render: {task.name}",
        reference=reference(task.id),
    )
    await session.execute(
        update(RenderTask).where(RenderTask.id == task.id).values(bill_id=bill.id)
    )
    return bill


async def pause_for(session: AsyncSession, task_id: int, reason: PausedReason) -> bool:
    """Pause a dispatchable task because money ran out; False when it is not dispatchable."""
    result = await session.execute(
        update(RenderTask)
        .where(RenderTask.id == task_id, RenderTask.status.in_([T.QUEUED, T.RENDERING]))
        .values(status=T.PAUSED, paused_reason=reason)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def settle(session: AsyncSession, task_id: int, status: T) -> None:
    """The money side of a task reaching `status`: completed and cancelled close the bill,
    failed releases the hold (see the module rules)."""
    row = (
        await session.execute(
            select(RenderTask.hold_id, RenderTask.bill_id).where(RenderTask.id == task_id)
        )
    ).one()
    hold_id, bill_id = row
    if status == T.FAILED and hold_id is not None:
        await holds.release(session, hold_id)
    elif status in (T.COMPLETED, T.CANCELLED):
        await close(session, hold_id, bill_id)


async def close(session: AsyncSession, hold_id: int | None, bill_id: int | None) -> None:
    if bill_id is not None:
        bill = await session.get(Bill, bill_id)
        if bill is not None:
            await bills.close_bill(session, bill)
    if hold_id is not None:
        await holds.release(session, hold_id)
