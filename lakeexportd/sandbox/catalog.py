"""The sandbox's metastore: five streams and three CTAS tables fed by one base stream.

Every base transaction is appended to TRANSACTION_STREAM and, under the same lock, to the
derived streams and the aggregate tables, so a query never sees one without the others and
the tables always agree exactly with the stream rows. WIDE_DECIMALS gets one row per base
transaction (same ROWTIME) with decimals at the edges of DECIMAL(38, 10) and DECIMAL(76, 20).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import zlib
from array import array
from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import Decimal
from typing import Any

from lakeexportd.sandbox.generator import (
    BLACKLISTED_MERCHANTS,
    BLACKLISTED_USERS,
    PRODUCT_IDS,
    Transaction,
    decode_payload,
    decode_tags,
    wide_decimals,
)
from lakeexportd.sandbox.sources import Column, Source, StreamSource, TableSource
from lakeexportd.sandbox.sqltypes import parse

ITEM = (
    "STRUCT<`PRODUCT_ID` STRING, `NAME` STRING, `QUANTITY` INTEGER, "
    "`UNIT_PRICE` DECIMAL(10, 2), `ADDED_AT` TIMESTAMP>"
)
PAYLOAD = (
    f"STRUCT<`CARD` STRING, `EMAIL` STRING, `ITEMS` ARRAY<{ITEM}>, `META` MAP<STRING, STRING>, "
    "`BILLING_DATE` DATE, `LOCAL_TIME` TIME, `SIGNATURE` BYTES, "
    "`GEO` STRUCT<`LAT` DOUBLE, `LON` DOUBLE>>"
)

# name, kind, columns ("NAME TYPE" with an optional " KEY"), timestamp column, query text
DEFINITIONS: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    ("TRANSACTION_STREAM", "STREAM", (
        "TRANSACTION_ID STRING KEY", "USER_ID STRING", "MERCHANT_ID STRING",
        "AMOUNT DECIMAL(10, 2)", "CURRENCY STRING", "PAYMENT_METHOD STRING", "STATUS STRING",
        "RISK_SCORE DOUBLE", "IS_FRAUD BOOLEAN", "TRANSACTION_TIME TIMESTAMP",
        "SETTLEMENT_DATE DATE", "LOCAL_TIME TIME", "DEVICE_FINGERPRINT BYTES",
        "TAGS ARRAY<STRING>", f"PAYLOAD {PAYLOAD}",
    ), "TRANSACTION_TIME", ""),
    ("TRANSACTION_FLATTENED", "STREAM", (
        "TRANSACTION_ID STRING KEY", "USER_ID STRING", "MERCHANT_ID STRING",
        "AMOUNT DECIMAL(10, 2)", "CURRENCY STRING", "PAYMENT_METHOD STRING", "STATUS STRING",
        "COUNTRY STRING", "CITY STRING", "PRODUCT_ID STRING", "QUANTITY INTEGER",
        "CARD STRING", "EMAIL STRING", "RISK_SCORE DOUBLE", "IS_FRAUD BOOLEAN",
        "TRANSACTION_TIME TIMESTAMP",
    ), "TRANSACTION_TIME",
        "SELECT TRANSACTION_ID, USER_ID, MERCHANT_ID, AMOUNT, CURRENCY, PAYMENT_METHOD, STATUS, "
        "PAYLOAD->META['country'] AS COUNTRY, PAYLOAD->META['city'] AS CITY, "
        "PAYLOAD->ITEMS[1]->PRODUCT_ID AS PRODUCT_ID, PAYLOAD->ITEMS[1]->QUANTITY AS QUANTITY, "
        "PAYLOAD->CARD AS CARD, PAYLOAD->EMAIL AS EMAIL, RISK_SCORE, IS_FRAUD, TRANSACTION_TIME "
        "FROM TRANSACTION_STREAM EMIT CHANGES"),
    ("TRANSACTION_ANONYMIZED", "STREAM", (
        "TRANSACTION_ID STRING KEY", "USER_ID STRING", "MERCHANT_ID STRING",
        "AMOUNT DECIMAL(10, 2)", "CURRENCY STRING", "PAYMENT_METHOD STRING", "STATUS STRING",
        "COUNTRY STRING", "MASKED_CARD STRING", "EMAIL_HASH STRING",
        "TRANSACTION_TIME TIMESTAMP",
    ), "TRANSACTION_TIME",
        "SELECT TRANSACTION_ID, USER_ID, MERCHANT_ID, AMOUNT, CURRENCY, PAYMENT_METHOD, STATUS, "
        "COUNTRY, MASK_KEEP_RIGHT(CARD, 4, '*', '*', NULL, '-') AS MASKED_CARD, "
        "SHA256(EMAIL) AS EMAIL_HASH, TRANSACTION_TIME FROM TRANSACTION_FLATTENED EMIT CHANGES"),
    ("TRANSACTION_BLACKLISTED", "STREAM", (
        "TRANSACTION_ID STRING KEY", "USER_ID STRING", "MERCHANT_ID STRING",
        "AMOUNT DECIMAL(10, 2)", "PAYMENT_METHOD STRING", "BLACKLIST_REASON STRING",
        "TRANSACTION_TIME TIMESTAMP",
    ), "TRANSACTION_TIME",
        "SELECT TRANSACTION_ID, USER_ID, MERCHANT_ID, AMOUNT, PAYMENT_METHOD, "
        "CASE WHEN USER_ID IN (...) THEN 'USER' ELSE 'MERCHANT' END AS BLACKLIST_REASON, "
        "TRANSACTION_TIME FROM TRANSACTION_FLATTENED WHERE USER_ID IN (...) "
        "OR MERCHANT_ID IN (...) EMIT CHANGES"),
    ("WIDE_DECIMALS", "STREAM", (
        "ID STRING KEY", "AMOUNT DECIMAL(38, 10)", "AMOUNTS ARRAY<DECIMAL(38, 10)>",
        "BY_CURRENCY MAP<STRING, DECIMAL(38, 10)>",
        "QUOTE STRUCT<`PRICE` DECIMAL(38, 10), `LABEL` STRING>", "HUGE DECIMAL(76, 20)",
    ), "", ""),
    ("USER_SUMMARY", "TABLE", (
        "USER_ID STRING KEY", "TRANSACTION_COUNT BIGINT", "TOTAL_AMOUNT DECIMAL(18, 2)",
        "MAX_AMOUNT DECIMAL(10, 2)", "LAST_TRANSACTION_TIME TIMESTAMP",
    ), "",
        "SELECT USER_ID, COUNT(*) AS TRANSACTION_COUNT, SUM(AMOUNT) AS TOTAL_AMOUNT, "
        "MAX(AMOUNT) AS MAX_AMOUNT, MAX(TRANSACTION_TIME) AS LAST_TRANSACTION_TIME "
        "FROM TRANSACTION_FLATTENED GROUP BY USER_ID EMIT CHANGES"),
    ("PAYMENT_TOTALS", "TABLE", (
        "PAYMENT_METHOD STRING KEY", "TRANSACTION_COUNT BIGINT", "TOTAL_AMOUNT DECIMAL(18, 2)",
        "FRAUD_COUNT BIGINT",
    ), "",
        "SELECT PAYMENT_METHOD, COUNT(*) AS TRANSACTION_COUNT, SUM(AMOUNT) AS TOTAL_AMOUNT, "
        "SUM(CASE WHEN IS_FRAUD THEN 1 ELSE 0 END) AS FRAUD_COUNT "
        "FROM TRANSACTION_FLATTENED GROUP BY PAYMENT_METHOD EMIT CHANGES"),
    ("PRODUCT_COUNTS", "TABLE", (
        "PRODUCT_ID STRING KEY", "ORDER_COUNT BIGINT", "TOTAL_QUANTITY BIGINT",
    ), "",
        "SELECT PRODUCT_ID, COUNT(*) AS ORDER_COUNT, SUM(QUANTITY) AS TOTAL_QUANTITY "
        "FROM TRANSACTION_FLATTENED GROUP BY PRODUCT_ID EMIT CHANGES"),
)


def parse_columns(specs: Iterable[str]) -> list[Column]:
    columns = []
    for slot, spec in enumerate(specs):
        name, _, rest = spec.partition(" ")
        key = rest.endswith(" KEY")
        type_text = rest[: -len(" KEY")] if key else rest
        columns.append(Column(name, parse(type_text), key=key, slot=slot))
    return columns


def mask_card(card: str | None) -> str | None:
    if card is None:
        return None
    return "-".join("****" for _ in range(3)) + "-" + card[-4:]


@functools.cache  # emails repeat (one per user): hash each once and share the text
def sha256_hex(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def flatten(v: dict[str, Any]) -> tuple[Any, ...]:
    """TRANSACTION_FLATTENED's row, read from the compact PAYLOAD (``decode_payload``)."""
    card, email, items, (country, city, _), *_ = v["PAYLOAD"]
    product, quantity, *_ = items[0]
    return (
        v["TRANSACTION_ID"], v["USER_ID"], v["MERCHANT_ID"], v["AMOUNT"], v["CURRENCY"],
        v["PAYMENT_METHOD"], v["STATUS"], country, city, PRODUCT_IDS[product], quantity, card,
        email, v["RISK_SCORE"], v["IS_FRAUD"], v["TRANSACTION_TIME"],
    )


