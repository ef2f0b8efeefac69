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

    def __init__(self, seed: int, *, disorder_ms: int = 5_000, late_fraction: float = 0.03,
                 id_prefix: str = "txn_"):
        self._random = random.Random(seed)
        self._seq = 0
        self.id_prefix = id_prefix  # the demo gives each start its own, so ids never repeat
        self.disorder_ms = disorder_ms
        self.late_fraction = late_fraction

    def times(
        self, start_ms: int, end_ms: int, count: int, *, inside: bool = False
    ) -> Iterator[int]:
        """``count`` event times spread evenly over [start, end), a few pulled back in time.

        A pulled-back row is at most ``disorder_ms`` older than rows generated before it, which
        bounds how late a row can be (DESIGN.md section 4: settle delay). With ``inside`` the
        pulled-back times stay within [start, end): a caller that names the window gets it.
        """
        span = max(0, end_ms - start_ms)
        for i in range(count):
            base = start_ms + (span * i) // max(count, 1)
            if self.disorder_ms > 0 and self._random.random() < self.late_fraction:
                base -= self._random.randrange(1, self.disorder_ms)
                if inside:
                    base = max(base, start_ms)
            yield base

    def make(self, rowtime: int) -> Transaction:
        """The next transaction; PAYLOAD is in its compact form (see ``decode_payload``)."""
        r = self._random
        rnd = r.random

        def pick(n: int) -> int:
            # int(random() * n) is several times faster than randrange, and as deterministic.
            return int(rnd() * n)

        self._seq += 1
        seq = self._seq
        user = pick(USERS)
        merchant = MERCHANT_IDS[pick(MERCHANTS)]
        place = pick(len(PLACES))
        items = []
        for _ in range(1 + pick(3)):
            product = pick(PRODUCTS)
            quantity = 1 + pick(5)
            cents = 99 + pick(49_901)
            items.append((product, quantity, cents, rowtime - pick(3_600_000)))
        amount = Decimal(sum(cents * quantity for _, quantity, cents, _ in items)).scaleb(-2)
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
            "TRANSACTION_ID": f"{self.id_prefix}{seq:09d}",
            "USER_ID": USER_IDS[user],
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
            "TAGS": _tags(tuple(r.sample(TAG_WORDS, pick(3)))),
        }
        meta = META[place * 2 + pick(2)]
        values["PAYLOAD"] = (
            card, EMAILS[user] if seq % 50 else None, tuple(items), meta,
            rowtime // MS_PER_DAY, local_time, r.randbytes(4),
            round(rnd() * 120 - 60, 5), round(rnd() * 340 - 170, 5),
        )
        return Transaction(seq, rowtime, values)


# Shared objects for repeated values keep a million stored rows within a few hundred MB.
USER_IDS = [f"user_{i:04d}" for i in range(USERS)]
EMAILS = [f"{u}@example.com" for u in USER_IDS]
MERCHANT_IDS = [f"merchant_{i:03d}" for i in range(MERCHANTS)]
PRODUCT_IDS = [f"prod_{i:03d}" for i in range(PRODUCTS)]
PRODUCT_LABELS = [f"{PRODUCT_NAMES[i % len(PRODUCT_NAMES)]} {i}" for i in range(PRODUCTS)]
META = [(country, city, channel) for country, city in PLACES for channel in ("web", "app")]
_TAGS: dict[tuple[str, ...], tuple[str, ...]] = {}


def _tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    return _TAGS.setdefault(tags, tags)


def decode_tags(tags: tuple[str, ...]) -> list[str]:
    return list(tags)


def decode_payload(p: tuple[Any, ...]) -> dict[str, Any]:
    """The PAYLOAD STRUCT value (a fresh dict) from its compact stored tuple."""
    country, city, channel = p[3]
    return {
        "CARD": p[0],
        "EMAIL": p[1],
        "ITEMS": [
            {"PRODUCT_ID": PRODUCT_IDS[product], "NAME": PRODUCT_LABELS[product],
             "QUANTITY": quantity, "UNIT_PRICE": Decimal(cents).scaleb(-2), "ADDED_AT": added}
            for product, quantity, cents, added in p[2]
        ],
        "META": {"country": country, "city": city, "channel": channel},
        "BILLING_DATE": p[4],
        "LOCAL_TIME": p[5],
        "SIGNATURE": p[6],
        "GEO": {"LAT": p[7], "LON": p[8]},
    }


