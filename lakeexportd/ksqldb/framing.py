"""Framing of ksqlDB query answers: response bytes in, header and Arrow tables out.

Pure (no I/O). Two formats, both fed chunk by chunk as they arrive so that memory stays bounded
by ``block_bytes``:

- ``DelimitedStream``: ``/query-stream``'s delimited format (reference section 2.3): a header
  object line, one JSON array per row, every line ending in ``\\n``; an error object line
  (``{"@type":"generic_error",...}``) ends the answer with a failure even under HTTP 200.
- ``StreamedRowStream``: the legacy ``/query`` format (section 3.3): one JSON array whose
  elements (``{"header":...}``, ``{"row":{"columns":[...]}}``, ``{"finalMessage":...}``,
  ``{"errorMessage":...}``) are separated by ``,\\n``; the answer is complete only at ``]``.

Either way the caller learns of an incomplete answer by an exception from ``feed`` or
``finish``, never by a short result.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from lakeexportd.errors import KsqlDBProtocolError, KsqlDBStreamError
from lakeexportd.ksqldb.decode import RowDecoder
from lakeexportd.ksqldb.types import KsqlType, parse_type

DEFAULT_BLOCK_BYTES = 4 << 20


@dataclass(frozen=True)
class QueryHeader:
    """The first line of a query answer."""

    query_id: str | None
    names: list[str]
    types: list[KsqlType]


def _error_text(obj: dict[str, Any]) -> tuple[int | None, str]:
    code = obj.get("error_code")
    return (code if isinstance(code, int) else None), str(obj.get("message", ""))


class _Blocks:
    """Accumulates chunks and hands out runs of complete lines of about ``block_bytes``."""

    def __init__(self, block_bytes: int) -> None:
        self.block_bytes = block_bytes
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, chunk: bytes) -> None:
        if chunk:
            self._parts.append(chunk)
            self._size += len(chunk)

    def take(self, force: bool = False) -> bytes:
        """Complete lines when ``block_bytes`` are buffered (or ``force``), else ``b""``."""
        if not self._parts or (self._size < self.block_bytes and not force):
            return b""
        last = self._parts[-1]
        cut = last.rfind(b"\n") + 1
        if cut and len(self._parts) > 1:
            # The common case: the block ends in the last chunk, so one join copies each byte
            # once (joining everything, then slicing off the tail, copied the block twice).
            block = b"".join([*self._parts[:-1], memoryview(last)[:cut]])
            rest = last[cut:]
        else:
            data = last if len(self._parts) == 1 else b"".join(self._parts)
            cut = data.rfind(b"\n") + 1
            block, rest = (data, b"") if cut == len(data) else (data[:cut], data[cut:])
        self._parts = [rest] if rest else []
        self._size = len(rest)
        return block

    @property
    def pending(self) -> bytes:
        return b"".join(self._parts)


class DelimitedStream:
    """Decodes a ``/query-stream`` delimited answer as its bytes arrive."""

    def __init__(self, *, block_bytes: int = DEFAULT_BLOCK_BYTES, what: str = "query") -> None:
        self.what = what
        self.header: QueryHeader | None = None
        self.decoder: RowDecoder | None = None
        self.rows = 0
        self._blocks = _Blocks(block_bytes)

    def feed(self, chunk: bytes) -> Iterator[pa.Table]:
        self._blocks.add(chunk)
        if self.header is None:
            self._read_header()
        if self.header is not None:
            yield from self._decode(self._blocks.take())

    def flush(self) -> Iterator[pa.Table]:
        """Every complete line received so far, decoded now rather than at ``block_bytes``
        (a push query whose rows trickle in: nothing more has arrived for the moment)."""
        if self.header is not None:
            yield from self._decode(self._blocks.take(force=True))

    def finish(self) -> Iterator[pa.Table]:
        """Decode what is left; raise if the answer did not end on a complete line."""
        if self.header is None:
            self._read_header()
        if self.header is None:
            pending = self._blocks.pending
            raise KsqlDBStreamError(
                f"{self.what}: the answer ended before its header line "
                f"({len(pending)} bytes received: {pending[:120]!r})"
            )
        yield from self._decode(self._blocks.take(force=True))
        pending = self._blocks.pending
        if pending:
            raise KsqlDBStreamError(
                f"{self.what}: the answer broke off in the middle of row {self.rows + 1} "
                f"({len(pending)} bytes after the last complete line); the rows received "
                f"are not used"
            )

    def _read_header(self) -> None:
        data = self._blocks.take(force=True)
        if not data:
            return
        line, _, rest = data.partition(b"\n")
        self._blocks = _prepend(self._blocks, rest)
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise KsqlDBProtocolError(
                f"{self.what}: the header line is not JSON ({exc}): {line[:120]!r}"
            ) from exc
        if isinstance(obj, dict) and "@type" in obj:
            code, message = _error_text(obj)
            raise KsqlDBStreamError(f"{self.what} failed: {message}", error_code=code)
        if not isinstance(obj, dict) or not isinstance(obj.get("columnNames"), list):
            raise KsqlDBProtocolError(
                f"{self.what}: the first line is not a query header: {line[:120]!r}"
            )
        names = [str(n) for n in obj["columnNames"]]
        types_text = obj.get("columnTypes")
        if not isinstance(types_text, list):
            raise KsqlDBProtocolError(f"{self.what}: the header has no columnTypes: {line[:200]!r}")
        types = [parse_type(str(t), column=n) for n, t in zip(names, types_text)]
        query_id = obj.get("queryId")
        self.header = QueryHeader(str(query_id) if query_id else None, names, types)
        self.decoder = RowDecoder(names, types)

    def _decode(self, block: bytes) -> Iterator[pa.Table]:
        """Decode row lines, stopping at any object line (error or token)."""
        assert self.decoder is not None
        while block:
            if block.startswith(b"{"):
                line, _, block = block.partition(b"\n")
                self._control_line(line)
                continue
            cut = block.find(b"\n{") if b"{" in block else -1
            rows, block = (block, b"") if cut < 0 else (block[: cut + 1], block[cut + 1 :])
            table = self.decoder.decode(rows, first_row=self.rows + 1)
            self.rows += table.num_rows
            if table.num_rows:
                yield table

    def _control_line(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise KsqlDBProtocolError(
                f"{self.what}: line after row {self.rows} is not JSON: {line[:120]!r}"
            ) from exc
        if isinstance(obj, dict) and ("continuationToken" in obj or "consistencyToken" in obj):
            return
        code, message = (
            _error_text(obj) if isinstance(obj, dict) else (None, line.decode("utf-8", "replace"))
        )
        raise KsqlDBStreamError(
            f"{self.what} failed after {self.rows} rows: ksqlDB sent error_code {code}: "
            f"{message}; the rows received are not used",
            error_code=code,
        )


def _prepend(blocks: _Blocks, data: bytes) -> _Blocks:
    fresh = _Blocks(blocks.block_bytes)
    fresh.add(data)
    fresh.add(blocks.pending)
    return fresh


# -- legacy /query ---------------------------------------------------------------------------

_SCHEMA_COLUMN = re.compile(r"\s*`((?:[^`]|``)*)`\s+(.*?)(\s+KEY)?\s*$", re.S)


def parse_schema_string(schema: str) -> tuple[list[str], list[KsqlType]]:
    """Parse ``/query``'s header schema: ```A` STRING KEY, `B` ARRAY<INTEGER>``."""
    parts, depth, start, quoted = [], 0, 0, False
    for i, ch in enumerate(schema):
        if ch == "`":
            quoted = not quoted
        elif not quoted and ch in "<(":
            depth += 1
        elif not quoted and ch in ">)":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(schema[start:i])
            start = i + 1
    parts.append(schema[start:])
    names: list[str] = []
    types: list[KsqlType] = []
    for part in parts:
        if not part.strip():
            continue
        m = _SCHEMA_COLUMN.match(part)
        if not m:
            raise KsqlDBProtocolError(f"cannot read column {part.strip()!r} of schema {schema!r}")
        name = m[1].replace("``", "`")
        names.append(name)
        types.append(parse_type(m[2], column=name))
    return names, types


