"""The three response formats of a query (wire reference sections 2.3, 2.4, 3.3).

A writer turns the header, each row's JSON array text, an in-stream error and the end of the
query into bytes; the streaming loop decides when each is written.
"""

from __future__ import annotations

from lakeexportd.sandbox.formatting import json_string
from lakeexportd.sandbox.query import Plan

DELIMITED = "application/vnd.ksqlapi.delimited.v1"
JSON = "application/json"
V1_JSON = "application/vnd.ksql.v1+json"


def metadata(plan: Plan) -> bytes:
    names = ",".join(json_string(n) for n in plan.names)
    types = ",".join(json_string(t) for t in plan.column_types)
    return (f'{{"queryId":{json_string(plan.query_id)},"columnNames":[{names}],'
            f'"columnTypes":[{types}]}}').encode()


class Writer:
    """Delimited (the default): one JSON document per line, every line ends with LF."""

    content_type = DELIMITED

    def header(self, plan: Plan) -> bytes:
        return metadata(plan) + b"\n"

    def row(self, line: bytes) -> bytes:
        return line + b"\n"

    def raw(self, text: bytes) -> bytes:
        return text + b"\n"

    def error(self, body: bytes) -> bytes:
        return body + b"\n"

    def end(self, reason: str) -> bytes:
        return b""


class JsonWriter(Writer):
    """``application/json``: one array, no newlines, errors appended as a last element."""

    content_type = JSON

    def header(self, plan: Plan) -> bytes:
        return b"[" + metadata(plan)

    def row(self, line: bytes) -> bytes:
        return b"," + line

    def raw(self, text: bytes) -> bytes:
        return b"," + text

    def error(self, body: bytes) -> bytes:
        return b"," + body + b"]"

    def end(self, reason: str) -> bytes:
        return b"]"


class StreamedRowWriter(Writer):
    """``application/vnd.ksql.v1+json``, the ``/query`` format: StreamedRow elements, ``,\\n``.

    Unbuffered answers (push and stream pull) write ``,\\n`` after each element, in the same
    write (``JsonStreamedRowResponseWriter#writeBuffer``): the header chunk is
    ``[{"header":...},\\n`` and each row chunk ``{"row":...},\\n``, so a row is a complete
    line as soon as it arrives; the final message closes the array without one. Table pulls
    are buffered, so where the separator goes does not show: it is written before each row.
    """

    content_type = V1_JSON

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._after = kind != "table_pull"

    def header(self, plan: Plan) -> bytes:
        header = (f'[{{"header":{{"queryId":{json_string(plan.query_id)},'
                  f'"schema":{json_string(plan.header_schema())}}}}}').encode()
        return header + b",\n" if self._after else header

    def row(self, line: bytes) -> bytes:
        return self._element(b'{"row":{"columns":' + line + b"}}")

    def raw(self, text: bytes) -> bytes:
        return self._element(text)

    def _element(self, element: bytes) -> bytes:
        return element + b",\n" if self._after else b",\n" + element

    def error(self, body: bytes) -> bytes:
        # ksqlDB writes ",\n" after every unbuffered element, the error included.
        if self._after:
            return b'{"errorMessage":' + body + b"},\n]"
        return b',\n{"errorMessage":' + body + b"}]"

    def end(self, reason: str) -> bytes:
        if self.kind == "table_pull":
            return b"]"
        final = "Limit Reached" if reason == "limit" else "Query Completed"
        return b'{"finalMessage":"' + final.encode() + b'"}]'


def choose(accept: str | None, kind: str, *, legacy: bool) -> Writer | None:
    """The writer for an Accept header, or None for 406 (section 2.2, and 3.2 for /query)."""
    for media in _accepted(accept):
        if media in ("*/*", DELIMITED):
            return Writer()
        if media == V1_JSON or (legacy and media == JSON):
            return StreamedRowWriter(kind)
        if media == JSON:
            return JsonWriter()
    if not accept:
        return StreamedRowWriter(kind) if legacy else Writer()
    return None


def _accepted(accept: str | None) -> list[str]:
    ranked = []
    for position, part in enumerate((accept or "").split(",")):
        media, *params = (p.strip() for p in part.split(";"))
        quality = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    quality = float(param[2:])
                except ValueError:
                    quality = 0.0
        if media and quality > 0:
            ranked.append((-quality, position, media.lower()))
    return [media for _, _, media in sorted(ranked)]
