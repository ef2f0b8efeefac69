"""Deterministic transaction generator: the same seed gives the same rows, in the same order.

Pure apart from its own ``random.Random``: event times are passed in, never read from a clock.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

USERS = 500
MERCHANTS = 80
PRODUCTS = 60
MS_PER_DAY = 86_400_000

PAYMENT_METHODS = ("CARD", "PAYPAL", "BANK_TRANSFER", "APPLE_PAY", "GIFT_CARD")
STATUSES = ("APPROVED", "APPROVED", "APPROVED", "PENDING", "DECLINED")
CURRENCIES = ("EUR", "USD", "GBP", "JPY")
PLACES = (
    ("FR", "Paris"), ("DE", "München"), ("BR", "São Paulo"), ("JP", "東京"),
    ("US", "New York"), ("CH", "Zürich"), ("ES", "A Coruña"), ("GB", "London"),
)
TAG_WORDS = ("online", "recurring", "first_purchase", "promo", "mobile", "gift")
PRODUCT_NAMES = ("Widget", "Gadget", "Gizmo", "Doohickey", "Café crème", "Thingamajig")

BLACKLISTED_USERS = frozenset({"user_0013", "user_0042", "user_0137", "user_0404"})
BLACKLISTED_MERCHANTS = frozenset({"merchant_007", "merchant_066"})


@dataclass(frozen=True)
class Transaction:
    """One base event; ``rowtime`` (epoch ms) is its event time and ROWTIME."""

    seq: int
    rowtime: int
    values: dict[str, Any]


class TransactionGenerator:
    """Builds transactions one after another from a seeded random source."""

    def __init__(self, seed: int, *, disorder_ms: int = 5_000, late_fraction: float = 0.03):
        self._random = random.Random(seed)
        self._seq = 0
        self.disorder_ms = disorder_ms
        self.late_fraction = late_fraction

    def times(self, start_ms: int, end_ms: int, count: int) -> Iterator[int]:
        """``count`` event times spread evenly over [start, end), a few pulled back in time.

        A pulled-back row is at most ``disorder_ms`` older than rows generated before it, which
        bounds how late a row can be (DESIGN.md section 4: settle delay).
        """
        span = max(0, end_ms - start_ms)
        for i in range(count):
            base = start_ms + (span * i) // max(count, 1)
            if self.disorder_ms > 0 and self._random.random() < self.late_fraction:
                base -= self._random.randrange(1, self.disorder_ms)
            yield base

    def make(self, rowtime: int) -> Transaction:
        r = self._random
        rnd = r.random

        def pick(n: int) -> int:
            # int(random() * n) is several times faster than randrange, and as deterministic.
            return int(rnd() * n)

        self._seq += 1
        seq = self._seq
        user = f"user_{pick(USERS):04d}"
        merchant = f"merchant_{pick(MERCHANTS):03d}"
        country, city = PLACES[pick(len(PLACES))]
        items: list[dict[str, Any]] = []
        for _ in range(1 + pick(3)):
            product = pick(PRODUCTS)
            items.append({
                "PRODUCT_ID": f"prod_{product:03d}",
                "NAME": f"{PRODUCT_NAMES[product % len(PRODUCT_NAMES)]} {product}",
                "QUANTITY": 1 + pick(5),
                "UNIT_PRICE": Decimal(99 + pick(49_901)).scaleb(-2),
                "ADDED_AT": rowtime - pick(3_600_000),
            })
        amount = sum((i["UNIT_PRICE"] * i["QUANTITY"] for i in items), Decimal("0.00"))
        card_digits = f"{r.getrandbits(64) % 10**16:016d}"
        card = "-".join(card_digits[i:i + 4] for i in range(0, 16, 4))
        # A quarter of the times fall on a whole minute so TIME shows its "HH:mm" form.
        local_time = (rowtime % MS_PER_DAY) // 60_000 * 60_000 if seq % 4 == 0 else (
            rowtime % MS_PER_DAY
        )
        risk = round(r.random(), 4)
        if seq % 97 == 0:
            risk = 1.0e-4  # exercises the "1.0E-4" form of Java's Double.toString
        values: dict[str, Any] = {
            "TRANSACTION_ID": f"txn_{seq:09d}",
            "USER_ID": user,
            "MERCHANT_ID": merchant,
            "AMOUNT": amount,
            "CURRENCY": CURRENCIES[pick(len(CURRENCIES))],
            "PAYMENT_METHOD": PAYMENT_METHODS[pick(len(PAYMENT_METHODS))],
            "STATUS": STATUSES[pick(len(STATUSES))],
            "RISK_SCORE": risk,
            "IS_FRAUD": risk > 0.97,
            "TRANSACTION_TIME": rowtime,
            "SETTLEMENT_DATE": rowtime // MS_PER_DAY + 1 + pick(2),
            "LOCAL_TIME": local_time,
            "DEVICE_FINGERPRINT": r.randbytes(8),
            "TAGS": r.sample(TAG_WORDS, pick(3)),
            "PAYLOAD": {
                "CARD": card,
                "EMAIL": f"{user}@example.com" if seq % 50 else None,
                "ITEMS": items,
                "META": {"country": country, "city": city, "channel": ("web", "app")[pick(2)]},
                "BILLING_DATE": rowtime // MS_PER_DAY,
                "LOCAL_TIME": local_time,
                "SIGNATURE": r.randbytes(4),
                "GEO": {"LAT": round(rnd() * 120 - 60, 5), "LON": round(rnd() * 340 - 170, 5)},
            },
        }
        return Transaction(seq, rowtime, values)
