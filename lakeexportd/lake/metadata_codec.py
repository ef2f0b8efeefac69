"""The ``_metadata.json`` codec, both ways: ``to_json`` writes a document, ``from_json`` reads
one back and checks its shape (a malformed file is a ``ValueError`` naming the JSON path).

Totals are written from the listed files and ignored on reading, so they never drift; so is
a partition's ``tier`` (each file records its own: ``null``/absent is the store's default).
"""

from __future__ import annotations

import json
from typing import Any

from lakeexportd.lake import layout
from lakeexportd.lake.metadata_model import (
    FORMAT_VERSION,
    ExportRecord,
    FeedMetadata,
    FileEntry,
    Offsets,
    Partition,
    Retired,
    SchemaChange,
    SchemaColumn,
    StreamMetadata,
    TableMetadata,
    Version,
    Window,
    parse_iso,
    size_mb,
)


def encode(doc: FeedMetadata) -> bytes:
    """The bytes of ``_metadata.json`` for ``doc`` (indented, one trailing newline)."""
    return (json.dumps(to_json(doc), indent=2, allow_nan=False) + "\n").encode()


def decode(data: bytes) -> FeedMetadata:
    """The document in ``data``; ``ValueError`` (JSON or shape) when it is not one."""
    return from_json(json.loads(data))


# -- encoding --------------------------------------------------------------------------------


def _file_json(f: FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"name": f.name, "records": f.records, "size_bytes": f.size_bytes}
    if f.min_event_ms is not None:
        out["min_event_ms"] = f.min_event_ms
    if f.max_event_ms is not None:
        out["max_event_ms"] = f.max_event_ms
    if f.tier is not None:
        out["tier"] = f.tier
    if f.added is not None:
        out["added"] = f.added
    return out


def _export_json(e: ExportRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run_id": e.run_id, "started": e.started, "finished": e.finished,
        "records": e.records, "status": e.status,
    }
    if e.window is not None:
        out["window"] = {"from_ms": e.window.from_ms, "to_ms": e.window.to_ms}
    for key in ("files", "size_bytes", "version", "error"):
        if getattr(e, key) is not None:
            out[key] = getattr(e, key)
    return out


def _change_json(c: SchemaChange) -> dict[str, Any]:
    out: dict[str, Any] = {"changed": c.changed}
    for key in ("added", "removed", "retyped"):
        if getattr(c, key):
            out[key] = list(getattr(c, key))
    return out


def to_json(doc: FeedMetadata) -> dict[str, Any]:
    """The document as written to disk, totals recomputed."""
    out: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "source": doc.source, "feed": doc.feed, "kind": doc.kind, "mode": doc.mode,
        "last_export": doc.last_export, "last_status": doc.last_status,
        "total_records": doc.total_records,
        "total_size_bytes": doc.total_size_bytes,
        "total_size_mb": size_mb(doc.total_size_bytes),
        "schema": [
            {"name": c.name, "ksql_type": c.ksql_type, "arrow_type": c.arrow_type}
            for c in doc.schema
        ],
        "schema_history": [_change_json(c) for c in doc.schema_history],
    }
    if isinstance(doc, StreamMetadata):
        out["watermark"] = {"rowtime_ms": doc.watermark_ms}
        out["partitions"] = [
            {"path": p.path, "records": p.records, "size_bytes": p.size_bytes,
             "tier": p.tier, "files": [_file_json(f) for f in p.files]}
            for p in doc.partitions
        ]
        if doc.offsets is not None:  # realtime feeds only
            out["offsets"] = {
                "partitions": {str(p): o for p, o in sorted(doc.offsets.partitions.items())},
                "after_ms": doc.offsets.after_ms}
        if doc.retired:  # only while compaction inputs wait out their grace
            out["retired"] = [{"path": r.path, "since": r.since} for r in doc.retired]
    else:
        out["current_version"] = doc.current_version
        out["last_version"] = doc.last_version
        out["versions"] = [
            {"version": v.version, "path": v.path, "created": v.created,
             "records": v.records, "size_bytes": v.size_bytes,
             "files": [_file_json(f) for f in v.files]}
            for v in doc.versions
        ]
    out["exports"] = [_export_json(e) for e in doc.exports]
    for key, value in doc.extra.items():
        out.setdefault(key, value)
    return out


