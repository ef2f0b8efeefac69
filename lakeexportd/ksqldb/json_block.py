"""Typed decoding of whole blocks of ksqlDB row lines with msgspec: nested rows without a
Python step per value.

Pure: bytes in, Arrow arrays out. From the columns' ``KsqlType`` it builds one msgspec type per
row (a tuple of per-column types, ``X | None`` everywhere) and decodes a block of complete lines
in one C call (``decode_lines``); the rows are transposed with ``zip`` and each column built by
``pyarrow.array`` with its Arrow type. Forms follow the wire reference (section 4):

- at top level (and in ARRAY/MAP outside any STRUCT) TIMESTAMP and DATE are ISO text, decoded
  to ``datetime``/``date`` by msgspec (naive timestamps are UTC; Arrow reads them as such);
  inside a STRUCT they are numbers (epoch millis, epoch days), taken as ints;
- TIME is ``HH:mm[:ss]`` text at top level (converted in Python, once per distinct text) and
  millis of the day inside a STRUCT; both are built as ``time32[ms]`` and cast to the column's
  Arrow unit;
- DECIMAL numbers keep their text (``float_hook=str``), which Arrow casts to the decimal type
  exactly (``1.0E7`` included), refusing a value that would need rounding or more digits than
  the type, so nothing is rounded on the way;
- DOUBLE takes numbers and the quoted ``NaN``/``Infinity``/``-Infinity``, replaced by floats
  only in a column that holds one;
- BYTES are base64 (msgspec checks the alphabet and padding); MAP keys are text (STRING,
  INTEGER and BIGINT keys only: other key types are not supported here); STRUCT field names
  must be ASCII (msgspec 0.23 loses other keys of a TypedDict).

``decode`` returns ``None`` whenever the block is not exactly what it expects (bad JSON, a value
of another form or out of range, a row of the wrong length, a value Arrow refuses): the caller
then takes the per-row exact path, which names the row and column or accepts the rarer forms
(an unknown STRUCT field is ignored here; a DECIMAL written as a JSON string is accepted here).
"""

from __future__ import annotations

import datetime as dt
import gc
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, Literal, TypedDict

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

from lakeexportd.ksqldb.types import MAX_DECIMAL_PRECISION, KsqlType
from lakeexportd.ksqldb.values import parse_time_ms

_INT32 = Annotated[int, msgspec.Meta(ge=-(2**31), le=2**31 - 1)]
_INT64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_MS_OF_DAY = Annotated[int, msgspec.Meta(ge=0, lt=86_400_000)]
_SPECIAL = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_DOUBLE = float | Literal["NaN", "Infinity", "-Infinity"]
_PRIMITIVE: dict[str, Any] = {
    "BOOLEAN": bool,
    "INTEGER": _INT32,
    "BIGINT": _INT64,
    "DOUBLE": _DOUBLE,
    "DECIMAL": Any,  # the number's text, from float_hook (see JsonBlockDecoder)
    "STRING": str,
    "BYTES": bytes,
}
_TOP_FORM: dict[str, Any] = {"TIMESTAMP": dt.datetime, "DATE": dt.date, "TIME": str}
_STRUCT_FORM: dict[str, Any] = {"TIMESTAMP": _INT64, "DATE": _INT32, "TIME": _MS_OF_DAY}
_MAP_KEYS: dict[str, Any] = {"STRING": str, "INTEGER": _INT32, "BIGINT": _INT64}

Fix = Callable[[Any], Any]


class Unsupported(Exception):
    """A type this decoder does not handle natively (the exact path takes the schema)."""


_struct_names = itertools.count()
# Types are built at run time from the header, so they are values here (Any), not annotations.
_LIST: Any = list
_DICT: Any = dict
_TUPLE: Any = tuple
_TYPED_DICT: Any = TypedDict


def wire_type(t: KsqlType, *, nested: bool = False) -> Any:
    """The msgspec type of one value as ksqlDB writes it; ``nested``: inside a STRUCT."""
    base = t.base
    inner: Any
    if base in _PRIMITIVE:
        inner = _PRIMITIVE[base]
    elif base in _TOP_FORM:
        inner = (_STRUCT_FORM if nested else _TOP_FORM)[base]
    elif base == "ARRAY":
        assert t.element is not None
        inner = _LIST[wire_type(t.element, nested=nested)]
    elif base == "MAP":
        assert t.key is not None and t.element is not None
        if t.key.base not in _MAP_KEYS:
            raise Unsupported(f"MAP keys of type {t.key}")
        inner = _DICT[_MAP_KEYS[t.key.base], wire_type(t.element, nested=nested)]
    else:
        if not all(name.isascii() for name, _ in t.fields):
            # msgspec 0.23 drops TypedDict keys that are not ASCII (``É`` decodes to nothing).
            raise Unsupported("STRUCT field names that are not ASCII")
        fields = {name: wire_type(ft, nested=True) for name, ft in t.fields}
        # Field names are data (any text ksqlDB allows), so the functional form is the only one.
        inner = _TYPED_DICT(f"Struct{next(_struct_names)}", fields, total=False)
    return inner | None


