"""Canned ``/query-stream`` bodies for the benchmark, generated once and cached.

The flat body is a 15-column transaction stream (about 215 bytes per delimited row) spread
over 7 days. Rows reach the client the way a ksqlDB pull query hands over a Kafka topic: each
of 4 partitions in offset (and so event-time) order, the partitions taking turns 500 records
at a time (``max.poll.records``). Keys hash unevenly (hot keys: 40/30/20/10 % of the rows), so
the partitions move through time at different speeds and several days are in flight at once,
which is what a day-partitioning sink has to cope with.

The nested body is the sandbox's own TRANSACTION_STREAM answer (STRUCT, ARRAY, MAP, BYTES...),
fetched from a sandbox server once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CACHE = Path(__file__).parent / "cache"
START_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z
DAYS = 7
PARTITION_SHARE = (0.4, 0.3, 0.2, 0.1)
POLL_RECORDS = 500

FLAT_COLUMNS = (
    ("ROWTIME", "BIGINT"), ("TRANSACTION_ID", "STRING"), ("USER_ID", "STRING"),
    ("MERCHANT_ID", "STRING"), ("AMOUNT", "DECIMAL(10, 2)"), ("CURRENCY", "STRING"),
    ("PAYMENT_METHOD", "STRING"), ("STATUS", "STRING"), ("COUNTRY", "STRING"),
    ("CITY", "STRING"), ("PRODUCT_ID", "STRING"), ("QUANTITY", "INTEGER"),
    ("CARD", "STRING"), ("EMAIL", "STRING"), ("TRANSACTION_TIME", "TIMESTAMP"),
)
_METHODS = ("CARD", "PAYPAL", "BANK_TRANSFER", "APPLE_PAY", "GIFT_CARD")
_STATUSES = ("APPROVED", "APPROVED", "APPROVED", "PENDING", "DECLINED")
_CURRENCIES = ("EUR", "USD", "GBP", "JPY")
_PLACES = (("FR", "Paris"), ("DE", "München"), ("BR", "São Paulo"), ("JP", "東京"),
           ("US", "New York"), ("CH", "Zürich"), ("ES", "A Coruña"), ("GB", "London"))
_CHUNK = 200_000


def header(columns: tuple[tuple[str, str], ...], query_id: str = "bench_query") -> bytes:
    return json.dumps({
        "queryId": query_id,
        "columnNames": [n for n, _ in columns],
        "columnTypes": [t for _, t in columns],
    }, separators=(",", ":")).encode() + b"\n"


def kafka_order(rows: int, rng: np.random.Generator) -> np.ndarray:
    """Row indexes (rows sorted by event time) in the order a consumer of 4 partitions sees them."""
    partition = rng.choice(len(PARTITION_SHARE), size=rows, p=PARTITION_SHARE)
    rank = np.empty(rows, np.int64)
    for p in range(len(PARTITION_SHARE)):
        members = np.flatnonzero(partition == p)
        rank[members] = np.arange(len(members))
    turn = rank // POLL_RECORDS
    return np.lexsort((rank, partition, turn))


def flat_body(rows: int, seed: int = 7) -> Path:
    """The cached flat body of ``rows`` rows (generated on first use)."""
    path = CACHE / f"flat_{rows}_{seed}.jsonl"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    times = np.sort(rng.integers(START_MS, START_MS + DAYS * 86_400_000, size=rows))
    order = kafka_order(rows, rng)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        out.write(header(FLAT_COLUMNS))
        for start in range(0, rows, _CHUNK):
            idx = order[start:start + _CHUNK]
            out.write(_flat_lines(idx, times[idx], rng))
    tmp.rename(path)
    return path


def _flat_lines(seq: np.ndarray, rowtime: np.ndarray, rng: np.random.Generator) -> bytes:
    n = len(seq)
    user = rng.integers(0, 5000, n)
    merchant = rng.integers(0, 400, n)
    cents = rng.integers(99, 5_000_000, n)
    currency = rng.integers(0, len(_CURRENCIES), n)
    method = rng.integers(0, len(_METHODS), n)
    status = rng.integers(0, len(_STATUSES), n)
    place = rng.integers(0, len(_PLACES), n)
    product = rng.integers(0, 600, n)
    quantity = rng.integers(1, 10, n)
    card = rng.integers(0, 10**16, n, dtype=np.int64)
    stamps = rowtime.astype("datetime64[ms]").astype(str)
    lines = []
    for i in range(n):
        k = int(seq[i])
        country, city = _PLACES[place[i]]
        c = f"{card[i]:016d}"
        u = f"user_{user[i]:06d}"
        lines.append(
            f'[{rowtime[i]},"txn-{k:010d}-{(k * 2654435761) % 4294967296:08x}","{u}",'
            f'"merchant_{merchant[i]:05d}",{cents[i] // 100}.{cents[i] % 100:02d},'
            f'"{_CURRENCIES[currency[i]]}","{_METHODS[method[i]]}","{_STATUSES[status[i]]}",'
            f'"{country}","{city}","prod_{product[i]:05d}",{quantity[i]},'
            f'"{c[:4]}-{c[4:8]}-{c[8:12]}-{c[12:]}","{u}@example.com","{stamps[i]}"]\n'
        )
    return "".join(lines).encode()


def nested_body(rows: int, seed: int = 11) -> Path:
    """The sandbox's TRANSACTION_STREAM answer for ``rows`` preloaded rows over 7 days."""
    path = CACHE / f"nested_{rows}_{seed}.jsonl"
    if path.exists():
        return path
    from lakeexportd.ksqldb.curl_stream import CurlTransport
    from lakeexportd.sandbox.harness import Sandbox

    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    query = json.dumps({"sql": "SELECT ROWTIME, * FROM TRANSACTION_STREAM;", "properties": {}})
    with Sandbox.start(seed=seed, preload=rows, preload_days=DAYS) as sb, open(tmp, "wb") as out:
        # The sandbox sends one chunk per row, as ksqlDB does: libcurl drains them fastest.
        response = CurlTransport(sb.url, read_timeout=600).open(
            "POST", "/query-stream", body=query.encode(),
            headers={"Accept": "application/vnd.ksqlapi.delimited.v1",
                     "Content-Type": "application/json"})
        if response.status_code != 200:
            raise RuntimeError(f"sandbox answered HTTP {response.status_code}")
        for chunk in response.iter_raw():
            out.write(chunk)
        response.close()
    tmp.rename(path)
    return path
