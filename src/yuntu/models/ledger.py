"""Ledger tables: accounts, transfers (append-only, double entry), holds, orders, bills,
RevenueCat subscriptions and webhook events, weekly reward failures.

Every movement of money or points is one row of `ledger_transfers` that debits one account and
credits another of the same asset. An account's `balance` is credits minus debits of its
transfers, kept in the same transaction as the transfer (`yuntu ledger verify` recomputes it).
User accounts carry `allow_negative = false`, enforced by a CHECK constraint as well as by the
conditional update that moves the money."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from yuntu.kit.db import Base, IdMixin, TimestampMixin, UTCDateTime, utcnow


class Asset(StrEnum):
    CNY = "CNY"  # integer fen
    POINTS = "POINTS"  # integer points


class SystemAccount(StrEnum):
    """The other side of every user movement."""

    PAYMENT_CLEARING = "payment_clearing"  # money and packs paid through a payment provider
    REVENUE = "revenue"  # captured consumption (render frames, generations)
    REWARDS = "rewards"  # points given away (weekly subscriber reward, promotions)
    REFUNDS = "refunds"  # refunds and reversals paid back out
    HOLDS = "holds"  # amounts placed on hold, until captured or released
    ADJUSTMENTS = "adjustments"  # administrator credits and debits


class LedgerAccount(IdMixin, TimestampMixin, Base):
    __tablename__ = "ledger_accounts"
    __table_args__ = (
        UniqueConstraint("user_id", "asset", name="uq_ledger_accounts_user_asset"),
        UniqueConstraint("code", "asset", name="uq_ledger_accounts_code_asset"),
        CheckConstraint("(user_id IS NULL) <> (code IS NULL)", name="one_owner"),
        CheckConstraint("allow_negative OR balance >= 0", name="not_negative"),
    )

    user_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="RESTRICT")
    )
    code: Mapped[str | None] = mapped_column(String(32))  # a SystemAccount
    asset: Mapped[str] = mapped_column(String(8), nullable=False)
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    allow_negative: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)


class TransferType(StrEnum):
    RECHARGE = "recharge"  # a paid recharge order (CNY)
    PURCHASE = "purchase"  # a paid points pack
    CONSUME = "consume"  # a direct spend
    HOLD = "hold"  # user -> holds
    CAPTURE = "capture"  # holds -> revenue
    RELEASE = "release"  # holds -> user (the rest of a hold)
    REWARD = "reward"  # rewards -> user
    REFUND = "refund"  # a refunded order or subscription taken back
    ADJUSTMENT = "adjustment"  # an administrator's credit or debit
    REVERSAL = "reversal"  # a correction: the opposite of an earlier transfer


class LedgerTransfer(IdMixin, Base):
    __tablename__ = "ledger_transfers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
        Index("ix_ledger_transfers_debit", "debit_account_id", "created_at"),
        Index("ix_ledger_transfers_credit", "credit_account_id", "created_at"),
        Index("ix_ledger_transfers_reference", "reference_type", "reference_id"),
    )

    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    asset: Mapped[str] = mapped_column(String(8), nullable=False)
    debit_account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_accounts.id", ondelete="RESTRICT"), nullable=False
    )
    credit_account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("ledger_accounts.id", ondelete="RESTRICT"), nullable=False
    )
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    type: Mapped[str] = mapped_column(String(16), nullable=False)
    reference_type: Mapped[str | None] = mapped_column(String(32))
    reference_id: Mapped[str | None] = mapped_column(String(64))
    hold_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_holds.id", ondelete="RESTRICT"), index=True
    )
    reverses_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_transfers.id", ondelete="RESTRICT"), index=True
    )
    description: Mapped[str | None] = mapped_column(String(255))
    actor_user_id: Mapped[int | None] = mapped_column(BigInteger)
    # The two balances right after this transfer (the statement's "balance after" column).
    debit_balance_after: Mapped[int] = mapped_column(BigInteger, nullable=False)
    credit_balance_after: Mapped[int] = mapped_column(BigInteger, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class HoldStatus(StrEnum):
    PENDING = "pending"  # some of it may already be captured
    CAPTURED = "captured"  # closed with nothing left to release
    RELEASED = "released"  # closed; the rest went back to the user
    EXPIRED = "expired"  # closed by the expiry job; the rest went back


class LedgerHold(IdMixin, TimestampMixin, Base):
    """A two-phase spend: `amount` moved from the user to the holds account when placed; captures
    move parts of it on to revenue, the release sends the rest back."""

    __tablename__ = "ledger_holds"
    __table_args__ = (
        CheckConstraint("amount > 0", name="positive"),
        CheckConstraint("captured >= 0 AND released >= 0", name="parts_positive"),
        CheckConstraint("captured + released <= amount", name="within_amount"),
        Index("ix_ledger_holds_status_expires", "status", "expires_at"),
        Index("ix_ledger_holds_reference", "reference_type", "reference_id"),
    )

    idempotency_key: Mapped[str] = mapped_column(String(255), unique=True, nullable=False)
    account_id: Mapped[int] = mapped_column(
        BigInteger,
        ForeignKey("ledger_accounts.id", ondelete="RESTRICT"),
        nullable=False,
        index=True,
    )
    asset: Mapped[str] = mapped_column(String(8), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    captured: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    released: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=HoldStatus.PENDING)
    reference_type: Mapped[str | None] = mapped_column(String(32))
    reference_id: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def remaining(self) -> int:
        return self.amount - self.captured - self.released


class OrderKind(StrEnum):
    RECHARGE = "recharge"  # CNY balance through a PaymentProvider
    POINTS_PACK = "points_pack"  # points through RevenueCat (a non-renewing purchase)


class OrderStatus(StrEnum):
    PENDING = "pending"
    PAID = "paid"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    REFUNDED = "refunded"


class Order(IdMixin, TimestampMixin, Base):
    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_orders_user_idempotency"),
        UniqueConstraint("provider", "transaction_id", name="uq_orders_provider_transaction"),
        CheckConstraint("amount >= 0 AND credit_amount > 0", name="amounts"),
        Index("ix_orders_user_created", "user_id", "created_at"),
        Index("ix_orders_status_expires", "status", "expires_at"),
    )

    order_no: Mapped[str] = mapped_column(String(40), unique=True, nullable=False)
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
    )
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    product_id: Mapped[str | None] = mapped_column(String(128))
    quantity: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    # What the buyer pays, in minor units of `currency` (fen, cents).
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[str] = mapped_column(String(8), nullable=False)
    # What the ledger credits once paid: fen of CNY for a recharge, points for a pack.
    credit_asset: Mapped[str] = mapped_column(String(8), nullable=False)
    credit_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=OrderStatus.PENDING)
    provider: Mapped[str] = mapped_column(String(32), nullable=False)
    payment_channel: Mapped[str | None] = mapped_column(String(32))
    transaction_id: Mapped[str | None] = mapped_column(String(128))
    environment: Mapped[str | None] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    refunded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A refund takes back at most what is left; the rest (already spent) is recorded here.
    refund_shortfall: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class BillStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


class Bill(IdMixin, TimestampMixin, Base):
    """A consumption bill (one per render task or generation) whose lines are captures."""

    __tablename__ = "bills"
    __table_args__ = (
        UniqueConstraint("reference_type", "reference_id", name="uq_bills_reference"),
        Index("ix_bills_user_created", "user_id", "created_at"),
    )

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False
    )
    asset: Mapped[str] = mapped_column(String(8), nullable=False)
    title: Mapped[str] = mapped_column(String(255), nullable=False)
    reference_type: Mapped[str] = mapped_column(String(32), nullable=False)
    reference_id: Mapped[str] = mapped_column(String(64), nullable=False)
    hold_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_holds.id", ondelete="RESTRICT")
    )
    status: Mapped[str] = mapped_column(String(16), nullable=False, default=BillStatus.OPEN)
    total: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class BillLine(IdMixin, Base):
    __tablename__ = "bill_lines"
    __table_args__ = (CheckConstraint("amount >= 0", name="not_negative"),)

    bill_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("bills.id", ondelete="CASCADE"), nullable=False, index=True
    )
    description: Mapped[str] = mapped_column(String(255), nullable=False)
    quantity: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    unit: Mapped[str | None] = mapped_column(String(32))  # e.g. "core-second", "frame"
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    transfer_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("ledger_transfers.id", ondelete="RESTRICT"), unique=True
    )
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    CANCELLED = "cancelled"  # will not renew; benefits kept until current_period_end
    PAUSED = "paused"  # Play Store pause: benefits kept until the period ends
    EXPIRED = "expired"


class Subscription(IdMixin, TimestampMixin, Base):
    __tablename__ = "subscriptions"
    __table_args__ = (
        UniqueConstraint("rc_key", name="uq_subscriptions_rc_key"),
        Index("ix_subscriptions_plan_status", "plan_type", "status", "current_period_end"),
    )

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
    )
    # Stable identity across renewals and product changes: the store's original transaction
    # id, or app user id and product when the store gives none.
    rc_key: Mapped[str] = mapped_column(String(255), nullable=False)
    rc_subscriber_id: Mapped[str] = mapped_column(String(128), nullable=False)
    product_id: Mapped[str] = mapped_column(String(128), nullable=False)
    plan_type: Mapped[str] = mapped_column(String(16), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    will_renew: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    store: Mapped[str | None] = mapped_column(String(32))
    environment: Mapped[str] = mapped_column(String(16), nullable=False)
    entitlement_ids: Mapped[list[str] | None] = mapped_column(JSON)
    current_period_start: Mapped[datetime | None] = mapped_column(UTCDateTime())
    current_period_end: Mapped[datetime | None] = mapped_column(UTCDateTime())
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    billing_issue_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_transaction_id: Mapped[str | None] = mapped_column(String(128))
    # event_timestamp_ms of the newest event applied: an older one arriving late changes
    # nothing but its own record (RevenueCat promises no order).
    last_event_ms: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)


class WebhookEvent(IdMixin, Base):
    """Every RevenueCat event received, once (`event.id` is unique): the dedupe record and the
    audit of what it did."""

    __tablename__ = "revenuecat_events"

    event_id: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    type: Mapped[str] = mapped_column(String(48), nullable=False)
    app_user_id: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    environment: Mapped[str | None] = mapped_column(String(16))
    event_ms: Mapped[int | None] = mapped_column(BigInteger)
    outcome: Mapped[str] = mapped_column(String(32), nullable=False)
    detail: Mapped[str | None] = mapped_column(String(500))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, nullable=False)


class RewardFailure(IdMixin, TimestampMixin, Base):
    """A subscriber the weekly reward could not pay; retried first on the next run."""

    __tablename__ = "reward_failures"
    __table_args__ = (UniqueConstraint("week", "user_id", name="uq_reward_failures_week_user"),)

    week: Mapped[str] = mapped_column(String(8), nullable=False)  # ISO week, 2026-W48
    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    error: Mapped[str] = mapped_column(String(500), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