def _blacklist_reason(user: str) -> str:
    return "USER" if user in BLACKLISTED_USERS else "MERCHANT"


# Columns of the derived streams as (slot in TRANSACTION_STREAM's stored row, read function);
# slot 14 is the compact PAYLOAD: (card, email, items, (country, city, channel), ...).
_BASE_SLOTS = {name: (slot, None) for slot, name in enumerate((
    "TRANSACTION_ID", "USER_ID", "MERCHANT_ID", "AMOUNT", "CURRENCY", "PAYMENT_METHOD", "STATUS",
    "RISK_SCORE", "IS_FRAUD", "TRANSACTION_TIME"))}
_FROM_PAYLOAD: dict[str, tuple[int, Callable[[Any], Any] | None]] = {
    "COUNTRY": (14, lambda p: p[3][0]),
    "CITY": (14, lambda p: p[3][1]),
    "PRODUCT_ID": (14, lambda p: PRODUCT_IDS[p[2][0][0]]),
    "QUANTITY": (14, lambda p: p[2][0][1]),
    "CARD": (14, lambda p: p[0]),
    "EMAIL": (14, lambda p: p[1]),
    "MASKED_CARD": (14, lambda p: mask_card(p[0])),
    "EMAIL_HASH": (14, lambda p: sha256_hex(p[1])),
}
VIEWS: dict[str, dict[str, tuple[int, Callable[[Any], Any] | None]]] = {
    "TRANSACTION_STREAM": {"TAGS": (13, decode_tags), "PAYLOAD": (14, decode_payload)},
    "TRANSACTION_FLATTENED": {**_BASE_SLOTS, **_FROM_PAYLOAD},
    "TRANSACTION_ANONYMIZED": {**_BASE_SLOTS, **_FROM_PAYLOAD},
    "TRANSACTION_BLACKLISTED": {**_BASE_SLOTS, "BLACKLIST_REASON": (1, _blacklist_reason)},
}


