"""Payment providers: who takes the money for a recharge order and how their confirmation is
verified.

The balance moves only when a provider's *verified* notice says an order was paid
(`recharge.handle_notice`), never on the client's word. A real provider (WeChat Pay, Alipay,
Stripe) implements `PaymentProvider`: `checkout` returns what the client needs to pay,
`verify_notice` checks the gateway's signature on the raw callback bytes and parses them.

`DevSimulatedProvider` is a development stand-in: nobody pays anything, its "gateway" is our own
`POST /payments/dev_simulated/checkout/{order_no}`, which signs a notice exactly as a gateway
would and sends it through the same verification. Settings refuse it in production."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from yuntu.kit.errors import AppError, E
from yuntu.models.ledger import Order
from yuntu.settings import Settings

Outcome = Literal["paid", "failed"]
SIGNATURE_HEADER = "X-Yuntu-Payment-Signature"
DEV_SIMULATED = "dev_simulated"
_DEV_KEY_LABEL = b"yuntu-dev-payment-v1"
MAX_NOTICE_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class PaymentNotice:
    """A provider's verified statement about one order."""

    order_no: str
    transaction_id: str
    amount_fen: int
    currency: str
    outcome: Outcome


class PaymentProvider(Protocol):
    name: str
    simulated: bool  # True: no money is taken (development only)

    def checkout(self, order: Order, base_url: str) -> dict[str, Any]:
        """What the client needs to pay `order`: at least `checkout_url`."""
        ...

    def verify_notice(self, headers: Mapping[str, str], raw_body: bytes) -> PaymentNotice:
        """Check the callback's signature on the raw bytes, then parse it; AppError
        SIGNATURE_INVALID on any doubt."""
        ...


def _invalid(reason: str) -> AppError:
    return AppError(E.SIGNATURE_INVALID, details={"reason": reason})


class DevSimulatedProvider:
    """The development stand-in provider ("dev_simulated"): no money moves anywhere.

    Its notices are signed like RevenueCat's and Stripe's webhooks:
    `X-Yuntu-Payment-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(key, f"{t}." + body)>`,
    where key = HMAC-SHA256(the server's secret key, "yuntu-dev-payment-v1"), and refused when
    `t` is more than `tolerance` seconds from now."""

    name = DEV_SIMULATED
    simulated = True

    def __init__(
        self,
        secret: str,
        *,
        tolerance_seconds: int = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = hmac.new(secret.encode(), _DEV_KEY_LABEL, hashlib.sha256).digest()
        self.tolerance_seconds = tolerance_seconds
        self._clock = clock

    @staticmethod
    def checkout_path(order_no: str) -> str:
        return f"/api/v1/payments/{DEV_SIMULATED}/checkout/{order_no}"

    @staticmethod
    def notify_path() -> str:
        return f"/api/v1/payments/{DEV_SIMULATED}/notify"

    def checkout(self, order: Order, base_url: str) -> dict[str, Any]:
        base = base_url.rstrip("/")
        return {
            "provider": self.name,
            "simulated": True,
            "checkout_url": base + self.checkout_path(order.order_no),
            "checkout_method": "POST",
            "checkout_body": {"outcome": "paid"},
            "notify_url": base + self.notify_path(),
            "note": "Development stand-in: no money is taken. POST to checkout_url with the "
            'order owner\'s bearer token and {"outcome": "paid"} or {"outcome": "failed"}.',
        }

    def sign(self, raw_body: bytes, timestamp: int | None = None) -> str:
        """The signature header value for `raw_body` at `timestamp` (default now)."""
        moment = int(self._clock()) if timestamp is None else timestamp
        digest = hmac.new(self._key, f"{moment}.".encode() + raw_body, hashlib.sha256)
        return f"t={moment},v1={digest.hexdigest()}"

    def build_notice(self, notice: PaymentNotice) -> tuple[dict[str, str], bytes]:
        """Headers and raw body of the callback the simulated gateway sends for `notice`."""
        body = json.dumps(
            {
                "order_no": notice.order_no,
                "transaction_id": notice.transaction_id,
                "amount_fen": notice.amount_fen,
                "currency": notice.currency,
                "outcome": notice.outcome,
            },
            separators=(",", ":"),
        ).encode()
        return {SIGNATURE_HEADER: self.sign(body), "Content-Type": "application/json"}, body

    def verify_notice(self, headers: Mapping[str, str], raw_body: bytes) -> PaymentNotice:
        header = _header(headers, SIGNATURE_HEADER)
        if not header:
            raise _invalid("missing signature header")
        if len(raw_body) > MAX_NOTICE_BYTES:
            raise _invalid("body too large")
        timestamp, candidates = _parse_signature(header)
        if abs(self._clock() - timestamp) > self.tolerance_seconds:
            raise _invalid("timestamp outside the tolerance")
        expected = hmac.new(self._key, f"{timestamp}.".encode() + raw_body, hashlib.sha256)
        wanted = expected.hexdigest()
        # Every candidate is compared (no early exit) so timing tells nothing about which failed.
        matched = False
        for candidate in candidates:
            matched |= hmac.compare_digest(candidate, wanted)
        if not matched:
            raise _invalid("signature mismatch")
        return _parse_notice(raw_body)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


def _parse_signature(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise _invalid("malformed signature header")
        if key == "t":
            if not value.isascii() or not value.isdigit() or len(value) > 12:
                raise _invalid("malformed timestamp")
            timestamp = int(value)
        elif key == "v1" and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            candidates.append(value)
    if timestamp is None or not candidates:
        raise _invalid("malformed signature header")
    return timestamp, candidates


def _parse_notice(raw_body: bytes) -> PaymentNotice:
    """Signed bytes that do not read as a notice are still refused: a signer we trust would
    not send them."""
    try:
        document = json.loads(raw_body)
    except (ValueError, RecursionError):
        raise _invalid("body is not JSON") from None
    if not isinstance(document, dict):
        raise _invalid("body is not a JSON object")
    order_no = document.get("order_no")
    transaction_id = document.get("transaction_id")
    amount = document.get("amount_fen")
    currency = document.get("currency")
    outcome = document.get("outcome")
    if not (isinstance(order_no, str) and 0 < len(order_no) <= 40):
        raise _invalid("order_no")
    if not (isinstance(transaction_id, str) and 0 < len(transaction_id) <= 128):
        raise _invalid("transaction_id")
    if not (isinstance(amount, int) and not isinstance(amount, bool) and amount >= 0):
        raise _invalid("amount_fen")
    if not (isinstance(currency, str) and len(currency) <= 8):
        raise _invalid("currency")
    if outcome not in ("paid", "failed"):
        raise _invalid("outcome")
    return PaymentNotice(
        order_no=order_no,
        transaction_id=transaction_id,
        amount_fen=amount,
        currency=currency,
        outcome=outcome,
    )


def provider_for(settings: Settings) -> PaymentProvider | None:
    """The configured provider; None when recharge is turned off (`payment_provider=none`)."""
    name = settings.effective_payment_provider
    if name == DEV_SIMULATED:
        # resolve_secret_key refuses dev_simulated in production (ConfigError).
        return DevSimulatedProvider(settings.resolve_secret_key())
    return None
