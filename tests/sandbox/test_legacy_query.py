"""POST /query (legacy): StreamedRow array, header schema, final messages (reference 3)."""

from __future__ import annotations

import json

import httpx

V1 = {"Accept": "application/vnd.ksql.v1+json"}


def post(client: httpx.Client, ksql: str, headers: dict[str, str] | None = None,
         **extra: object) -> httpx.Response:
    return client.post("/query", json={"ksql": ksql, **extra}, headers=headers)


def test_stream_pull_ends_with_query_completed(client: httpx.Client) -> None:
    """Stream pull: header without KEY markers, rows, then "Query Completed", `,\\n` between."""
    r = post(client, "SELECT TRANSACTION_ID, AMOUNT FROM TRANSACTION_FLATTENED "
                     "WHERE USER_ID = 'user_0001';", V1)
    assert r.headers["content-type"] == "application/vnd.ksql.v1+json"
    assert r.headers["transfer-encoding"] == "chunked"
    parts = r.text.split(",\n")
    assert parts[0].startswith('[{"header":{"queryId":"transient_TRANSACTION_FLATTENED_')
    assert parts[0].endswith('","schema":"`TRANSACTION_ID` STRING, `AMOUNT` DECIMAL(10, 2)"}}')
    assert parts[-1] == '{"finalMessage":"Query Completed"}]'
    assert all(p.startswith('{"row":{"columns":["txn_') for p in parts[1:-1])
    assert json.loads(r.text)[-1] == {"finalMessage": "Query Completed"}


def test_stream_pull_limit_reached(client: httpx.Client) -> None:
    """A stream pull stopped by LIMIT ends with "Limit Reached"."""
    r = post(client, "SELECT * FROM TRANSACTION_FLATTENED LIMIT 2;", V1)
    body = json.loads(r.text)
    assert len(body) == 4 and body[-1] == {"finalMessage": "Limit Reached"}


def test_table_pull_marks_keys_and_has_no_final_message(client: httpx.Client) -> None:
    """Table pull: ` KEY` marker in the schema, no finalMessage, well-formed array."""
    r = post(client, "SELECT * FROM PRODUCT_COUNTS;", V1)
    body = json.loads(r.text)
    schema = body[0]["header"]["schema"]
    assert schema == ("`PRODUCT_ID` STRING KEY, `ORDER_COUNT` BIGINT, `TOTAL_QUANTITY` BIGINT")
    assert body[0]["header"]["queryId"].startswith("query_")
    assert all("row" in e for e in body[1:]) and r.text.endswith("]}}]")


def test_table_pull_without_rows(client: httpx.Client) -> None:
    """A table pull with no matching row is just the header in an array."""
    r = post(client, "SELECT * FROM PRODUCT_COUNTS WHERE PRODUCT_ID = 'none';", V1)
    assert r.text.startswith('[{"header":') and r.text.endswith('"}}]')
    assert len(json.loads(r.text)) == 1


def test_star_accept_gives_delimited(client: httpx.Client) -> None:
    """On /query, Accept */* gives the delimited format of /query-stream."""
    r = post(client, "SELECT * FROM PRODUCT_COUNTS LIMIT 1;", {"Accept": "*/*"})
    assert r.headers["content-type"] == "application/vnd.ksqlapi.delimited.v1"
    assert r.text.count("\n") == 2


def test_empty_ksql_is_rejected(client: httpx.Client) -> None:
    """An empty "ksql" field is 400/40000."""
    r = post(client, "")
    assert r.status_code == 400 and r.json()["error_code"] == 40000
    assert r.headers["content-type"] == "application/json"
