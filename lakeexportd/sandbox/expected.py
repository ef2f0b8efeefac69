"""The Arrow types lakeexportd must write for each sandbox column, written out by hand.

This is the exporter's contract (README "Types"): DECIMAL(p, s) is ``decimal128(p, s)`` up to
38 digits and ``decimal256(p, s)`` above, TIMESTAMP ``timestamp[ms, UTC]``, DATE ``date32``,
TIME ``time64[us]``, BYTES ``binary``, INTEGER ``int32``, BIGINT ``int64``, DOUBLE ``float64``,
and ARRAY/MAP/STRUCT keep their shape. Each type is stated literally rather than derived from
a ksqlDB type string, so a test comparing a lake with ``Sandbox.arrow`` checks the client's
mapping against this list, not against itself. A column added at run time (ALTER, the admin
schema endpoint) is not listed: the test that adds it names its expected type.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("ms", tz="UTC")
MONEY = pa.decimal128(10, 2)
SUM = pa.decimal128(18, 2)
WIDE = pa.decimal128(38, 10)

ITEM = pa.struct([
    pa.field("PRODUCT_ID", pa.string()),
    pa.field("NAME", pa.string()),
    pa.field("QUANTITY", pa.int32()),
    pa.field("UNIT_PRICE", MONEY),
    pa.field("ADDED_AT", TIMESTAMP),
])
PAYLOAD = pa.struct([
    pa.field("CARD", pa.string()),
    pa.field("EMAIL", pa.string()),
    pa.field("ITEMS", pa.list_(ITEM)),
    pa.field("META", pa.map_(pa.string(), pa.string())),
    pa.field("BILLING_DATE", pa.date32()),
    pa.field("LOCAL_TIME", pa.time64("us")),
    pa.field("SIGNATURE", pa.binary()),
    pa.field("GEO", pa.struct([pa.field("LAT", pa.float64()), pa.field("LON", pa.float64())])),
])

ARROW_TYPES: dict[str, dict[str, pa.DataType]] = {
    "TRANSACTION_STREAM": {
        "TRANSACTION_ID": pa.string(),
        "USER_ID": pa.string(),
        "MERCHANT_ID": pa.string(),
        "AMOUNT": MONEY,
        "CURRENCY": pa.string(),
        "PAYMENT_METHOD": pa.string(),
        "STATUS": pa.string(),
        "RISK_SCORE": pa.float64(),
        "IS_FRAUD": pa.bool_(),
        "TRANSACTION_TIME": TIMESTAMP,
        "SETTLEMENT_DATE": pa.date32(),
        "LOCAL_TIME": pa.time64("us"),
        "DEVICE_FINGERPRINT": pa.binary(),
        "TAGS": pa.list_(pa.string()),
        "PAYLOAD": PAYLOAD,
    },
    "TRANSACTION_FLATTENED": {
        "TRANSACTION_ID": pa.string(),
        "USER_ID": pa.string(),
        "MERCHANT_ID": pa.string(),
        "AMOUNT": MONEY,
        "CURRENCY": pa.string(),
        "PAYMENT_METHOD": pa.string(),
        "STATUS": pa.string(),
        "COUNTRY": pa.string(),
        "CITY": pa.string(),
        "PRODUCT_ID": pa.string(),
        "QUANTITY": pa.int32(),
        "CARD": pa.string(),
        "EMAIL": pa.string(),
        "RISK_SCORE": pa.float64(),
        "IS_FRAUD": pa.bool_(),
        "TRANSACTION_TIME": TIMESTAMP,
    },
    "TRANSACTION_ANONYMIZED": {
        "TRANSACTION_ID": pa.string(),
        "USER_ID": pa.string(),
        "MERCHANT_ID": pa.string(),
        "AMOUNT": MONEY,
        "CURRENCY": pa.string(),
        "PAYMENT_METHOD": pa.string(),
        "STATUS": pa.string(),
        "COUNTRY": pa.string(),
        "MASKED_CARD": pa.string(),
        "EMAIL_HASH": pa.string(),
        "TRANSACTION_TIME": TIMESTAMP,
    },
    "TRANSACTION_BLACKLISTED": {
        "TRANSACTION_ID": pa.string(),
        "USER_ID": pa.string(),
        "MERCHANT_ID": pa.string(),
        "AMOUNT": MONEY,
        "PAYMENT_METHOD": pa.string(),
        "BLACKLIST_REASON": pa.string(),
        "TRANSACTION_TIME": TIMESTAMP,
    },
    "WIDE_DECIMALS": {
        "ID": pa.string(),
        "AMOUNT": WIDE,
        "AMOUNTS": pa.list_(WIDE),
        "BY_CURRENCY": pa.map_(pa.string(), WIDE),
        "QUOTE": pa.struct([pa.field("PRICE", WIDE), pa.field("LABEL", pa.string())]),
        "HUGE": pa.decimal256(76, 20),
    },
    "USER_SUMMARY": {
        "USER_ID": pa.string(),
        "TRANSACTION_COUNT": pa.int64(),
        "TOTAL_AMOUNT": SUM,
        "MAX_AMOUNT": MONEY,
        "LAST_TRANSACTION_TIME": TIMESTAMP,
    },
    "PAYMENT_TOTALS": {
        "PAYMENT_METHOD": pa.string(),
        "TRANSACTION_COUNT": pa.int64(),
        "TOTAL_AMOUNT": SUM,
        "FRAUD_COUNT": pa.int64(),
    },
    "PRODUCT_COUNTS": {
        "PRODUCT_ID": pa.string(),
        "ORDER_COUNT": pa.int64(),
        "TOTAL_QUANTITY": pa.int64(),
    },
}
