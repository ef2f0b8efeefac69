"""Values to JSON text exactly as ksqlDB's Jackson mapper writes them (wire reference section 4).

Python forms of values, shared with the catalog and the harness's ground truth: BOOLEAN ``bool``,
INTEGER/BIGINT ``int``, DOUBLE ``float``, DECIMAL ``Decimal``, STRING ``str``, BYTES ``bytes``,
TIMESTAMP epoch millis ``int``, DATE epoch days ``int``, TIME millis of the day ``int``, ARRAY
``list``, MAP ``dict``, STRUCT ``dict`` keyed by field name, NULL ``None``.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import math
import re
from collections.abc import Callable, Sequence
from decimal import Context, Decimal
from typing import Any

from lakeexportd.sandbox.sqltypes import SqlType

Formatter = Callable[[Any], str]

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_LOWER_HEX_ESCAPE = re.compile(r"\\u00([0-9a-f]{2})")
_UNBOUNDED = Context(prec=1000)


def java_double(value: float) -> str:
    """``Double.toString`` (JDK 19+, shortest repr): ``234.0``, ``1.0E7``, ``1.0E-4``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e7:
        # Python's repr is plain notation with a ".0" in exactly this range, like Java's.
        return repr(value)
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0") or "0"
    point_exponent = len(digits) - 1 + exponent
    mantissa = text[0] + "." + (text[1:] or "0")
    return f"{'-' if sign else ''}{mantissa}E{point_exponent}"


def json_string(text: str) -> str:
    """A JSON string as Jackson writes it: non-ASCII kept, control characters ``\\u00XX``."""
    if not _NEEDS_ESCAPE.search(text):
        return '"' + text + '"'
    escaped = json.dumps(text, ensure_ascii=False)
    return _LOWER_HEX_ESCAPE.sub(lambda m: "\\u00" + m[1].upper(), escaped)


def double_json(value: float) -> str:
    """DOUBLE as a JSON value: NaN and the infinities are quoted (Jackson's default)."""
    text = java_double(value)
    return '"' + text + '"' if text[-1] in "Ny" else text


def decimal_plain(value: Decimal, scale: int | None = None) -> str:
    """Top-level DECIMAL: plain notation, the scale kept (``BigDecimal.toPlainString``)."""
    if scale is not None and value.as_tuple().exponent != -scale:
        # The default context holds 28 digits; BigDecimal holds any (DECIMAL(38, s) and wider).
        value = value.quantize(Decimal(1).scaleb(-scale), context=_UNBOUNDED)
    return f"{value:f}"


def timestamp_text(millis: int) -> str:
    """``yyyy-MM-dd'T'HH:mm:ss.SSS`` in UTC, no zone suffix."""
    moment = _EPOCH + dt.timedelta(milliseconds=millis)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def date_text(days: int) -> str:
    return (_EPOCH_DATE + dt.timedelta(days=days)).isoformat()


def time_text(millis_of_day: int) -> str:
    """``LocalTime.ofSecondOfDay(ms / 1000).toString()``: millis dropped, ``HH:mm`` at :00."""
    seconds = millis_of_day // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if secs == 0:
        return f"{hours:02d}:{minutes:02d}"
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _nullable(inner: Formatter) -> Formatter:
    def fmt(value: Any) -> str:
        return "null" if value is None else inner(value)

    return fmt


def value_formatter(t: SqlType, *, nested: bool = False) -> Formatter:
    """The formatter of one column type; ``nested`` is True inside a STRUCT (Connect's rules)."""
    return _nullable(_formatter(t, nested))


def _formatter(t: SqlType, nested: bool) -> Formatter:
    base = t.base
    if base == "BOOLEAN":
        return lambda v: "true" if v else "false"
    if base in ("INTEGER", "BIGINT"):
        return str
    if base == "DOUBLE":
        return double_json
    if base == "STRING":
        return json_string
    if base == "BYTES":
        return lambda v: '"' + base64.b64encode(v).decode("ascii") + '"'
    if base == "DECIMAL":
        if nested:
            # Connect writes the BigDecimal, a plain ObjectMapper re-reads it as a double.
            return lambda v: double_json(float(v))
        scale = t.scale
        return lambda v: decimal_plain(v, scale)
    if base in ("TIMESTAMP", "DATE", "TIME"):
        if nested:
            return str
        text = {"TIMESTAMP": timestamp_text, "DATE": date_text, "TIME": time_text}[base]
        return lambda v: '"' + text(v) + '"'
    if base == "ARRAY":
        assert t.member is not None
        element = value_formatter(t.member, nested=nested)
        return lambda v: "[" + ",".join(element(e) for e in v) + "]"
    if base == "MAP":
        assert t.member is not None
        member = value_formatter(t.member, nested=nested)
        return lambda v: "{" + ",".join(
            json_string(str(k)) + ":" + member(x) for k, x in v.items()
        ) + "}"
    fields = [(json_string(name) + ":", value_formatter(ft, nested=True)) for name, ft in t.fields]

    def struct(v: dict[str, Any]) -> str:
        return "{" + ",".join(key + fmt(v.get(name)) for (key, fmt), (name, _) in
                              zip(fields, t.fields)) + "}"

    return struct


def row_formatter(types: Sequence[SqlType]) -> Callable[[Sequence[Any]], str]:
    """The JSON array text of a row of these column types (compact, as on the wire)."""
    formatters = [value_formatter(t) for t in types]

    def fmt(values: Sequence[Any]) -> str:
        return "[" + ",".join(f(v) for f, v in zip(formatters, values)) + "]"

    return fmt
