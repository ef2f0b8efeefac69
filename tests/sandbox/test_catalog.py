"""Catalog: derived streams and aggregate tables agree exactly with the base stream's rows."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx

from lakeexportd.sandbox import Sandbox
from lakeexportd.sandbox.generator import BLACKLISTED_MERCHANTS, BLACKLISTED_USERS, MS_PER_DAY

from .conftest import FIXED_NOW
from .helpers import lines, query


def check_aggregates(sb: Sandbox) -> None:
    flat = sb.rows("TRANSACTION_FLATTENED")
    users: dict[str, list[Any]] = defaultdict(lambda: [0, Decimal("0.00"), Decimal(0), 0])
    for r in flat:
        u = users[r["USER_ID"]]
        u[0] += 1
        u[1] += r["AMOUNT"]
        u[2] = max(u[2], r["AMOUNT"])
        u[3] = max(u[3], r["TRANSACTION_TIME"])
    table = {t["USER_ID"]: t for t in sb.table("USER_SUMMARY")}
    assert set(table) == set(users)
    for user, (n, total, top, last) in users.items():
        t = table[user]
        assert (t["TRANSACTION_COUNT"], t["TOTAL_AMOUNT"], t["MAX_AMOUNT"],
                t["LAST_TRANSACTION_TIME"]) == (n, total, top, last)
    payments = {t["PAYMENT_METHOD"]: t for t in sb.table("PAYMENT_TOTALS")}
    for method, t in payments.items():
        mine = [r for r in flat if r["PAYMENT_METHOD"] == method]
        assert t["TRANSACTION_COUNT"] == len(mine)
        assert t["TOTAL_AMOUNT"] == sum((r["AMOUNT"] for r in mine), Decimal("0.00"))
        assert t["FRAUD_COUNT"] == sum(r["IS_FRAUD"] for r in mine)
    products = {t["PRODUCT_ID"]: t for t in sb.table("PRODUCT_COUNTS")}
    assert sum(t["ORDER_COUNT"] for t in products.values()) == len(flat)
    assert sum(t["TOTAL_QUANTITY"] for t in products.values()) == sum(r["QUANTITY"] for r in flat)


def test_aggregates_match_stream(sandbox: Sandbox) -> None:
    """Counts, exact DECIMAL sums, maxima of the tables equal what the stream rows give."""
    check_aggregates(sandbox)


def test_aggregates_follow_new_rows(fresh: Callable[..., Sandbox]) -> None:
    """After more rows are generated the tables still agree exactly."""
    sb = fresh(preload=100)
    sb.generate(250)
    check_aggregates(sb)


def test_served_table_matches_ground_truth(sandbox: Sandbox, client: httpx.Client) -> None:
    """What a table pull serves is the table's ground truth, DECIMAL text with scale 2."""
    served = [line for line in lines(query(client, "SELECT * FROM USER_SUMMARY;"))[1:]]
    truth = sandbox.table("USER_SUMMARY")
    assert len(served) == len(truth)
    first = truth[0]
    assert served[0].startswith(f'["{first["USER_ID"]}",{first["TRANSACTION_COUNT"]},'
                                f'{first["TOTAL_AMOUNT"]:f},')


def test_derived_streams(sandbox: Sandbox) -> None:
    """Flattened, anonymized and blacklisted rows are derived from the same base rows."""
    base = {r["TRANSACTION_ID"]: r for r in sandbox.rows("TRANSACTION_STREAM")}
    flat = sandbox.rows("TRANSACTION_FLATTENED")
    assert [r["TRANSACTION_ID"] for r in flat] == list(base)
    for row in flat[:200]:
        b = base[row["TRANSACTION_ID"]]
        assert row["CARD"] == b["PAYLOAD"]["CARD"]
        assert row["PRODUCT_ID"] == b["PAYLOAD"]["ITEMS"][0]["PRODUCT_ID"]
        assert row["CITY"] == b["PAYLOAD"]["META"]["city"]
        assert row["ROWTIME"] == b["ROWTIME"] == b["TRANSACTION_TIME"]
    for row in sandbox.rows("TRANSACTION_ANONYMIZED")[:200]:
        b = base[row["TRANSACTION_ID"]]
        card = b["PAYLOAD"]["CARD"]
        assert row["MASKED_CARD"] == f"****-****-****-{card[-4:]}"
        email = b["PAYLOAD"]["EMAIL"]
        expected = None if email is None else hashlib.sha256(email.encode()).hexdigest()
        assert row["EMAIL_HASH"] == expected
    black = sandbox.rows("TRANSACTION_BLACKLISTED")
    expected_ids = [r["TRANSACTION_ID"] for r in flat if r["USER_ID"] in BLACKLISTED_USERS
                    or r["MERCHANT_ID"] in BLACKLISTED_MERCHANTS]
    assert [r["TRANSACTION_ID"] for r in black] == expected_ids and expected_ids


def test_preload_spread_and_determinism(sandbox: Sandbox, fresh: Callable[..., Sandbox]) -> None:
    """Preloaded rows span the last 7 days before now; the same seed gives the same rows."""
    times = [r["ROWTIME"] for r in sandbox.rows("TRANSACTION_STREAM")]
    now = int(FIXED_NOW * 1000)
    assert max(times) < now and min(times) >= now - 7 * MS_PER_DAY - 5_000
    assert max(times) - min(times) > 6 * MS_PER_DAY
    again = fresh(seed=7, preload=2000)
    assert again.rows("TRANSACTION_STREAM") == sandbox.rows("TRANSACTION_STREAM")
