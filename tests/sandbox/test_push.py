"""Push queries (EMIT CHANGES): offsets reset, LIMIT, /close-query, disconnects (reference 8)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import httpx

from lakeexportd.sandbox import Sandbox

from .helpers import query

PUSH = "SELECT TRANSACTION_ID FROM TRANSACTION_FLATTENED EMIT CHANGES"


def test_earliest_with_limit(fresh: Callable[..., Sandbox]) -> None:
    """earliest replays existing rows; LIMIT ends the response after that many rows."""
    sb = fresh(preload=50)
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        r = query(c, PUSH + " LIMIT 5;", properties={"auto.offset.reset": "earliest"})
        head, *rows = r.text.splitlines()
    assert json.loads(head)["queryId"].startswith("transient_TRANSACTION_FLATTENED_")
    assert len(rows) == 5


def test_latest_sees_only_new_rows(fresh: Callable[..., Sandbox]) -> None:
    """latest (the default) skips existing rows and streams rows generated afterwards."""
    sb = fresh(preload=50)
    before = {r["TRANSACTION_ID"] for r in sb.rows("TRANSACTION_FLATTENED")}
    timer = threading.Timer(0.3, sb.generate, args=(3,))
    timer.start()
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        r = query(c, PUSH + " LIMIT 3;")
    timer.join()
    ids = [json.loads(x)[0] for x in r.text.splitlines()[1:]]
    assert len(ids) == 3 and not before & set(ids)


def test_limit_on_query_endpoint(fresh: Callable[..., Sandbox]) -> None:
    """On /query a push query at its LIMIT ends with "Limit Reached"; LIMIT 0 is header + that."""
    sb = fresh(preload=20)
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        v1 = {"Accept": "application/vnd.ksql.v1+json"}
        props = {"auto.offset.reset": "earliest"}
        r = c.post("/query", json={"ksql": PUSH + " LIMIT 2;", "streamsProperties": props},
                   headers=v1)
        assert json.loads(r.text)[-1] == {"finalMessage": "Limit Reached"}
        r = c.post("/query", json={"ksql": PUSH + " LIMIT 0;"}, headers=v1)
        assert len(json.loads(r.text)) == 2


def test_close_query_ends_push(fresh: Callable[..., Sandbox]) -> None:
    """/close-query with the id from the metadata ends an unbounded push query (200, empty)."""
    sb = fresh(preload=10, rate=50)
    with httpx.Client(base_url=sb.url, timeout=10) as c, c.stream(
        "POST", "/query-stream", json={"sql": PUSH + ";"}
    ) as r:
        lines = r.iter_lines()
        query_id = json.loads(next(lines))["queryId"]
        first = next(lines)
        assert first.startswith('["txn_')
        with httpx.Client(base_url=sb.url, timeout=10) as other:
            closed = other.post("/close-query", json={"queryId": query_id})
        assert closed.status_code == 200 and closed.content == b""
        rest = list(lines)  # the body ends instead of streaming forever
    assert all(x.startswith('["txn_') for x in rest)


def test_disconnect_releases_query(fresh: Callable[..., Sandbox]) -> None:
    """When the client goes away the push query is dropped from the server's registry."""
    sb = fresh(preload=10)
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        with c.stream("POST", "/query-stream", json={"sql": PUSH + ";"}) as r:
            stream = r.iter_lines()  # a dropped iterator would close the response itself
            next(stream)
            assert len(sb.app.queries) == 1
    deadline = time.monotonic() + 5
    while sb.app.queries and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sb.app.queries


def test_table_push_emits_updates(fresh: Callable[..., Sandbox]) -> None:
    """A push query on a table streams the updated aggregate rows."""
    sb = fresh(preload=30)
    timer = threading.Timer(0.3, sb.generate, args=(2,))
    timer.start()
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        r = query(c, "SELECT * FROM PAYMENT_TOTALS EMIT CHANGES LIMIT 2;")
    timer.join()
    rows = [json.loads(x) for x in r.text.splitlines()[1:]]
    assert len(rows) == 2 and all(len(x) == 4 for x in rows)


def test_rowpartition_allowed_in_push(fresh: Callable[..., Sandbox]) -> None:
    """ROWPARTITION and ROWOFFSET may be selected in push queries."""
    sb = fresh(preload=30)
    with httpx.Client(base_url=sb.url, timeout=10) as c:
        r = query(c, "SELECT ROWPARTITION, ROWOFFSET FROM TRANSACTION_FLATTENED EMIT CHANGES "
                     "LIMIT 3;", properties={"auto.offset.reset": "earliest"})
    head, *rows = r.text.splitlines()
    assert json.loads(head)["columnTypes"] == ["INTEGER", "BIGINT"]
    assert [json.loads(x)[1] for x in rows] == [0, 1, 2]


