"""Sources held by the sandbox: columns (with schema changes) and the rows of streams and tables.

Rows are stored once, as tuples in the order the generator fills them (the column "slot");
a schema change only edits the column list (slot, type, cast), so it never rewrites rows.
Stores are append-only lists; a query captures lengths ("end offsets") and reads below them
without a lock. A schema change swaps in new lists, so a running query keeps a consistent view.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from lakeexportd.sandbox.formatting import row_formatter
from lakeexportd.sandbox.sqltypes import SqlType

Cast = Callable[[Any], Any]


@dataclass(frozen=True)
class Column:
    """One column as DESCRIBE and query headers show it."""

    name: str
    type: SqlType
    key: bool = False
    slot: int | None = None  # index in the stored tuple; None for a column added later
    cast: Cast | None = None  # set when the column's type was changed after rows were stored

    def read(self, stored: Sequence[Any]) -> Any:
        if self.slot is None or self.slot >= len(stored):
            return None
        value = stored[self.slot]
        if self.cast is not None and value is not None:
            return self.cast(value)
        return value


@dataclass
class Source:
    """A STREAM or TABLE: name, columns and the DDL facts DESCRIBE reports."""

    name: str
    kind: str  # "STREAM" or "TABLE"
    topic: str
    columns: list[Column]
    partitions: int
    timestamp_column: str = ""
    query_text: str = ""  # the CSAS/CTAS behind a derived source, "" for a base source
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_stream(self) -> bool:
        return self.kind == "STREAM"

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)

    def values(self, stored: Sequence[Any]) -> list[Any]:
        return [c.read(stored) for c in self.columns]

    def set_columns(self, columns: list[Column]) -> None:
        self.columns = columns
        self.on_schema_change()

    def on_schema_change(self) -> None:
        """Hook for stores that cache text built from the columns."""

    def add_column(self, name: str, ksql_type: SqlType) -> None:
        self.set_columns([*self.columns, Column(name, ksql_type)])

    def drop_column(self, name: str) -> None:
        self.set_columns([c for c in self.columns if c.name != name])

    def change_type(self, name: str, ksql_type: SqlType, cast: Cast) -> None:
        def changed(c: Column) -> Column:
            if c.name != name:
                return c
            previous = c.cast
            chained: Cast = cast if previous is None else (lambda v: cast(previous(v)))
            return replace(c, type=ksql_type, cast=chained)

        self.set_columns([changed(c) for c in self.columns])


@dataclass
class StreamSource(Source):
    """An append-only stream: stored rows, ROWTIMEs, and per-partition offsets."""

    rows: list[tuple[Any, ...]] = field(default_factory=list, repr=False)
    # Machine-integer arrays: 8 bytes an entry instead of a Python int object each.
    rowtimes: array[int] = field(default_factory=lambda: array("q"), repr=False)
    by_partition: list[array[int]] = field(default_factory=list, repr=False)
    _lines: list[bytes] = field(default_factory=list, repr=False)
    _format_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        if not self.by_partition:
            self.by_partition = [array("q") for _ in range(self.partitions)]

    def append(self, stored: tuple[Any, ...], rowtime: int, partition: int) -> None:
        """Called with the catalog lock held."""
        self.by_partition[partition].append(len(self.rows))
        self.rowtimes.append(rowtime)
        self.rows.append(stored)

    def end_offsets(self) -> list[int]:
        return [len(p) for p in self.by_partition]

    def on_schema_change(self) -> None:
        with self._format_lock:
            self._lines = []

    def lines(self, upto: int) -> list[bytes]:
        """Cached JSON text of ``SELECT *`` rows, formatted once and reused by every query."""
        with self._format_lock:
            lines = self._lines
            if len(lines) < upto:
                fmt = row_formatter([c.type for c in self.columns])
                columns = self.columns
                rows = self.rows
                lines.extend(
                    fmt([c.read(rows[i]) for c in columns]).encode()
                    for i in range(len(lines), upto)
                )
            return lines

    def pending_lines(self, upto: int) -> int:
        return max(0, upto - len(self._lines))


@dataclass
class TableSource(Source):
    """A materialised table: current row per key, and a changelog for push queries."""

    current: dict[Any, tuple[tuple[Any, ...], int]] = field(default_factory=dict, repr=False)
    # Only push queries read the changelog, and only its recent end: keep a bounded window.
    changelog: list[tuple[tuple[Any, ...], int]] = field(default_factory=list, repr=False)
    changelog_start: int = 0  # absolute position of changelog[0]
    changelog_keep: int = 10_000
    changes: int = 0  # updates ever made (DESCRIBE EXTENDED's end offsets)

    def upsert(self, key: Any, stored: tuple[Any, ...], rowtime: int) -> None:
        """Called with the catalog lock held."""
        self.current[key] = (stored, rowtime)
        self.changelog.append((stored, rowtime))
        self.changes += 1
        if len(self.changelog) > 2 * self.changelog_keep:
            dropped = len(self.changelog) - self.changelog_keep
            del self.changelog[:dropped]
            self.changelog_start += dropped

    def changes_since(self, position: int) -> tuple[list[tuple[tuple[Any, ...], int]], int]:
        """Updates after absolute ``position`` (a reader that fell behind skips ahead)."""
        first = max(0, position - self.changelog_start)
        return self.changelog[first:], self.changes

    def snapshot(self) -> list[tuple[tuple[Any, ...], int]]:
        """Rows in key order (a pull scan reads the state store in key order)."""
        return [self.current[k] for k in sorted(self.current)]