# -- decoding --------------------------------------------------------------------------------


_KNOWN = {
    "format_version", "source", "feed", "kind", "mode", "last_export", "last_status",
    "total_records", "total_size_bytes", "total_size_mb", "schema", "schema_history",
    "watermark", "partitions", "retired", "offsets", "current_version", "last_version",
    "versions", "exports",
}
_SCHEMA_KEYS = ("name", "ksql_type", "arrow_type")


class _Shape(ValueError):
    """The JSON parsed but is not a metadata document; the message says where."""


def _get(
    obj: Any, key: str, kind: type | tuple[type, ...], where: str, *, null: bool = False
) -> Any:
    if not isinstance(obj, dict):
        raise _Shape(f"{where} is not an object")
    if key not in obj:
        raise _Shape(f"{where}.{key} is missing")
    value = obj[key]
    if value is None and null:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise _Shape(f"{where}.{key} has the wrong type ({type(value).__name__})")
    return value


def _opt(obj: dict[str, Any], key: str, kind: type, where: str) -> Any:
    return _get(obj, key, kind, where, null=True) if key in obj else None


def _stamp(obj: dict[str, Any], key: str, where: str) -> str | None:
    value: str | None = _opt(obj, key, str, where)
    if value is not None:
        try:
            parse_iso(value)
        except ValueError:
            raise _Shape(f"{where}.{key} {value!r} is not an ISO time") from None
    return value


def _delta_name(name: str) -> bool:
    return name.endswith(".parquet") and "/" not in name and not name.startswith((".", "_"))


def _files(raw: Any, where: str, check: Any) -> tuple[FileEntry, ...]:
    out = []
    for i, f in enumerate(_get(raw, "files", list, where)):
        w = f"{where}.files[{i}]"
        name = _get(f, "name", str, w)
        if not check(name):
            raise _Shape(f"{w}.name {name!r} is not a data file name")
        out.append(FileEntry(
            name, _get(f, "records", int, w), _get(f, "size_bytes", int, w),
            _opt(f, "min_event_ms", int, w), _opt(f, "max_event_ms", int, w),
            _opt(f, "tier", str, w), _stamp(f, "added", w),
        ))
    if len({f.name for f in out}) != len(out):
        raise _Shape(f"{where}.files lists a name twice")
    return tuple(out)


def _exports(raw: list[Any]) -> tuple[ExportRecord, ...]:
    out = []
    for i, e in enumerate(raw):
        w = f"$.exports[{i}]"
        window = None
        if "window" in e and e["window"] is not None:
            window = Window(_get(e["window"], "from_ms", int, w + ".window", null=True),
                            _get(e["window"], "to_ms", int, w + ".window"))
        out.append(ExportRecord(
            _get(e, "run_id", str, w), _get(e, "started", str, w), _get(e, "finished", str, w),
            _get(e, "records", int, w), _get(e, "status", str, w), window,
            _opt(e, "error", str, w), _opt(e, "files", int, w), _opt(e, "size_bytes", int, w),
            _opt(e, "version", int, w),
        ))
    return tuple(out)


def _retired(raw: Any) -> tuple[Retired, ...]:
    if not isinstance(raw, list):
        raise _Shape("$.retired is not a list")
    out = []
    for i, r in enumerate(raw):
        w = f"$.retired[{i}]"
        path = _get(r, "path", str, w)
        partition, _, name = path.rpartition("/")
        try:
            layout.partition_day(partition)
        except ValueError:
            raise _Shape(f"{w}.path {path!r} is not a day partition's file") from None
        if not layout.is_data_file_name(name):
            raise _Shape(f"{w}.path {path!r} is not a data file name")
        out.append(Retired(path, _get(r, "since", str, w)))
    return tuple(out)