def test_offsets_in_select_and_where_match_ground_truth(sandbox: Sandbox) -> None:
    """ROWPARTITION/ROWOFFSET in SELECT and in WHERE with AND/OR/NOT, parentheses and
    comparisons select exactly the records the ground truth places there."""
    truth = sandbox.rows("TRANSACTION_STREAM")
    where = ("(ROWPARTITION = 1 AND ROWOFFSET >= 400) OR (ROWPARTITION <> 1 AND ROWOFFSET < 3)"
             " OR NOT (ROWOFFSET > 1 OR ROWPARTITION < 3)")
    expected = {(t["ROWPARTITION"], t["ROWOFFSET"], t["TRANSACTION_ID"]) for t in truth
                if (t["ROWPARTITION"] == 1 and t["ROWOFFSET"] >= 400)
                or (t["ROWPARTITION"] != 1 and t["ROWOFFSET"] < 3)
                or not (t["ROWOFFSET"] > 1 or t["ROWPARTITION"] < 3)}
    assert 10 < len(expected) < len(truth) // 2
    with httpx.Client(base_url=sandbox.url, timeout=20) as c:
        r = query(c, "SELECT ROWPARTITION, ROWOFFSET, TRANSACTION_ID FROM TRANSACTION_STREAM "
                     f"WHERE {where} EMIT CHANGES LIMIT {len(expected)};",
                  properties={"auto.offset.reset": "earliest"})
    got = [tuple(json.loads(x)) for x in r.text.splitlines()[1:]]
    assert len(got) == len(expected) and set(got) == expected


def test_ground_truth_offsets_are_per_partition_sequences(sandbox: Sandbox) -> None:
    """Sandbox.rows gives each record its partition and offset: 0, 1, 2, ... per partition."""
    by_partition: dict[int, list[int]] = {}
    for t in sandbox.rows("TRANSACTION_STREAM"):
        by_partition.setdefault(t["ROWPARTITION"], []).append(t["ROWOFFSET"])
    assert sorted(by_partition) == [0, 1, 2, 3]
    assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())


def test_partition_added_mid_run(fresh: Callable[..., Sandbox]) -> None:
    """A partition added to a topic while push queries run: new rows land in it too, and
    both an earliest and a latest query deliver them with ROWPARTITION = the new index and
    ROWOFFSET from 0; DESCRIBE shows the new count, derived topics keep theirs."""
    sb = fresh(preload=40, partitions=2)
    sql = ("SELECT ROWPARTITION, ROWOFFSET, TRANSACTION_ID FROM TRANSACTION_STREAM "
           "EMIT CHANGES;")
    with httpx.Client(base_url=sb.url, timeout=20) as c, \
            c.stream("POST", "/query-stream", json={"sql": sql, "properties": {
                "auto.offset.reset": "earliest"}}) as early, \
            c.stream("POST", "/query-stream", json={"sql": sql}) as late:
        early_lines, late_lines = early.iter_lines(), late.iter_lines()
        next(early_lines), next(late_lines)
        replayed = [json.loads(next(early_lines)) for _ in range(40)]
        added = c.post("/_sandbox/partitions", json={"source": "transaction_stream"}).json()
        assert added == {"source": "TRANSACTION_STREAM", "partition": 2, "partitions": 3}
        sb.generate(60)
        new_early = [json.loads(next(early_lines)) for _ in range(60)]
        new_late = [json.loads(next(late_lines)) for _ in range(60)]
        described = c.post("/ksql", json={"ksql": "DESCRIBE TRANSACTION_STREAM;"}).json()
        flat = c.post("/ksql", json={"ksql": "DESCRIBE TRANSACTION_FLATTENED;"}).json()
        bad = c.post("/_sandbox/partitions", json={"source": "USER_SUMMARY"})
    truth = {t["TRANSACTION_ID"]: [t["ROWPARTITION"], t["ROWOFFSET"]]
             for t in sb.rows("TRANSACTION_STREAM")}
    assert all(truth[r[2]] == r[:2] for r in replayed + new_early)
    assert sorted(map(tuple, new_late)) == sorted(map(tuple, new_early))
    in_new = sorted(r[1] for r in new_early if r[0] == 2)
    assert in_new == list(range(len(in_new))) and len(in_new) > 5
    assert max(r[0] for r in replayed) == 1
    assert described[0]["sourceDescription"]["partitions"] == 3
    assert flat[0]["sourceDescription"]["partitions"] == 2
    assert bad.status_code == 400 and "must name a stream" in bad.json()["error"]
    assert sb.add_partition("WIDE_DECIMALS") == 2
    sb.generate(30)
    assert {t["ROWPARTITION"] for t in sb.rows("WIDE_DECIMALS")[-30:]} == {0, 1, 2}
