"""Block-wise decoding of ksqlDB's delimited rows into Arrow: the export's hot path.

Pure: bytes in, Arrow tables out. A ksqlDB row line is a JSON array (``[1,"a",12.50]``). Three
paths, each decoding whole blocks of complete lines, and one exact path that goes row by row:

- **CSV** (flat schemas): each line's opening ``[`` and closing ``]`` (found next to the line
  breaks, which JSON strings cannot hold raw) become commas, so every line is a CSV record with
  one empty field at each end, and Arrow's multi-threaded CSV reader parses it with the exact
  column types, skipping the two empty fields. The brackets are found and overwritten with
  numpy at memory speed: a ``bytes.replace`` of ``]\\n[`` cost as much as the CSV parse itself
  (about 150 MB/s, one search per row).
- **typed JSON** (``json_block``: msgspec decodes the block against the column types in C, Arrow
  builds the columns): every block of a schema with ARRAY, MAP or STRUCT columns; in flat
  schemas, lines holding a backslash (a JSON escape such as ``\\n`` or ``\\u0001``, which CSV
  would misread), blocks the CSV reader rejects or whose shape does not check out (row count,
  brackets, or the number of ``"`` characters, which must equal two per non-null quoted value:
  this catches a bare token in a string column or a quoted number in a numeric one).
- **exact** (``json.loads`` with ``Decimal`` numbers and a per-type converter from
  ``ksql_values``): a block the typed decoder refuses. It accepts every form the reference
  allows at any depth, and raises naming the row and column of anything else.

Errors: ``KsqlDBProtocolError`` for anything that is not ksqlDB's format; ``RejectedValueError``
for a well-formed value the column's type cannot hold exactly (a DECIMAL that would need
rounding or more digits): no path rounds. One malformed shape gets past the CSV path: within
one block, a bare word in a string column exactly balanced by a quoted value in a numeric
column (the quote count still matches). That takes two opposite server bugs at once; each
alone is caught.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from lakeexportd.errors import KsqlDBProtocolError, RejectedValueError
from lakeexportd.ksqldb.json_block import JsonBlockDecoder, Unsupported, finish
from lakeexportd.ksqldb.types import KsqlType, arrow_schema
from lakeexportd.ksqldb.values import RejectedValue, value_converter

# Types the CSV reader parses directly; the value is the type it is asked to produce.
_CSV_TYPE = {
    "BOOLEAN": pa.bool_(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "STRING": pa.string(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("ms"),  # ksqlDB writes no zone suffix; relabelled as UTC below
    "TIME": pa.string(),  # HH:mm or HH:mm:ss: converted after parsing
    "BYTES": pa.string(),  # base64: converted after parsing
}
_QUOTED = {"STRING", "DATE", "TIMESTAMP", "TIME", "BYTES"}  # written as JSON strings
_NL, _COMMA, _QUOTE, _OPEN, _CLOSE = (ord(c) for c in '\n,"[]')
# Arrow parses a block in pieces of this size on its thread pool: a 4 MiB block gets both cores
# when the Parquet writer thread leaves one free.
_CSV_BLOCK_BYTES = 1 << 20

class RowDecoder:
    """Decodes blocks of complete row lines for one query header."""

    def __init__(self, names: list[str], types: list[KsqlType]) -> None:
        if len(names) != len(types):
            raise KsqlDBProtocolError(
                f"query header has {len(names)} columnNames but {len(types)} columnTypes"
            )
        self.names = names
        self.types = types
        self.schema = arrow_schema(names, types)
        self._converters = [value_converter(t) for t in types]
        self.flat = not any(t.is_nested for t in types)
        # A stream query's ROWTIME names the row in a RejectedValueError.
        self._rowtime = next(
            (i for i, (n, t) in enumerate(zip(names, types))
             if n == "ROWTIME" and t.base == "BIGINT"),
            None,
        )
        self._csv = self.flat
        try:
            self._json: JsonBlockDecoder | None = JsonBlockDecoder(types)
        except Unsupported:
            self._json = None  # e.g. MAP<DOUBLE, ...>: the exact path takes every block
        self._csv_names = [f"c{i}" for i in range(len(names))]
        if self._csv:
            csv_types = {}
            for i, t in enumerate(types):
                csv_types[self._csv_names[i]] = _CSV_TYPE.get(t.base) or (
                    # Arrow's CSV reader produces no decimal256: read the text, cast below.
                    pa.string() if pa.types.is_decimal256(t.arrow) else t.arrow
                )
            self._read_options = pacsv.ReadOptions(
                column_names=["_open", *self._csv_names, "_close"], block_size=_CSV_BLOCK_BYTES
            )
            self._parse_options = pacsv.ParseOptions(
                quote_char='"',
                double_quote=False,
                escape_char=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
            )
            self._convert_options = pacsv.ConvertOptions(
                column_types=csv_types,
                include_columns=self._csv_names,
                null_values=["null"],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
                true_values=["true"],
                false_values=["false"],
            )
        self.fast_rows = 0  # rows decoded by the CSV path
        self.json_rows = 0  # by the typed JSON path
        self.exact_rows = 0  # row by row

    def decode(self, block: bytes, first_row: int = 1) -> pa.Table:
        """Decode ``block`` (complete lines, each ``[...]\\n``); ``first_row`` numbers errors."""
        if not block:
            return self.schema.empty_table()
        if not self._csv:
            return self._decode_json(block, first_row)
        if b"\\" in block:
            return self._decode_mixed(block, first_row)
        table = self._decode_fast(block)
        if table is None:
            return self._decode_json(block, first_row)
        return table

    def _decode_mixed(self, block: bytes, first_row: int) -> pa.Table:
        lines = block.split(b"\n")[:-1]
        dirty = [i for i, line in enumerate(lines) if b"\\" in line]
        if len(dirty) * 4 > len(lines):
            return self._decode_json(block, first_row)
        dirty_set = set(dirty)
        clean = [line for i, line in enumerate(lines) if i not in dirty_set]
        fast = self._decode_fast(b"\n".join(clean) + b"\n") if clean else self.schema.empty_table()
        if fast is None:
            return self._decode_json(block, first_row)
        escaped = self._json_lines([lines[i] for i in dirty], [first_row + i for i in dirty])
        clean_pos = [i for i in range(len(lines)) if i not in dirty_set]
        order = pc.sort_indices(pa.array(clean_pos + dirty, pa.int64()))
        return pa.concat_tables([fast, escaped]).take(order)

    def _decode_json(self, block: bytes, first_row: int) -> pa.Table:
        """The typed JSON path for a whole block; the exact path if it refuses the block."""
        table = self._typed(block, block.count(b"\n"))
        if table is not None:
            return table
        lines = block.split(b"\n")[:-1]
        return self._exact_lines(lines, list(range(first_row, first_row + len(lines))))

    def _json_lines(self, lines: list[bytes], numbers: list[int]) -> pa.Table:
        table = self._typed(b"\n".join(lines) + b"\n", len(lines))
        return table if table is not None else self._exact_lines(lines, numbers)

    def _typed(self, block: bytes, rows: int) -> pa.Table | None:
        if self._json is None:
            return None
        arrays = self._json.decode(block)
        if arrays is None or (arrays and len(arrays[0]) != rows):
            return None
        self.json_rows += rows
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _decode_fast(self, block: bytes) -> pa.Table | None:
        """Decode a block without backslashes with Arrow's CSV reader; ``None`` if it cannot."""
        raw = np.frombuffer(block, np.uint8)
        ends = np.flatnonzero(raw == _NL)
        if not len(ends) or ends[-1] != len(raw) - 1:
            return None
        starts = ends[:-1] + 1
        # Every line must be one bracketed array: "[" first, "]" last (an empty line fails too).
        if raw[0] != _OPEN or not (raw[ends - 1] == _CLOSE).all() or not (
            raw[starts] == _OPEN
        ).all():
            return None
        text = bytearray(block)
        edit = np.frombuffer(text, np.uint8)
        edit[0] = _COMMA
        edit[ends - 1] = _COMMA
        edit[starts] = _COMMA
        try:
            parsed = pacsv.read_csv(
                pa.BufferReader(pa.py_buffer(text)),
                read_options=self._read_options,
                parse_options=self._parse_options,
                convert_options=self._convert_options,
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        # Empty lines fail the parse (ignore_empty_lines=False) and values hold no raw newline,
        # so one record per line; the column count is checked by the reader.
        if parsed.num_rows != len(ends):
            return None
        rows = parsed.num_rows
        if int(np.count_nonzero(raw == _QUOTE)) != self._expected_quotes(parsed):
            return None
        columns = []
        try:
            for i, t in enumerate(self.types):
                columns.append(self._finish_column(parsed.column(i), t, i))
        except ValueError:
            return None
        self.fast_rows += rows
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _expected_quotes(self, parsed: pa.Table) -> int:
        quotes = 0
        for i, t in enumerate(self.types):
            column = parsed.column(i)
            if t.base in _QUOTED:
                quotes += 2 * (len(column) - column.null_count)
            elif t.base == "DOUBLE":
                special = pc.or_(pc.is_nan(column), pc.is_inf(column))
                quotes += 2 * int(pc.sum(special.cast(pa.int64())).as_py() or 0)
        return quotes

    def _finish_column(self, column: pa.ChunkedArray, t: KsqlType, i: int) -> pa.ChunkedArray:
        if t.base == "DECIMAL" and pa.types.is_decimal256(t.arrow):
            try:  # exact: refuses rounding and overflow (see json_block.finish)
                return pa.chunked_array([finish(c, t.arrow) for c in column.chunks], t.arrow)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise ValueError(str(exc)) from exc
        if t.base == "DECIMAL":
            # The CSV reader checks the scale (it refuses to round) but not the precision.
            try:
                column.validate(full=True)
            except pa.ArrowInvalid as exc:
                raise ValueError(str(exc)) from exc
            return column
        if t.base == "TIMESTAMP":
            return column.cast(t.arrow)  # naive values are UTC: a relabel, not a shift
        if t.base in ("TIME", "BYTES"):
            convert = self._converters[i]
            return pa.chunked_array(
                [
                    pa.array([convert(v) for v in chunk.to_pylist()], t.arrow)
                    for chunk in column.chunks
                ],
                t.arrow,
            )
        return column

    def decode_exact(self, lines: list[bytes], first_row: int) -> pa.Table:
        """Decode lines one by one with exact JSON semantics; errors name row and column."""
        return self._exact_lines(lines, list(range(first_row, first_row + len(lines))))

    def _exact_lines(self, lines: list[bytes], numbers: list[int]) -> pa.Table:
        width = len(self.types)
        columns: list[list[Any]] = [[] for _ in range(width)]
        for line, number in zip(lines, numbers):
            row = _parse_row(line, number)
            if len(row) != width:
                raise KsqlDBProtocolError(
                    f"row {number} has {len(row)} values but the header declares {width} "
                    f"columns ({', '.join(self.names)}): {_excerpt(line)}"
                )
            for i, value in enumerate(row):
                columns[i].append(self._convert(i, value, number, row))
        arrays = [pa.array(values, type=f.type) for values, f in zip(columns, self.schema)]
        self.exact_rows += len(lines)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _convert(self, i: int, value: Any, number: int, row: list[Any]) -> Any:
        try:
            return self._converters[i](value)
        except RejectedValue as exc:
            rowtime = row[self._rowtime] if self._rowtime is not None else None
            raise RejectedValueError(
                column=self.names[i], ksql_type=str(self.types[i]), value=str(exc.value)[:200],
                reason=str(exc), row=number, rowtime=rowtime if type(rowtime) is int else None,
            ) from exc
        except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
            raise KsqlDBProtocolError(
                f"row {number}, column {self.names[i]} ({self.types[i]}): {exc}"
            ) from exc


def _parse_row(line: bytes, number: int) -> list[Any]:
    try:
        row = json.loads(line, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KsqlDBProtocolError(
            f"row {number} is not valid JSON ({exc}): {_excerpt(line)}"
        ) from exc
    if not isinstance(row, list):
        raise KsqlDBProtocolError(f"row {number} is not a JSON array: {_excerpt(line)}")
    return row


def _excerpt(line: bytes, limit: int = 120) -> str:
    text = line[:limit].decode("utf-8", "replace")
    return text + ("..." if len(line) > limit else "")
