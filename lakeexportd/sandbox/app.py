"""The sandbox's raw ASGI application: routes, auth, faults, and ksqlDB's request handling.

Paths, status codes and bodies follow the wire reference (sections 1-10). Query results are
streamed by ``streaming``; ``/ksql`` entities come from ``describe``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from lakeexportd.sandbox import (
    admin,
    describe,
    errors,
    sql,
    statements,
    streaming,
    syntax,
    writers,
)
from lakeexportd.sandbox.catalog import Catalog
from lakeexportd.sandbox.errors import KsqlError
from lakeexportd.sandbox.faults import PUSH_KINDS, FaultSet
from lakeexportd.sandbox.feeder import Feeder
from lakeexportd.sandbox.output import BUFFERED_TABLE_PULL_BYTES, Emitter, Output
from lakeexportd.sandbox.query import plan as plan_query
from lakeexportd.sandbox.streaming import Stop

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Scope = dict[str, Any]

_log = logging.getLogger(__name__)
JSON_TYPE = (b"content-type", b"application/json")
SERVER_INFO = {"KsqlServerInfo": {"version": "0.29.0", "kafkaClusterId": "j3tOi6E_RtO_TMH3gBmK7A",
                                  "ksqlServiceId": "default_", "serverStatus": "RUNNING"}}
HEALTH = (b'{"isHealthy":true,"details":{"metastore":{"isHealthy":true},"kafka":{"isHealthy":true},'
          b'"commandRunner":{"isHealthy":true}},"serverState":"READY"}')
QUERY_PATHS = ("/query-stream", "/query")
MAX_PUSH_QUERIES = 100  # ksql.max.push.queries' default
PUSH_QUERIES_EXCEEDED = "Maximum number of push queries exceeded"  # Server.registerQuery
UNAUTHENTICATED = ("/healthcheck", "/chc/ready", "/chc/live")


class SandboxApp:
    """State shared by all requests: catalog, feeder, faults, running queries, credentials."""

    def __init__(self, catalog: Catalog, feeder: Feeder, faults: FaultSet, *, rate: float = 0.0,
                 credentials: tuple[str, str] | None = None, seed: int = 0,
                 max_push_queries: int = MAX_PUSH_QUERIES) -> None:
        self.catalog = catalog
        self.feeder = feeder
        self.faults = faults
        self.rate = rate
        self.credentials = credentials
        self.max_push_queries = max_push_queries
        # Running push queries and stream pulls by query id (ksqlDB's Server.queries).
        self.queries: dict[str, Stop] = {}
        self._rng = random.Random(seed ^ 0x5EED)
        self._feed_task: asyncio.Task[None] | None = None
        self._stopping = threading.Event()
        self.started = threading.Event()  # set once Hypercorn has run the lifespan startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._feed_task = asyncio.create_task(self.feeder.run(self.rate))
                threading.Thread(target=self.catalog.warm_lines, args=(self._stopping,),
                                 name="sandbox-warm-lines", daemon=True).start()
                await send({"type": "lifespan.startup.complete"})
                self.started.set()
            elif message["type"] == "lifespan.shutdown":
                self._stopping.set()
                self.end_queries("end")
                if self._feed_task is not None:
                    self._feed_task.cancel()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        if path.startswith("/_sandbox/"):
            await self._admin(method, path, body, send)
            return
        faults = self.faults.take(path, path in QUERY_PATHS)
        out = Output(send, faults.get("trickle"), http2=scope["http_version"] == "2")
        try:
            if "latency" in faults:
                await asyncio.sleep(faults["latency"].seconds)
            if self.credentials and path not in UNAUTHENTICATED and not self._authorized(headers):
                raise KsqlError(401, errors.generic(40100, "Unauthorized"))
            if "status" in faults:
                raise errors.status_error(faults["status"].status)
            await self._route(method, path, body, headers, out, faults, receive)
        except KsqlError as exc:
            if out.started:
                await out.abort()
                return
            extra = [JSON_TYPE] if path in ("/ksql", "/query") else []
            await _respond(out, exc.status, exc.body, extra + exc.headers)
        except Exception:
            _log.exception("sandbox.request_failed path=%s", path)
            if out.started:
                await out.abort()
                return
            await _respond(out, 500, errors.generic(50000, errors.INTERNAL_ERROR), [])

    def end_queries(self, how: str = "end") -> int:
        """End every running push query and stream pull, as a ksqlDB restart does: ``end``
        ends each body as a completed query's, ``drop`` closes the connections mid-body.
        Call on the event loop; returns how many queries were running."""
        if how not in ("end", "drop"):
            raise admin.AdminError('"how" must be "end" or "drop"')
        running = list(self.queries.values())
        self.queries.clear()
        for stop in running:
            stop.end(how)
        return len(running)

    def _authorized(self, headers: dict[str, str]) -> bool:
        assert self.credentials is not None
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, password) == self.credentials

    async def _route(self, method: str, path: str, body: bytes, headers: dict[str, str],
                     out: Output, faults: dict[str, Any], receive: Receive) -> None:
        route = (method, path)
        if route == ("GET", "/healthcheck"):
            await _respond(out, 200, HEALTH, [JSON_TYPE])
        elif route == ("GET", "/info"):
            await _respond(out, 200, describe.dumps(SERVER_INFO), [JSON_TYPE])
        elif route == ("GET", "/"):
            await _respond(out, 307, b"", [(b"location", b"/info")])
        elif route in (("GET", "/chc/ready"), ("GET", "/chc/live")):
            await _respond(out, 200, b"{}", [JSON_TYPE])
        elif route == ("POST", "/ksql"):
            await self._ksql(body, out)
        elif route == ("POST", "/close-query"):
            request = _json_body(body)
            query_id = request.get("queryId") if isinstance(request, dict) else None
            if not isinstance(request, dict) or "queryId" not in request:
                raise errors.bad_request("Invalid JSON in request: Missing required creator "
                                         "property 'queryId' (index 0)")
            # Unregistered at once (Server.removeQuery), before the body has ended.
            stop = self.queries.pop(str(query_id), None)
            if stop is None:
                raise errors.bad_request(f"No query with id {query_id}")
            stop.end("closed")
            await _respond(out, 200, b"", [])
        elif route in (("POST", "/query-stream"), ("POST", "/query")):
            await self._query(path, body, headers, out, faults, receive)
        else:
            await _respond(out, 404, b"Not Found", [(b"content-type", b"text/plain")])

    async def _query(self, path: str, body: bytes, headers: dict[str, str],
                     out: Output, faults: dict[str, Any], receive: Receive) -> None:
        legacy = path == "/query"
        request = _json_body(body)
        key = "ksql" if legacy else "sql"
        text = request.get(key) if isinstance(request, dict) else None
        if not isinstance(text, str):
            if legacy:
                raise errors.bad_request('"ksql" field must be populated')
            raise errors.bad_request(
                "Invalid JSON in request: Missing required creator property 'sql' (index 0)")
        if legacy and not text.strip():
            raise errors.bad_request('"ksql" field must be populated')
        props = request.get("streamsProperties" if legacy else "properties") or {}
        variables = request.get("sessionVariables") or {}
        if isinstance(variables, dict):
            for name, value in variables.items():
                text = text.replace("${" + str(name) + "}", str(value))
        statements = sql.split_statements(text)
        if len(statements) != 1:
            raise errors.bad_statement(
                f"Expected exactly one KSQL statement; found {len(statements)} instead", text)
        try:
            statement = sql.parse(statements[0])
        except sql.UnsupportedStatement as exc:
            raise errors.bad_statement("Neither a query nor a print statement", text) from exc
        except sql.SqlError as exc:
            raise errors.bad_statement(str(exc), text) from exc
        if not isinstance(statement, syntax.Select):
            raise errors.bad_statement("Neither a query nor a print statement", text)
        plan = plan_query(statement, text, self.catalog.sources, self._rng)
        writer = writers.choose(headers.get("accept"), plan.kind, legacy=legacy)
        if writer is None:
            await _respond(out, 406, b"Not Acceptable", [(b"content-type", b"text/plain")])
            return
        reset = props.get("auto.offset.reset", props.get("ksql.streams.auto.offset.reset"))
        stop = Stop()
        if plan.kind != "table_pull":
            if len(self.queries) >= self.max_push_queries:  # Server.registerQuery
                raise KsqlError(400, errors.generic(40003, PUSH_QUERIES_EXCEEDED))
            self.queries[plan.query_id] = stop
        if plan.kind == "push":
            faults = {**faults, **self.faults.take(path, True, PUSH_KINDS)}
        if legacy and plan.kind == "table_pull":
            out.buffer_up_to(BUFFERED_TABLE_PULL_BYTES)
        else:
            out.frame_per_write()  # the header line, then one chunk per row
        watcher = asyncio.create_task(_watch_disconnect(receive, stop))
        try:
            await out.start(200, [(b"content-type", writer.content_type.encode())])
            emitter = Emitter(plan, writer, out, faults)
            if plan.kind == "table_pull":
                await streaming.run_table_pull(plan, emitter, self.catalog)
            elif plan.kind == "stream_pull":
                await streaming.run_stream_pull(plan, emitter, self.catalog, stop)
            else:
                await streaming.run_push(plan, emitter, self.catalog, stop,
                                         earliest=str(reset).lower() == "earliest")
        finally:
            watcher.cancel()
            if self.queries.get(plan.query_id) is stop:
                del self.queries[plan.query_id]

    async def _ksql(self, body: bytes, out: Output) -> None:
        request = _json_body(body)
        text = request.get("ksql") if isinstance(request, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise errors.bad_request('"ksql" field must be populated')
        entities = statements.run(self.catalog, text)
        await _respond(out, 200, describe.dumps(entities), [JSON_TYPE])

    async def _admin(self, method: str, path: str, body: bytes, send: Send) -> None:
        out = Output(send)
        try:
            request = json.loads(body) if body.strip() else {}
            route = (method, path)
            if route == ("POST", "/_sandbox/faults"):
                result: Any = admin.add_faults(self.faults, request)
            elif route == ("DELETE", "/_sandbox/faults"):
                self.faults.clear()
                result = {"faults": []}
            elif route == ("GET", "/_sandbox/faults"):
                result = {"faults": self.faults.pending()}
            elif route == ("POST", "/_sandbox/generate"):
                result = admin.generate(self.feeder, request)
            elif route == ("GET", "/_sandbox/stats"):
                result = {"counts": self.catalog.counts(), "running_queries": len(self.queries),
                          "faults": self.faults.pending()}
            elif route == ("POST", "/_sandbox/schema"):
                result = admin.change_schema(self.catalog, request)
            elif route == ("POST", "/_sandbox/partitions"):
                result = admin.add_partition(self.catalog, request)
            elif route == ("POST", "/_sandbox/end_queries"):
                how = request.get("how", "end") if isinstance(request, dict) else None
                result = {"ended": self.end_queries(str(how))}
            else:
                await _respond(out, 404, b"Not Found", [(b"content-type", b"text/plain")])
                return
        except (ValueError, admin.AdminError) as exc:
            await _respond(out, 400, describe.dumps({"error": str(exc)}), [JSON_TYPE])
            return
        await _respond(out, 200, describe.dumps(result), [JSON_TYPE])


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body) if body.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.bad_request(f"Invalid JSON in request: {exc}") from exc


async def _respond(out: Output, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
    await out.start(status, [*headers, (b"content-length", str(len(body)).encode())])
    await out.write(body)
    await out.finish()


async def _watch_disconnect(receive: Receive, stop: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stop.set()
            return
