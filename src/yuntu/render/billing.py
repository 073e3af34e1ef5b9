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

from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.ledger import accounts, bills, holds
from yuntu.ledger.transfers import Reference
from yuntu.models.ledger import Asset, Bill, HoldStatus
from yuntu.models.render import FrameTask, PausedReason, RenderTask
from yuntu.render.frame_states import TaskMoney
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


def hold_amount(task: RenderTask | TaskMoney) -> int:
    """What submitting holds: the estimate, capped by the budget."""
    return task.estimate if task.budget is None else min(task.estimate, task.budget)


async def _open_bill(session: AsyncSession, task: RenderTask, hold_id: int | None) -> Bill:
    """The task's one bill (opened now, or the one opened before: a bill per reference)."""
    return await bills.open_bill(
        session,
        user_id=task.user_id,
        asset=Asset.CNY,
        title=f"Render: {task.name}",
        reference=reference(task.id),
        hold_id=hold_id,
    )


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
    bill = await _open_bill(session, task, hold_id)
    task.hold_id, task.bill_id = hold_id, bill.id
    await session.flush()


async def _money_left(session: AsyncSession, task: RenderTask) -> int:
    """What the task may still take: the hold's rest and the balance."""
    available, _held = await accounts.balance_of(session, task.user_id, Asset.CNY)
    if task.hold_id is not None:
        hold = await holds.get(session, task.hold_id)
        if hold.status == HoldStatus.PENDING:
            available += hold.remaining
    return available


def price(settings: Settings) -> Callable[[float | None, int, int], int]:
    """The rate card as scheduling.finish takes it: (core-seconds, priority, frames) -> fen."""
    card = rate_card(settings)
    return lambda core_seconds, priority, frames: card.frame_cost(
        core_seconds or 0, priority, frames
    )


async def settle_frame(
    session: AsyncSession, task_id: int, frame_id: int, metered: int, money: TaskMoney
) -> tuple[int, PausedReason | None]:
    """Check a succeeded frame's cost, already added to its frame and task by the finish
    (`money` is the task as that update left it, its row still held), against the budget and
    the money. Returns what the frame costs in the end, and the reason the task was just
    paused when the budget or the money ran short.

    Within what the hold covers, nothing more is written here: `flush` charges the bill later
    in one line (after a minute at most, and when the task ends), so a busy farm does not queue
    every frame on the user's ledger rows. Beyond the hold the frame is charged at once, capped
    by what the balance has."""
    spent = money.cost - metered  # the task's cost before this frame
    cost = metered
    short: PausedReason | None = None
    if money.budget is not None and cost > money.budget - spent:
        cost, short = max(0, money.budget - spent), PausedReason.BUDGET
    held = 0 if money.hold_id is None else hold_amount(money)
    if cost > 0 and spent + cost > held:
        task = await session.get(RenderTask, task_id, populate_existing=True)
        assert task is not None
        # what is recorded but not billed yet is covered by the hold
        left = await _money_left(session, task) - (spent - money.billed)
        if cost > left:
            cost, short = max(0, left), PausedReason.BALANCE
    if cost != metered:  # give back what the budget or the money did not cover
        await session.execute(
            update(FrameTask)
            .where(FrameTask.id == frame_id)
            .values(cost=cost)
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(RenderTask)
            .where(RenderTask.id == task_id)
            .values(cost=RenderTask.cost - (metered - cost))
            .execution_options(synchronize_session=False)
        )
    if cost > 0 and spent + cost > held:
        await flush(session, task_id)
    if short is not None and await pause_for(session, task_id, short):
        return cost, short
    return cost, None


async def flush(session: AsyncSession, task_id: int) -> int:
    """Charge what the task cost since its last charge to its bill, as one line for the frame
    tasks it covers (the hold first, then the balance). Returns the fen charged."""
    task = await session.get(RenderTask, task_id, populate_existing=True, with_for_update=True)
    if task is None or task.cost <= task.billed:
        return 0
    amount = task.cost - task.billed
    frame_tasks = task.frames_succeeded - task.billed_frame_tasks
    bill = await _bill_of(session, task)
    await bills.charge(
        session,
        bill,
        amount,
        key=f"cost:{task.cost}",  # the running total: one line per flush, a repeat charges once
        description=f"{task.name}: {frame_tasks} frame task(s) rendered",
        quantity=max(frame_tasks, 0),
        unit="frame task",
        details={"task_id": str(task.id), "cost_before": task.billed, "cost_after": task.cost},
    )
    await session.execute(
        update(RenderTask)
        .where(RenderTask.id == task.id)
        .values(billed=task.cost, billed_frame_tasks=task.frames_succeeded)
        .execution_options(synchronize_session=False)
    )
    return amount


async def _bill_of(session: AsyncSession, task: RenderTask) -> Bill:
    if task.bill_id is not None:
        bill = await session.get(Bill, task.bill_id)
        if bill is not None:
            return bill
    bill = await _open_bill(session, task, None)
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
    await flush(session, task_id)
    if status == T.FAILED and hold_id is not None:
        await holds.release(session, hold_id)
        # nothing is held any more: retried frames are charged from the balance at once
        await session.execute(
            update(RenderTask).where(RenderTask.id == task_id).values(hold_id=None)
        )
    elif status in (T.COMPLETED, T.CANCELLED):
        await close(session, hold_id, bill_id)


async def close(session: AsyncSession, hold_id: int | None, bill_id: int | None) -> None:
    if bill_id is not None:
        bill = await session.get(Bill, bill_id)
        if bill is not None:
            await bills.close_bill(session, bill)
    if hold_id is not None:
        await holds.release(session, hold_id)
