"""What PicKitchen sells through RevenueCat: points packs (settings.points_products) and
subscription plans (settings.subscription_plans, else the period word in the product id).

Product ids are the store's ids as RevenueCat reports them. Google Play subscriptions arrive as
`subscription:base_plan`; the plan lookup tries the whole id, then the part before the colon."""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum

from yuntu.settings import PointsProduct, Settings


class PlanType(StrEnum):
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    YEARLY = "yearly"
    LIFETIME = "lifetime"
    OTHER = "other"


# Whole words of a product id (split on anything but letters and digits) naming its period.
_PERIOD_WORDS: dict[str, PlanType] = {
    "weekly": PlanType.WEEKLY,
    "week": PlanType.WEEKLY,
    "monthly": PlanType.MONTHLY,
    "month": PlanType.MONTHLY,
    "yearly": PlanType.YEARLY,
    "year": PlanType.YEARLY,
    "annual": PlanType.YEARLY,
    "annually": PlanType.YEARLY,
    "lifetime": PlanType.LIFETIME,
}
_WORDS = re.compile(r"[a-z0-9]+")


def find_product(settings: Settings, product_id: str | None) -> PointsProduct | None:
    if not product_id:
        return None
    for product in settings.points_products:
        if product.product_id == product_id:
            return product
    return None


def minor_units(price: Decimal) -> int:
    """A catalogue price (two decimals at most, validated by the settings) in hundredths."""
    return int((price * 100).to_integral_exact())


def plan_type(settings: Settings, product_id: str | None) -> str:
    if not product_id:
        return PlanType.OTHER
    plans = settings.subscription_plans
    for key in (product_id, product_id.split(":", 1)[0]):
        if key in plans:
            return plans[key]
    for word in _WORDS.findall(product_id.lower()):
        if word in _PERIOD_WORDS:
            return _PERIOD_WORDS[word]
    return PlanType.OTHER