class StreamedRowStream:
    """Decodes a legacy ``/query`` answer (a JSON array of StreamedRow elements)."""

    def __init__(self, *, block_bytes: int = DEFAULT_BLOCK_BYTES, what: str = "query") -> None:
        self.what = what
        self.header: QueryHeader | None = None
        self.decoder: RowDecoder | None = None
        self.rows = 0
        self.closed = False
        self._blocks = _Blocks(block_bytes)
        self._started = False

    def feed(self, chunk: bytes) -> Iterator[pa.Table]:
        self._blocks.add(chunk)
        yield from self._lines(self._blocks.take(force=self.header is None))

    def flush(self) -> Iterator[pa.Table]:
        """Every complete element received so far, decoded now (see ``DelimitedStream``)."""
        yield from self._lines(self._blocks.take(force=True))

    def finish(self) -> Iterator[pa.Table]:
        yield from self._lines(self._blocks.take(force=True))
        tail = self._blocks.pending.strip()
        if tail:
            try:
                yield from self._lines(tail + b"\n")
            except KsqlDBProtocolError as exc:  # the last element lacks its end: cut short
                raise KsqlDBStreamError(
                    f"{self.what}: the answer broke off in the middle of an element after "
                    f"{self.rows} rows ({len(tail)} bytes after the last complete one); the "
                    "rows received are not used"
                ) from exc
        if not self.closed:
            raise KsqlDBStreamError(
                f"{self.what}: the answer broke off after {self.rows} rows (no closing ']'); "
                f"the rows received are not used"
            )

    def _lines(self, data: bytes) -> Iterator[pa.Table]:
        rows: list[bytes] = []
        for raw in data.split(b"\n"):
            line = raw.strip()
            if not line:
                continue  # pre-0.24 servers write keep-alive newlines
            if self.closed:
                raise KsqlDBProtocolError(f"{self.what}: data after the closing ']': {line[:80]!r}")
            if not self._started:
                if not line.startswith(b"["):
                    raise KsqlDBProtocolError(f"{self.what}: answer does not start with '['")
                self._started, line = True, line[1:].lstrip()
            if line.endswith(b"]"):
                self.closed, line = True, line[:-1].rstrip()
            line = line.rstrip(b",").rstrip()
            if not line:
                continue
            if line.startswith(b'{"row":{"columns":') and line.endswith(b"]}}"):
                rows.append(line[len(b'{"row":{"columns":') : -2] + b"\n")
                continue
            if rows:
                yield from self._decode(b"".join(rows))
                rows = []
            self._element(line)
        if rows:
            yield from self._decode(b"".join(rows))

    def _decode(self, block: bytes) -> Iterator[pa.Table]:
        if self.decoder is None:
            raise KsqlDBProtocolError(f"{self.what}: a row arrived before the header")
        table = self.decoder.decode(block, first_row=self.rows + 1)
        self.rows += table.num_rows
        if table.num_rows:
            yield table

    def _element(self, line: bytes) -> None:
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise KsqlDBProtocolError(
                f"{self.what}: element after row {self.rows} is not JSON: {line[:120]!r}"
            ) from exc
        if not isinstance(obj, dict):
            raise KsqlDBProtocolError(f"{self.what}: unexpected element {line[:120]!r}")
        if "header" in obj:
            header = obj["header"]
            names, types = parse_schema_string(str(header.get("schema", "")))
            self.header = QueryHeader(header.get("queryId"), names, types)
            self.decoder = RowDecoder(names, types)
        elif "errorMessage" in obj:
            code, message = _error_text(obj["errorMessage"] or {})
            raise KsqlDBStreamError(
                f"{self.what} failed after {self.rows} rows: ksqlDB sent error_code {code}: "
                f"{message}; the rows received are not used",
                error_code=code,
            )
        elif "row" in obj:
            if not obj["row"].get("tombstone"):
                raise KsqlDBProtocolError(f"{self.what}: row element in an unexpected shape")
        elif not ({"finalMessage", "continuationToken", "consistencyToken"} & obj.keys()):
            raise KsqlDBProtocolError(f"{self.what}: unknown element {line[:120]!r}")