def build_type(t: KsqlType) -> pa.DataType:
    """The Arrow type values are built with: the column's own, but DECIMAL as the number's text
    and TIME as ``time32[ms]``; one cast at the end makes them the column's type, at any depth
    (Arrow's text-to-decimal cast is exact: it refuses to round or overflow)."""
    base = t.base
    if base == "DECIMAL":
        return pa.string()
    if base == "TIME":
        return pa.time32("ms")
    if base == "ARRAY":
        assert t.element is not None
        return pa.list_(build_type(t.element))
    if base == "MAP":
        assert t.key is not None and t.element is not None
        return pa.map_(build_type(t.key), build_type(t.element))
    if base == "STRUCT":
        return pa.struct([pa.field(n, build_type(ft)) for n, ft in t.fields])
    return t.arrow


def _walker(t: KsqlType, leaf: Callable[[KsqlType, bool], Fix | None], nested: bool) -> Fix | None:
    """A function applying ``leaf``'s fixes inside one value; None if nothing needs one."""
    if t.base == "ARRAY":
        assert t.element is not None
        element = _walker(t.element, leaf, nested)
        if element is None:
            return None
        return lambda v: None if v is None else [element(e) for e in v]
    if t.base == "MAP":
        assert t.element is not None
        member = _walker(t.element, leaf, nested)
        if member is None:
            return None
        return lambda v: None if v is None else {k: member(x) for k, x in v.items()}
    if t.base == "STRUCT":
        fixes = [(n, f) for n, ft in t.fields if (f := _walker(ft, leaf, True)) is not None]
        if not fixes:
            return None

        def struct(v: Any) -> Any:
            if v is None:
                return None
            v = dict(v)
            for name, fix in fixes:
                if name in v:
                    v[name] = fix(v[name])
            return v

        return struct
    fix = leaf(t, nested)
    return None if fix is None else (lambda v: None if v is None else fix(v))


def _time_text(t: KsqlType, nested: bool) -> Fix | None:
    """TIME text outside a STRUCT (``HH:mm[:ss[.SSS]]``) to millis of the day."""
    if t.base != "TIME" or nested:
        return None
    cache: dict[str, int] = {}

    def fix(v: str) -> int:
        ms = cache.get(v)
        if ms is None:
            ms = cache[v] = parse_time_ms(v)
        return ms

    return fix


def _rare_forms(t: KsqlType, nested: bool) -> Fix | None:
    """Forms the first build refuses: quoted NaN/Infinity for DOUBLE, an integer for DECIMAL."""
    if t.base == "DOUBLE":
        return lambda v: _SPECIAL[v] if type(v) is str else v
    if t.base == "DECIMAL":
        return lambda v: str(v) if type(v) is int else v
    return None


def finish(array: pa.Array, target: pa.DataType) -> pa.Array:
    """Cast what ``build_type`` built to the column's type.

    Arrow casts a STRUCT field by field, values under a null STRUCT included, and those hold
    an empty text where the field is a DECIMAL: the nulls are pushed down into the fields
    first (``flatten``), so only real values are cast.
    """
    if array.type == target:
        return array
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(target):
        assert isinstance(array, pa.StructArray)
        fields = [target.field(k) for k in range(target.num_fields)]
        children = [finish(c, f.type) for c, f in zip(array.flatten(), fields)]
        return pa.StructArray.from_arrays(children, fields=fields, mask=mask)
    if pa.types.is_map(target):
        assert isinstance(array, pa.MapArray)
        return pa.MapArray.from_arrays(
            array.offsets, finish(array.keys, target.key_type),
            finish(array.items, target.item_type), type=target, mask=mask,
        )
    if pa.types.is_list(target):
        assert isinstance(array, pa.ListArray)
        return pa.ListArray.from_arrays(
            array.offsets, finish(array.values, target.value_type), type=target, mask=mask
        )
    if pa.types.is_decimal(target):
        # Arrow's text-to-decimal128 parse wraps around, silently, for 39-digit values of
        # 2**127 and more (9999...9 becomes -2084...): parse into decimal256, which refuses
        # what does not fit, then narrow, which checks the precision.
        wide = array.cast(pa.decimal256(MAX_DECIMAL_PRECISION, target.scale))
        return wide.cast(target)
    return array.cast(target)


