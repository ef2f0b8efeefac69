"""ksqlDB error bodies (wire reference sections 1.3, 1.4, 7, 10), as exact bytes."""

from __future__ import annotations

from lakeexportd.sandbox.formatting import json_string

PULL_SUFFIX = (
    " See https://cnfl.io/queries for more info.\n"
    "Add EMIT CHANGES if you intended to issue a push query."
)
INTERNAL_ERROR = (
    "The server encountered an internal error when processing the query. "
    "Please consult the server logs for more information."
)
PROCESSING_FAILURE = "java.lang.RuntimeException: Failure in processing"
RATE_LIMITED = "Host is at rate limit for pull queries. Currently set to 1.0 qps."
QUERY_ENDPOINT = (
    "The following statement types should be issued to the websocket endpoint '/query':\n"
    "\t* PRINT\n\t* SELECT"
)


def generic(code: int, message: str) -> bytes:
    return (
        f'{{"@type":"generic_error","error_code":{code},"message":{json_string(message)}}}'
    ).encode()


def statement(code: int, message: str, statement_text: str) -> bytes:
    return (
        f'{{"@type":"statement_error","error_code":{code},"message":{json_string(message)},'
        f'"statementText":{json_string(statement_text)},"entities":[]}}'
    ).encode()


class KsqlError(Exception):
    """An error ksqlDB answers before the first byte of a response: HTTP status plus body."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(body.decode())
        self.status = status
        self.body = body
        self.headers = headers or []


def bad_request(message: str) -> KsqlError:
    return KsqlError(400, generic(40000, message))


def bad_statement(message: str, statement_text: str) -> KsqlError:
    return KsqlError(400, statement(40001, message, statement_text))


def status_error(status: int) -> KsqlError:
    """The bodies of the statuses the fault injector can force (429, 503, 500, others)."""
    if status == 429:
        return KsqlError(429, generic(42900, RATE_LIMITED))
    if status == 503:
        return KsqlError(503, generic(50302, "Server initializing"), [(b"retry-after", b"10")])
    if status == 500:
        return KsqlError(500, generic(50000, INTERNAL_ERROR))
    return KsqlError(status, generic(status * 100, f"Injected HTTP {status}"))
