"""Subscriber rewards: points given for an ISO week, at most once per user and week.

The transfer's idempotency key is `reward:{user}:{iso week}`, so the Monday run, a purchase in
mid-week (which pays the current week at once), a retry and a second worker can never pay the
same week twice."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from yuntu.ledger.accounts import system_account, user_account
from yuntu.ledger.transfers import Reference, Transfer, find, transfer
from yuntu.models.ledger import Asset, SystemAccount, TransferType

WEEK_PATTERN = re.compile(r"^(\d{4})-W(\d{2})$")


def iso_week(moment: datetime) -> str:
    year, week, _ = moment.astimezone(UTC).isocalendar()
    return f"{year}-W{week:02d}"


def week_start(week: str) -> datetime:
    """Monday 00:00 UTC of an ISO week such as 2026-W48 (ValueError if there is no such week)."""
    match = WEEK_PATTERN.match(week)
    if not match:
        raise ValueError(f"not an ISO week (YYYY-Www): {week!r}")
    monday = date.fromisocalendar(int(match.group(1)), int(match.group(2)), 1)
    return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)


def week_end(week: str) -> datetime:
    return week_start(week) + timedelta(days=7)


def reward_key(user_id: int, week: str) -> str:
    return f"reward:{user_id}:{week}"


async def grant(
    session: AsyncSession, *, user_id: int, week: str, points: int, subscription_id: int | None
) -> Transfer:
    """Pay the week's reward (or return the one already paid)."""
    week_start(week)  # validates
    existing = await find(session, reward_key(user_id, week))
    if existing is not None:
        return existing
    return await transfer(
        session,
        key=reward_key(user_id, week),
        asset=Asset.POINTS,
        debit=await system_account(session, SystemAccount.REWARDS, Asset.POINTS),
        credit=await user_account(session, user_id, Asset.POINTS),
        amount=points,
        type=TransferType.REWARD,
        reference=Reference("subscription", subscription_id) if subscription_id else None,
        description=f"weekly subscriber reward {week}",
        system_last=False,
    )