# WIDE_DECIMALS: DECIMAL(38, 10) and DECIMAL(76, 20) at their edges. Rows are derived from the
# base transaction's sequence number alone (no draw from the random source, so the other
# streams' rows stay the same for a seed).
WIDE_EDGE = Decimal("9999999999999999999999999999.9999999999")  # DECIMAL(38, 10)'s largest
WIDE_TINY = Decimal("0.0000000001")
HUGE_EDGE = Decimal("9" * 56 + "." + "9" * 20)  # DECIMAL(76, 20)'s largest
HUGE_TINY = Decimal("0.00000000000000000001")
# STRUCT fields reach the wire through a double (wire reference section 4): these prices keep
# every digit on that trip (at most 15 significant digits), in Java's plain and E forms.
QUOTE_PRICES = (
    Decimal("10000000"), Decimal("0.0000000001"), Decimal("-1234.5"), Decimal("0"),
    Decimal("123456789012.25"), Decimal("0.001"), Decimal("-0.0001"), Decimal("99999999.99"),
    Decimal("-1.0E+20"), Decimal("0.5"),
)


_MIX = 0x9E3779B97F4A7C15F39CC0605CEDC8341082276BF3A27251F86C6A11D0C18E95


def _digits(seq: int, salt: int, count: int) -> str:
    """``count`` decimal digits that look random, from ``seq`` alone (cheap: the preload
    makes one row per base transaction)."""
    number = ((seq * _MIX + salt * 0x5851F42D4C957F2D) ** 3) >> 96
    return str(number % 10**count).rjust(count, "0")


def _pool(salt: int, whole: int, frac: int) -> tuple[Decimal, ...]:
    """Values of every size up to ``whole`` digits before the point, ``frac`` after, either
    sign: built once, so a row costs a lookup (the preload makes one per base transaction)."""
    values = []
    for i in range(_POOL):
        shape = int(_digits(i, salt + 1, 3))
        sign = "-" if shape & 1 else ""
        size = 1 + shape % whole
        values.append(Decimal(f"{sign}{_digits(i, salt, size)}.{_digits(i, salt + 2, frac)}"))
    return tuple(values)


_POOL = 997
_WIDE_POOL = _pool(10, 28, 10)
_HUGE_POOL = _pool(30, 56, 20)


def _wide(seq: int, pool: tuple[Decimal, ...], edge: Decimal, tiny: Decimal) -> Decimal:
    """An edge (largest, smallest, zero, tiny of either sign) one row in two, else a value
    from ``pool``."""
    kind = seq % 10
    if kind < 5:
        # copy_negate, not "-": unary minus rounds to the default context's 28 digits.
        zero = Decimal(0).scaleb(tiny.as_tuple().exponent)  # type: ignore[arg-type]
        return (edge, edge.copy_negate(), zero, tiny, tiny.copy_negate())[kind]
    return pool[seq % _POOL]


def wide_decimals(seq: int) -> tuple[Any, ...]:
    """The stored WIDE_DECIMALS row for base transaction ``seq`` (columns in catalog order)."""
    amount = _wide(seq, _WIDE_POOL, WIDE_EDGE, WIDE_TINY)
    other = _wide(seq + 3, _WIDE_POOL, WIDE_EDGE, WIDE_TINY)
    amounts: list[Decimal | None] = [amount, other, WIDE_TINY.copy_negate()]
    del amounts[seq % 4:]
    if seq % 7 == 0:
        amounts.append(None)
    by_currency: dict[str, Decimal | None] = {"EUR": other, "USD": WIDE_EDGE}
    if seq % 5 == 0:
        by_currency["JPY"] = None
    price = QUOTE_PRICES[seq % len(QUOTE_PRICES)]
    quote = None if seq % 11 == 0 else {"PRICE": None if seq % 13 == 0 else price,
                                        "LABEL": f"quote {seq}"}
    huge = _wide(seq, _HUGE_POOL, HUGE_EDGE, HUGE_TINY)
    return (f"wide_{seq:09d}", amount, amounts, by_currency, quote, huge)
