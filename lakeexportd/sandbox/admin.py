"""``/_sandbox/*`` admin endpoints: faults, row generation, statistics and schema changes.

These are the sandbox's own (ksqlDB has no such paths); they are never authenticated and never
get faults, so a test can always steer the server.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Context, Decimal, InvalidOperation
from typing import Any

from lakeexportd.sandbox.catalog import Catalog
from lakeexportd.sandbox.faults import Fault, FaultSet, FaultSpecError
from lakeexportd.sandbox.feeder import Feeder
from lakeexportd.sandbox.formatting import value_formatter
from lakeexportd.sandbox.sources import StreamSource
from lakeexportd.sandbox.sqltypes import SqlType, TypeSyntaxError, parse

Cast = Callable[[Any], Any]


class AdminError(ValueError):
    """A bad admin request: answered 400 with ``{"error": message}``."""


def cast_between(old: SqlType, new: SqlType) -> Cast:
    """How a stored value reads after ``ALTER ... TYPE``-like changes; None when impossible."""
    numeric = ("INTEGER", "BIGINT", "DOUBLE", "DECIMAL")
    if new.base == "STRING":
        if old.base == "STRING":
            return lambda v: v
        fmt = value_formatter(old)
        return lambda v: fmt(v).strip('"')
    if old.base in numeric and new.base in ("INTEGER", "BIGINT"):
        return lambda v: int(v)
    if old.base in numeric and new.base == "DOUBLE":
        return lambda v: float(v)
    if old.base in numeric + ("STRING",) and new.base == "DECIMAL":
        quantum = Decimal(1).scaleb(-(new.scale or 0))

        def to_decimal(v: Any) -> Any:
            try:
                # BigDecimal keeps any number of digits; the default context keeps 28.
                return Decimal(str(v)).quantize(quantum, context=Context(prec=1000))
            except InvalidOperation:
                return None

        return to_decimal
    if old.base == "STRING" and new.base in ("INTEGER", "BIGINT"):
        return lambda v: int(v) if v.lstrip("-").isdigit() else None
    if old.base == new.base:
        return lambda v: v
    return lambda v: None


def add_faults(faults: FaultSet, body: Any) -> dict[str, Any]:
    items = body.get("faults", [body]) if isinstance(body, dict) else body
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise AdminError('expected a fault object, a list of them, or {"faults": [...]}')
    try:
        parsed = [Fault.from_dict(i) for i in items]
    except FaultSpecError as exc:
        raise AdminError(str(exc)) from exc
    for fault in parsed:
        faults.add(fault)
    return {"faults": faults.pending()}


def generate(feeder: Feeder, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("rows"), int) or body["rows"] < 0:
        raise AdminError('expected {"rows": N} with N >= 0 (and optionally "rowtime_ms")')
    span = body.get("rowtime_ms")
    window: tuple[int, int] | None = None
    if isinstance(span, int):
        window = (span, span + 1)
    elif isinstance(span, list) and len(span) == 2 and all(isinstance(x, int) for x in span):
        window = (span[0], span[1])
    elif span is not None:
        raise AdminError('"rowtime_ms" must be an epoch-ms integer or [from_ms, to_ms]')
    made = feeder.generate(body["rows"], window)
    return {"generated": made, "counts": feeder.catalog.counts()}


def add_partition(catalog: Catalog, body: Any) -> dict[str, Any]:
    """``{"source": STREAM}``: one more partition for that stream's topic."""
    name = str(body.get("source", "")).upper() if isinstance(body, dict) else ""
    if not isinstance(catalog.sources.get(name), StreamSource):
        streams = sorted(n for n, s in catalog.sources.items() if isinstance(s, StreamSource))
        raise AdminError(f'"source" must name a stream ({", ".join(streams)}), '
                         f"not {name or None!r}")
    index = catalog.add_partition(name)
    return {"source": name, "partition": index, "partitions": index + 1}


def change_schema(catalog: Catalog, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise AdminError('expected {"source": ..., "column": ..., "action": ...}')
    source = catalog.sources.get(str(body.get("source", "")).upper())
    if source is None:
        raise AdminError(f"unknown source {body.get('source')!r}")
    name = str(body.get("column", "")).upper()
    action = body.get("action", "change_type")
    column = source.column(name)
    try:
        new_type = parse(str(body["type"])) if "type" in body else None
    except TypeSyntaxError as exc:
        raise AdminError(str(exc)) from exc
    with catalog.lock:
        if action == "add" and column is None and new_type is not None:
            source.add_column(name, new_type)
        elif action == "drop" and column is not None:
            source.drop_column(name)
        elif action == "change_type" and column is not None and new_type is not None:
            source.change_type(name, new_type, cast_between(column.type, new_type))
        else:
            raise AdminError(
                'use "action": "add" (new column, with "type"), "drop" (existing column) or '
                '"change_type" (existing column, with "type")'
            )
    return {"source": source.name,
            "columns": [{"name": c.name, "type": str(c.type), "key": c.key}
                        for c in source.columns]}