_TIME_TEXT = r"^(?:[01]\d|2[0-3]):[0-5]\d(?::[0-5]\d)?$"


def times_of_day(texts: pa.Array) -> pa.Array | None:
    """``HH:mm`` / ``HH:mm:ss`` text (ksqlDB's top-level TIME) to ``time32[ms]``, in Arrow;
    None if a value has another form, for the caller to convert one by one."""
    if not pc.all(pc.match_substring_regex(texts, _TIME_TEXT)).as_py():
        return None
    full = pc.utf8_rpad(texts, 8, "0")  # HH:mm -> HH:mm000: seconds 00

    def part(start: int, ms: int) -> pa.Array:
        return pc.multiply(pc.cast(pc.utf8_slice_codeunits(full, start, start + 2), pa.int32()), ms)

    millis = pc.add(pc.add(part(0, 3_600_000), part(3, 60_000)), part(6, 1000))
    return millis.cast(pa.int32()).cast(pa.time32("ms"))


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = False


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a block's objects are built.

    Decoding a block creates some 50 containers a row, all alive until the block is done, and
    each 700 allocations start a collection that walks them all again: with collection on, the
    typed JSON path ran 3x slower. Nothing decoded holds a cycle. Pauses from several threads
    nest; the collector runs again (if it ran before) when the last one ends.
    """
    global _gc_pauses, _gc_was_enabled
    with _gc_lock:
        if _gc_pauses == 0:
            _gc_was_enabled = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled:
                gc.enable()


class JsonBlockDecoder:
    """Decodes blocks of complete row lines for one list of column types."""

    def __init__(self, types: Sequence[KsqlType]) -> None:
        row = _TUPLE[tuple(wire_type(t) for t in types)]
        # DECIMAL is typed Any, so its numbers are the only untyped floats: float_hook keeps
        # their text, and Arrow turns the text into decimals exactly.
        self._decoder = msgspec.json.Decoder(row, float_hook=str)
        self._arrow = [t.arrow for t in types]
        self._build = [build_type(t) for t in types]
        self._time_column = [t.base == "TIME" for t in types]
        self._times = [_walker(t, _time_text, False) for t in types]
        self._rare = [_walker(t, _rare_forms, False) for t in types]
        # All columns in one pyarrow.array call (rows as a STRUCT of the columns: no transpose,
        # one conversion; 1.3 us a row less than a call per column), unless a column needs
        # Python first (TIME text inside a top-level ARRAY or MAP).
        self._rows_type: pa.DataType | None = None
        if all(times is None or top for times, top in zip(self._times, self._time_column)):
            self._rows_type = pa.struct([
                pa.field(f"c{i}", pa.string() if top else build)
                for i, (build, top) in enumerate(zip(self._build, self._time_column))
            ])

    def decode(self, block: bytes) -> list[pa.Array] | None:
        """Arrays, one per column, of the block's lines (each ``[...]\\n``); None if any line
        is not exactly what ksqlDB writes for these types (the caller goes row by row)."""
        with gc_paused():
            try:
                return self._decode(block)
            except (pa.ArrowException, TypeError, ValueError, OverflowError):
                return None

    def _decode(self, block: bytes) -> list[pa.Array] | None:
        try:
            rows = self._decoder.decode_lines(block)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return None
        if not rows:
            return [pa.array([], type=a) for a in self._arrow]
        if self._rows_type is not None:
            try:
                built = pa.array(rows, type=self._rows_type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
                pass  # a rarer form (quoted NaN, an integer DECIMAL): column by column
            else:
                return [self._finish(i, column) for i, column in enumerate(built.flatten())]
        arrays = []
        for i, values in enumerate(zip(*rows)):
            array = self._column(i, values)
            if array is None:
                return None
            arrays.append(array)
        return arrays

    def _column(self, i: int, values: Sequence[Any]) -> pa.Array | None:
        if self._time_column[i]:
            return self._finish(i, pa.array(values, type=pa.string()))
        times = self._times[i]
        if times is not None:
            values = [times(v) for v in values]
        build = self._build[i]
        try:
            array = pa.array(values, type=build)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError):
            rare = self._rare[i]
            if rare is None:
                return None
            array = pa.array([rare(v) for v in values], type=build)
        return finish(array, self._arrow[i])

    def _finish(self, i: int, array: pa.Array) -> pa.Array:
        """``finish``; a top-level TIME column arrives as its text."""
        if self._time_column[i]:
            times = times_of_day(array)
            if times is None:  # millis, or not a time: one by one (raises on the latter)
                fix = self._times[i]
                assert fix is not None
                times = pa.array([fix(v) for v in array.to_pylist()], type=pa.time32("ms"))
            array = times
        return finish(array, self._arrow[i])
