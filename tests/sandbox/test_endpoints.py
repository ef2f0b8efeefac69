"""/info, /healthcheck, unknown paths, /close-query errors and Basic auth (reference 1, 6, 9)."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from lakeexportd.sandbox import Sandbox

from .helpers import query

UNAUTHORIZED = b'{"@type":"generic_error","error_code":40100,"message":"Unauthorized"}'


def test_info(client: httpx.Client) -> None:
    """/info is the KsqlServerInfo wrapper of a 0.29.0 server."""
    r = client.get("/info")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == (
        b'{"KsqlServerInfo":{"version":"0.29.0","kafkaClusterId":"j3tOi6E_RtO_TMH3gBmK7A",'
        b'"ksqlServiceId":"default_","serverStatus":"RUNNING"}}')


def test_healthcheck(client: httpx.Client) -> None:
    """/healthcheck reports healthy with serverState READY."""
    r = client.get("/healthcheck")
    assert r.status_code == 200
    assert r.json() == {"isHealthy": True, "details": {
        "metastore": {"isHealthy": True}, "kafka": {"isHealthy": True},
        "commandRunner": {"isHealthy": True}}, "serverState": "READY"}


def test_unknown_path_is_plain_404(client: httpx.Client) -> None:
    """An unknown path answers 404 with the plain body "Not Found"."""
    r = client.get("/no/such/path")
    assert r.status_code == 404 and r.content == b"Not Found"


def test_root_redirects_to_info(client: httpx.Client) -> None:
    """GET / is a 307 to /info."""
    r = client.get("/")
    assert r.status_code == 307 and r.headers["location"] == "/info"


def test_close_unknown_query(client: httpx.Client) -> None:
    """/close-query with an unknown id is 400/40000 "No query with id ..."."""
    r = client.post("/close-query", json={"queryId": "transient_X_1"})
    assert r.status_code == 400
    assert r.json() == {"@type": "generic_error", "error_code": 40000,
                        "message": "No query with id transient_X_1"}


def test_basic_auth(fresh: Callable[..., Sandbox]) -> None:
    """With auth on, missing or wrong credentials get 401/40100; right ones pass."""
    sb = fresh(preload=10, user="alice", password="s3cret")
    with httpx.Client(base_url=sb.url) as anonymous:
        for path in ("/info", "/ksql", "/query-stream"):
            r = anonymous.request("GET" if path == "/info" else "POST", path, json={})
            assert r.status_code == 401 and r.content == UNAUTHORIZED
        assert anonymous.get("/healthcheck").status_code == 200, "never authenticated"
    with httpx.Client(base_url=sb.url, auth=("alice", "wrong")) as wrong:
        assert wrong.get("/info").status_code == 401
    with httpx.Client(base_url=sb.url, auth=("alice", "s3cret")) as good:
        assert good.get("/info").status_code == 200
        assert query(good, "SELECT * FROM USER_SUMMARY;").status_code == 200