class Catalog:
    """All sources, and the one lock that makes a base row and its derived rows atomic."""

    def __init__(self, partitions: int = 4, interleave_chunk: int = 100) -> None:
        self.partitions = partitions
        # Records a consumer takes from one partition before moving to the next.
        self.interleave_chunk = interleave_chunk
        self.lock = threading.RLock()
        self.sources: dict[str, Source] = {}
        self.command_sequence = len(DEFINITIONS)
        for name, kind, specs, ts, query in DEFINITIONS:
            topic = name
            cls = StreamSource if kind == "STREAM" else TableSource
            self.sources[name] = cls(
                name=name, kind=kind, topic=topic, columns=parse_columns(specs),
                partitions=partitions, timestamp_column=ts, query_text=query,
            )
        # Derived streams store the base row itself and read their columns out of it.
        for name, view in VIEWS.items():
            source = self.sources[name]
            source.columns = [
                replace(c, slot=view[c.name][0], cast=view[c.name][1]) if c.name in view else c
                for c in source.columns
            ]

    def stream(self, name: str) -> StreamSource:
        source = self.sources[name]
        assert isinstance(source, StreamSource)
        return source

    def table(self, name: str) -> TableSource:
        source = self.sources[name]
        assert isinstance(source, TableSource)
        return source

    def partition_of(self, key: str, partitions: int | None = None) -> int:
        """The key's partition, as a keyed producer picks it: a hash modulo the topic's
        partition count, so adding partitions moves keys (as in Kafka)."""
        return zlib.crc32(key.encode()) % (partitions or self.partitions)

    def add_partition(self, name: str) -> int:
        """Add a partition to a stream's topic (Kafka can only add); returns its index.

        Only this topic grows: a derived stream writes its own topic, whose count is fixed.
        """
        source = self.stream(name)
        with self.lock:
            source.by_partition.append(array("q"))
            source.partitions += 1
            return source.partitions - 1

    def append(self, transactions: Iterable[Transaction]) -> int:
        """Append base rows and everything derived from them, atomically for readers."""
        base = self.stream("TRANSACTION_STREAM")
        columns = [c.name for c in parse_columns(DEFINITIONS[0][2])]
        flat_s = self.stream("TRANSACTION_FLATTENED")
        anon_s = self.stream("TRANSACTION_ANONYMIZED")
        black_s = self.stream("TRANSACTION_BLACKLISTED")
        wide_s = self.stream("WIDE_DECIMALS")
        count = 0
        with self.lock:
            for t in transactions:
                v = t.values
                key = zlib.crc32(v["TRANSACTION_ID"].encode())
                stored = tuple(v[c] for c in columns)
                base.append(stored, t.rowtime, key % base.partitions)
                flat_s.append(stored, t.rowtime, key % flat_s.partitions)
                anon_s.append(stored, t.rowtime, key % anon_s.partitions)
                if v["USER_ID"] in BLACKLISTED_USERS or v["MERCHANT_ID"] in BLACKLISTED_MERCHANTS:
                    black_s.append(stored, t.rowtime, key % black_s.partitions)
                wide = wide_decimals(t.seq)
                wide_s.append(wide, t.rowtime, self.partition_of(wide[0], wide_s.partitions))
                self._aggregate(flatten(v), t.rowtime)
                count += 1
        return count

    def _aggregate(self, flat: tuple[Any, ...], rowtime: int) -> None:
        amount: Decimal = flat[3]
        users = self.table("USER_SUMMARY")
        old = users.current.get(flat[1])
        if old is None:
            users.upsert(flat[1], (flat[1], 1, amount, amount, flat[15]), rowtime)
        else:
            (_, n, total, top, last), old_time = old
            users.upsert(flat[1], (flat[1], n + 1, total + amount, max(top, amount),
                                   max(last, flat[15])), max(old_time, rowtime))
        payments = self.table("PAYMENT_TOTALS")
        fraud = 1 if flat[14] else 0
        old = payments.current.get(flat[5])
        if old is None:
            payments.upsert(flat[5], (flat[5], 1, amount, fraud), rowtime)
        else:
            (_, n, total, frauds), old_time = old
            payments.upsert(flat[5], (flat[5], n + 1, total + amount, frauds + fraud),
                            max(old_time, rowtime))
        products = self.table("PRODUCT_COUNTS")
        old = products.current.get(flat[9])
        if old is None:
            products.upsert(flat[9], (flat[9], 1, flat[10]), rowtime)
        else:
            (_, n, qty), old_time = old
            products.upsert(flat[9], (flat[9], n + 1, qty + flat[10]), max(old_time, rowtime))

    def warm_lines(self, stop: threading.Event, step: int = 10_000) -> None:
        """Format the stored rows' text ahead of the first query (run in a background thread).

        Small steps keep the format lock short, so a query arriving meanwhile waits little.
        Only the flat stream (the benchmark's source): formatting the others too would hold
        the GIL against the queries being served; they are formatted on first use.
        """
        for name in ("TRANSACTION_FLATTENED",):
            source = self.stream(name)
            total = len(source.rows)
            for upto in range(min(step, total), total + step, step):
                if stop.is_set():
                    return
                source.lines(min(upto, total))

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                name: len(s.rows) if isinstance(s, StreamSource)
                else len(s.current) if isinstance(s, TableSource) else 0
                for name, s in self.sources.items()
            }
