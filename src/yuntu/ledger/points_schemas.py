"""Request and response shapes of PicKitchen points, points-pack orders and subscriptions."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.ledger.money import Yuan
from yuntu.models.ledger import OrderStatus, SubscriptionStatus, TransferType


class PointsBalanceOut(BaseModel):
    balance: int = Field(description="Points available now", examples=[5800])
    held: int = Field(description="Reserved by generations in progress", examples=[200])
    total: int = Field(description="balance + held", examples=[6000])


class PointsTransactionOut(Schema):
    id: Id
    type: TransferType
    amount: int = Field(description="Signed: negative when points left the balance")
    balance_after: int = Field(description="The available points right after this movement")
    description: str | None
    reference_type: str | None = Field(examples=["order"])
    reference_id: str | None
    created_at: UtcDatetime


class OrderCreateIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"product_id": "points_1000"}]}
    )
    product_id: str = Field(
        min_length=1, max_length=128, description="A points pack of the catalogue"
    )


class PackOrderOut(Schema):
    id: Id
    order_no: str = Field(examples=["PK7262149437321216"])
    product_id: str | None = Field(examples=["points_1000"])
    quantity: int
    status: OrderStatus
    amount: Yuan = Field(description="The price, in the currency's units with two decimals")
    currency: str = Field(examples=["USD"])
    points: int = Field(validation_alias="credit_amount", description="Points credited once paid")
    provider: str = Field(examples=["revenuecat"])
    payment_channel: str | None = Field(
        description="The store that took the payment", examples=["APP_STORE"]
    )
    transaction_id: str | None = Field(description="The store's transaction id once paid")
    environment: str | None = Field(examples=["PRODUCTION"])
    description: str | None
    refund_shortfall: int = Field(description="Points a refund could not take back (already spent)")
    created_at: UtcDatetime
    expires_at: UtcDatetime | None
    paid_at: UtcDatetime | None
    refunded_at: UtcDatetime | None


class PurchaseOut(BaseModel):
    """What the app needs to buy the pack through RevenueCat's SDK."""

    provider: Literal["revenuecat"] = "revenuecat"
    store_product_id: str = Field(
        description="The store product to purchase", examples=["points_1000"]
    )
    app_user_id: str = Field(
        description="The RevenueCat appUserID the app must be logged in as (our user id): the "
        "webhook credits the purchase to this user",
        examples=["7262149437321216"],
    )
    title: str | None = None


class PackOrderCreatedOut(BaseModel):
    order: PackOrderOut
    purchase: PurchaseOut


class SubscriptionOut(Schema):
    id: Id
    product_id: str = Field(examples=["com.pickitchen.weekly"])
    plan_type: str = Field(examples=["weekly"])
    status: SubscriptionStatus
    will_renew: bool
    is_active: bool = Field(description="Gives VIP benefits now")
    store: str | None = Field(examples=["APP_STORE"])
    environment: str = Field(examples=["PRODUCTION"])
    entitlement_ids: list[str] | None
    current_period_start: UtcDatetime | None
    current_period_end: UtcDatetime | None = Field(description="null: lifetime")
    cancelled_at: UtcDatetime | None
    billing_issue_at: UtcDatetime | None
    expired_at: UtcDatetime | None


class SubscriptionStatusOut(BaseModel):
    is_vip: bool
    vip_type: str | None = Field(examples=["weekly"])
    vip_expire_time: UtcDatetime | None = Field(description="null with is_vip: lifetime")
    subscriptions: list[SubscriptionOut]


class WebhookAckOut(BaseModel):
    event_id: str
    outcome: str = Field(
        description="What the event did: applied, stale, no_change, credited, refunded, "
        "duplicate_transaction, refund_unmatched, unknown_product, transferred, test, ignored, "
        "unknown_user",
        examples=["applied"],
    )
    duplicate: bool = Field(description="True: this event id was received before; nothing done")


WEBHOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["event"],
                    "properties": {
                        "api_version": {"type": "string"},
                        "event": {
                            "type": "object",
                            "required": ["id", "type"],
                            "properties": {
                                "id": {"type": "string"},
                                "type": {"type": "string"},
                                "app_user_id": {"type": "string"},
                            },
                            "additionalProperties": True,
                        },
                    },
                },
                "example": {
                    "api_version": "1.0",
                    "event": {
                        "id": "12345678-1234-1234-1234-123456789012",
                        "type": "INITIAL_PURCHASE",
                        "app_user_id": "7262149437321216",
                        "product_id": "com.pickitchen.weekly",
                        "event_timestamp_ms": 1658726378679,
                        "purchased_at_ms": 1658726374000,
                        "expiration_at_ms": 1659331174000,
                        "environment": "PRODUCTION",
                        "store": "APP_STORE",
                        "transaction_id": "123456789012345",
                        "original_transaction_id": "123456789012345",
                    },
                },
            }
        },
    }
}
