"""POST /ksql: SHOW/LIST, DESCRIBE [EXTENDED], ALTER, and its errors (reference 5)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx

from lakeexportd.sandbox import Sandbox

from .helpers import lines, query


def ksql(client: httpx.Client, text: str) -> httpx.Response:
    return client.post("/ksql", json={"ksql": text, "streamsProperties": {}})


def test_show_streams_shape(client: httpx.Client) -> None:
    """SHOW STREAMS lists every stream with ksqlDB's SourceInfo fields, in order."""
    r = ksql(client, "SHOW STREAMS;")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.text.startswith(
        '[{"@type":"streams","statementText":"SHOW STREAMS;","streams":[{"type":"STREAM",'
        '"name":"TRANSACTION_STREAM","topic":"TRANSACTION_STREAM","keyFormat":"KAFKA",'
        '"valueFormat":"JSON","isWindowed":false},')
    names = [s["name"] for s in r.json()[0]["streams"]]
    assert names == ["TRANSACTION_STREAM", "TRANSACTION_FLATTENED", "TRANSACTION_ANONYMIZED",
                     "TRANSACTION_BLACKLISTED", "WIDE_DECIMALS"]
    assert r.text.endswith('],"warnings":[]}]')


def test_list_tables_and_several_statements(client: httpx.Client) -> None:
    """LIST TABLES works, and several statements give one entity each."""
    body = ksql(client, "LIST TABLES; SHOW STREAMS;").json()
    assert body[0]["@type"] == "tables" and body[1]["@type"] == "streams"
    assert [t["name"] for t in body[0]["tables"]] == ["USER_SUMMARY", "PAYMENT_TOTALS",
                                                      "PRODUCT_COUNTS"]
    assert all(t["type"] == "TABLE" for t in body[0]["tables"])


def test_describe_fields(client: httpx.Client) -> None:
    """DESCRIBE: key column typed KEY, value columns untyped, SchemaInfo with DECIMAL params."""
    r = ksql(client, "DESCRIBE TRANSACTION_FLATTENED;")
    entity = r.json()[0]
    assert list(entity) == ["@type", "statementText", "sourceDescription", "warnings"]
    d = entity["sourceDescription"]
    assert list(d) == ["name", "windowType", "readQueries", "writeQueries", "fields", "type",
                       "timestamp", "statistics", "errorStats", "extended", "keyFormat",
                       "valueFormat", "topic", "partitions", "replication", "statement",
                       "queryOffsetSummaries", "sourceConstraints", "clusterStatistics",
                       "clusterErrorStats"]
    assert '{"name":"TRANSACTION_ID","schema":{"type":"STRING","fields":null,"memberSchema":null},' \
           '"type":"KEY"}' in r.text
    assert ('{"name":"AMOUNT","schema":{"type":"DECIMAL","fields":null,"memberSchema":null,'
            '"parameters":{"precision":10,"scale":2}}}') in r.text
    assert d["timestamp"] == "TRANSACTION_TIME" and d["partitions"] == 4
    assert d["writeQueries"][0]["id"].startswith("CSAS_TRANSACTION_FLATTENED_")
    assert d["extended"] is False and d["queryOffsetSummaries"] == []


def test_describe_nested_schema(client: httpx.Client) -> None:
    """STRUCT lists fields, ARRAY and MAP put the element/value schema in memberSchema."""
    d = ksql(client, "DESCRIBE TRANSACTION_STREAM;").json()[0]["sourceDescription"]
    payload = next(f for f in d["fields"] if f["name"] == "PAYLOAD")["schema"]
    assert payload["type"] == "STRUCT" and payload["memberSchema"] is None
    items = next(f for f in payload["fields"] if f["name"] == "ITEMS")["schema"]
    assert items["type"] == "ARRAY" and items["memberSchema"]["type"] == "STRUCT"
    meta = next(f for f in payload["fields"] if f["name"] == "META")["schema"]
    assert meta == {"type": "MAP", "fields": None,
                    "memberSchema": {"type": "STRING", "fields": None, "memberSchema": None}}
    assert d["statement"].startswith("CREATE STREAM TRANSACTION_STREAM (TRANSACTION_ID STRING KEY")
    assert [q["sinks"] for q in d["readQueries"]] == [["TRANSACTION_FLATTENED"]]


def test_describe_extended(sandbox: Sandbox, client: httpx.Client) -> None:
    """DESCRIBE EXTENDED sets extended and reports consumer offsets per partition."""
    d = ksql(client, "DESCRIBE TRANSACTION_STREAM EXTENDED;").json()[0]["sourceDescription"]
    assert d["extended"] is True
    offsets = d["queryOffsetSummaries"][0]["topicSummaries"][0]["offsets"]
    assert [o["partition"] for o in offsets] == [0, 1, 2, 3]
    assert sum(o["logEndOffset"] for o in offsets) == sandbox.counts()["TRANSACTION_STREAM"]


def test_describe_missing_source(client: httpx.Client) -> None:
    """DESCRIBE of a missing source is 400/40001 statement_error (not 404)."""
    r = ksql(client, "DESCRIBE NONEXISTENT;")
    assert r.status_code == 400
    assert r.content == (
        b'{"@type":"statement_error","error_code":40001,"message":"Could not find STREAM/TABLE '
        b"'NONEXISTENT' in the Metastore\",\"statementText\":\"DESCRIBE NONEXISTENT;\","
        b'"entities":[]}')


def test_select_on_ksql_is_40002(client: httpx.Client) -> None:
    """A SELECT sent to /ksql is refused with 40002 and ksqlDB's exact message."""
    r = ksql(client, "SELECT * FROM TRANSACTION_STREAM;")
    assert r.status_code == 400
    assert r.json() == {
        "@type": "statement_error", "error_code": 40002,
        "message": "The following statement types should be issued to the websocket endpoint "
                   "'/query':\n\t* PRINT\n\t* SELECT",
        "statementText": "SELECT * FROM TRANSACTION_STREAM;", "entities": []}


def test_alter_add_column(fresh: Callable[..., Sandbox]) -> None:
    """ALTER STREAM ... ADD COLUMN adds a column that queries and DESCRIBE then show as null."""
    sb = fresh(preload=20)
    with httpx.Client(base_url=sb.url) as c:
        r = ksql(c, "ALTER STREAM TRANSACTION_FLATTENED ADD COLUMN NOTE STRING;")
        assert r.status_code == 200
        entity = r.json()[0]
        assert entity["@type"] == "currentStatus"
        assert entity["commandId"] == "stream/`TRANSACTION_FLATTENED`/alter"
        assert entity["commandStatus"] == {"status": "SUCCESS", "message": "Stream altered",
                                           "queryId": None}
        head, first, *_ = lines(query(c, "SELECT * FROM TRANSACTION_FLATTENED;"))
        assert json.loads(head)["columnNames"][-1] == "NOTE"
        assert json.loads(first)[-1] is None
        again = ksql(c, "ALTER STREAM TRANSACTION_FLATTENED ADD COLUMN NOTE STRING;")
        assert again.status_code == 400 and again.json()["error_code"] == 40001
