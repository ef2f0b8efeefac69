"""Serving speed: a big stream pull streams from cached row text, in large chunks."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from lakeexportd.sandbox import Sandbox


def test_large_stream_pull_is_fast(fresh: Callable[..., Sandbox]) -> None:
    """60k flat rows are served in a few seconds; a second query reuses the formatted text."""
    sb = fresh(preload=60_000)
    with httpx.Client(base_url=sb.url, timeout=60) as c:
        timings = []
        for _ in range(2):
            start = time.monotonic()
            rows = chunks = 0
            with c.stream("POST", "/query-stream",
                          json={"sql": "SELECT * FROM TRANSACTION_FLATTENED;"}) as r:
                for chunk in r.iter_raw():
                    chunks += 1
                    rows += chunk.count(b"\n")
            timings.append(time.monotonic() - start)
            assert rows == 60_001
            assert chunks < 500, "written in large chunks, not one write per row"
        r = c.post("/query-stream", json={
            "sql": "SELECT * FROM TRANSACTION_FLATTENED WHERE ROWTIME > 0 AND ROWTIME <= 1;"})
        assert r.text.count("\n") == 1
    assert timings[1] < 3.0 and timings[1] < timings[0]