def _offsets(raw: Any) -> Offsets | None:
    """``{"partitions": {"0": 41, "1": 7}, "after_ms": null}`` (see ``Offsets``)."""
    if raw is None:
        return None
    partitions = _get(raw, "partitions", dict, "$.offsets")
    out = {}
    for key, value in partitions.items():
        if not (isinstance(key, str) and key.isdigit()) or type(value) is not int or value < 0:
            raise _Shape(f"$.offsets.partitions: {key!r}: {value!r} is not a partition number "
                         "and a ROWOFFSET (both whole numbers, not negative)")
        out[int(key)] = value
    return Offsets(out, _get(raw, "after_ms", int, "$.offsets", null=True))


def from_json(raw: Any) -> FeedMetadata:
    """Decode and check a parsed document; any deviation is a ``ValueError`` saying where."""
    if _get(raw, "format_version", int, "$") != FORMAT_VERSION:
        raise _Shape(f"$.format_version is {raw['format_version']}, expected {FORMAT_VERSION}")
    kind = _get(raw, "kind", str, "$")
    schema = tuple(
        SchemaColumn(*(_get(c, k, str, f"$.schema[{i}]") for k in _SCHEMA_KEYS))
        for i, c in enumerate(_get(raw, "schema", list, "$"))
    )
    history = tuple(
        SchemaChange(_get(c, "changed", str, f"$.schema_history[{i}]"),
                     *(tuple(c.get(k, ())) for k in ("added", "removed", "retyped")))
        for i, c in enumerate(raw.get("schema_history", []))
    )
    common: dict[str, Any] = {
        "feed": _get(raw, "feed", str, "$"), "source": _get(raw, "source", str, "$"),
        "last_export": _get(raw, "last_export", str, "$", null=True),
        "last_status": _get(raw, "last_status", str, "$", null=True),
        "schema": schema, "schema_history": history,
        "exports": _exports(_get(raw, "exports", list, "$")),
        "extra": {k: v for k, v in raw.items() if k not in _KNOWN},
    }
    # A Delta feed's summary lists the log's files, and delta-rs's optimize names its own
    # (part-...): any plain Parquet name. Nothing deletes by a Delta summary (the log decides).
    delta = raw.get("format") == "delta"
    data_name = _delta_name if delta else layout.is_data_file_name
    snapshot_name = _delta_name if delta else layout.is_snapshot_file_name
    if kind == "stream":
        partitions = []
        for i, p in enumerate(_get(raw, "partitions", list, "$")):
            path = _get(p, "path", str, f"$.partitions[{i}]")
            layout.partition_day(path)
            files = _files(p, f"$.partitions[{i}]", data_name)
            partitions.append(Partition(path, files))
        if len({p.path for p in partitions}) != len(partitions):
            raise _Shape("$.partitions lists a path twice")
        mark = _get(raw, "watermark", dict, "$")
        watermark = _get(mark, "rowtime_ms", int, "$.watermark", null=True)
        return StreamMetadata(**common, partitions=tuple(partitions), watermark_ms=watermark,
                              retired=_retired(raw.get("retired", [])),
                              offsets=_offsets(raw.get("offsets")))
    if kind == "table":
        versions = tuple(
            Version(
                _get(v, "version", int, f"$.versions[{i}]"),
                _get(v, "created", str, f"$.versions[{i}]"),
                _files(v, f"$.versions[{i}]", snapshot_name),
            )
            for i, v in enumerate(_get(raw, "versions", list, "$"))
        )
        doc = TableMetadata(
            **common, versions=versions,
            current_version=_get(raw, "current_version", int, "$", null=True),
            last_version=_get(raw, "last_version", int, "$"),
        )
        check_table(doc)
        return doc
    raise _Shape(f"$.kind is {kind!r}, expected 'stream' or 'table'")


def check_table(doc: TableMetadata) -> None:
    numbers = [v.version for v in doc.versions]
    if len(set(numbers)) != len(numbers) or any(n < 1 for n in numbers):
        raise _Shape("$.versions has duplicate or non-positive version numbers")
    if numbers and doc.last_version < max(numbers):
        raise _Shape(f"$.last_version {doc.last_version} is below a listed version")
    if doc.current_version is not None and doc.current_version not in numbers:
        raise _Shape(f"$.current_version {doc.current_version} is not in $.versions")
