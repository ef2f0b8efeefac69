"""The two sinks: ``AppendSink`` (stream day partitions) and ``SnapshotSink`` (table versions).

Both write hidden temp files and give them their final names only when complete; the run is
committed later by ``MetadataStore.commit``. Files no commit lists are orphans that
``cleanup.remove_orphans`` deletes, so a crash anywhere loses and duplicates nothing.

Memory of ``AppendSink`` is bounded by one buffer budget shared by all open day files
(``buffer_bytes``, default 64 MiB): when the rows buffered across files pass it, the largest
buffer is written out as a row group. Files stay open for the whole run, so a run writes one
file per day partition (plus ``_partNNNN`` past ``max_rows_per_file``); ``max_open_partitions``
only caps open files (default 32), closing the least recently used one beyond it.

Why (this replaced DESIGN section 2's "one row-group buffer per open partition, at most 4
open"): ksqlDB interleaves Kafka partitions, so one batch holds rows of several days. With 4
open files, 7 interleaved days closed and reopened files all run long: 304 files for 1M rows,
and memory still grew with the open-file limit (one full buffer each: 244 MiB RSS at 4 open,
308 MiB at 8). One shared budget bounds memory whatever the number of days, and lets the file
limit be generous.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections import OrderedDict
from pathlib import Path
from types import TracebackType

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakeexportd.errors import LakeStateError, SchemaError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake import layout
from lakeexportd.lake.metadata_model import WrittenFile
from lakeexportd.lake.parquet_writer import (
    ROW_GROUP_BYTES,
    ROW_GROUP_ROWS,
    BackgroundWriter,
    ParquetFile,
    check_schema,
)
from lakeexportd.lake.snapshot_sink import SnapshotSink
from lakeexportd.lake.storage import LOCAL, Storage

__all__ = ["AppendSink", "SnapshotSink", "WrittenFile"]

_MS_PER_DAY = 86_400_000
_EPOCH = dt.date(1970, 1, 1)
BUFFER_BYTES = 64 * 1024 * 1024
MAX_OPEN_PARTITIONS = 32


def _event_ms_and_days(column: pa.Array, tz: dt.tzinfo) -> tuple[np.ndarray, np.ndarray]:
    """Epoch ms and local day numbers of an event-time column, vectorised (no per-row Python)."""
    if pa.types.is_timestamp(column.type):
        # ms resolution is all ksqlDB has; a naive timestamp is UTC as ksqlDB means it.
        utc = pc.cast(column, pa.timestamp("ms", tz="UTC"), safe=False)
    else:
        utc = column.view(pa.timestamp("ms", tz="UTC"))
    ms = utc.view(pa.int64()).to_numpy(zero_copy_only=False)
    if tz is dt.UTC:
        local = ms
    else:
        name = getattr(tz, "key", None) or str(tz)
        wall = pc.local_timestamp(utc.cast(pa.timestamp("ms", tz=name)))
        local = wall.view(pa.int64()).to_numpy(zero_copy_only=False)
    return ms, np.floor_divide(local, _MS_PER_DAY)


class AppendSink:
    """Routes a stream's rows to day partitions of event time, one file set per run."""

    def __init__(
        self,
        feed_dir: Path,
        schema: pa.Schema,
        *,
        run_start: dt.datetime,
        event_time: str = "ROWTIME",
        timezone: str | dt.tzinfo | None = None,
        security: layout.Security = "raw",
        max_open_partitions: int = MAX_OPEN_PARTITIONS,
        max_rows_per_file: int = 1_000_000,
        row_group_rows: int = ROW_GROUP_ROWS,
        row_group_bytes: int = ROW_GROUP_BYTES,
        buffer_bytes: int = BUFFER_BYTES,
        storage: Storage = LOCAL,
    ) -> None:
        if max_open_partitions < 1 or max_rows_per_file < 1 or buffer_bytes < 1:
            raise ValueError(
                "max_open_partitions, max_rows_per_file and buffer_bytes must be >= 1"
            )
        field = schema.field(event_time) if event_time in schema.names else None
        if field is None or not (
            pa.types.is_timestamp(field.type) or pa.types.is_int64(field.type)
        ):
            raise SchemaError(
                f"{feed_dir.name}: event_time column {event_time!r} must be a TIMESTAMP or a "
                f"BIGINT of epoch milliseconds; the schema has {schema.names}"
            )
        self.feed_dir = feed_dir
        self.schema = schema
        self._storage = storage
        self._event_index = schema.get_field_index(event_time)
        self._event_time = event_time
        self._tz = layout.zone(timezone)
        self._run_start = run_start
        self._stamp = layout.run_stamp(run_start)
        self._token = secrets.token_hex(4)
        self._dir_mode, self._file_mode = layout.modes(security)
        self._max_open = max_open_partitions
        self._max_rows = max_rows_per_file
        self._rg_rows, self._rg_bytes = row_group_rows, row_group_bytes
        self._buffer_bytes = buffer_bytes
        self._background = BackgroundWriter()
        self._open: OrderedDict[int, ParquetFile] = OrderedDict()
        self._closed: list[tuple[int, ParquetFile, int]] = []  # (day, file, size)
        self._partitions: dict[int, str] = {}
        self._created_dirs: list[Path] = []
        self._renamed: list[Path] = []
        self._seq = 0
        # Without an atomic rename (object stores) files get their final names when opened:
        # an upload appears whole when it completes, and _metadata.json alone commits it.
        self._in_place = not storage.atomic_rename
        self._collisions: dict[int, int] = {}  # day -> the run's _NN there (in place)
        self._parts: dict[int, int] = {}  # day -> files opened there (in place)
        # In place: every object this sink created, for its run to remove should it fail.
        self.created: list[Path] = []

    def __enter__(self) -> AppendSink:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.abort()

    def write(self, batch: pa.RecordBatch) -> None:
        """Route ``batch``'s rows to their day partitions (vectorised: sort once, slice)."""
        if batch.num_rows == 0:
            return
        batch = check_schema(batch, self.schema, self.feed_dir.name)
        column = batch.column(self._event_index)
        if column.null_count:
            raise SchemaError(
                f"{self.feed_dir.name}: event_time column {self._event_time} is null in "
                f"{column.null_count} rows; choose a non-null column for event_time"
            )
        ms, days = _event_ms_and_days(column, self._tz)
        if days[0] == days[-1] and days.min() == days.max():
            self._route(int(days[0]), batch, ms)
            self._within_budget()
            return
        order = np.argsort(days, kind="stable")
        sorted_days = days[order]
        bounds = np.flatnonzero(sorted_days[1:] != sorted_days[:-1]) + 1
        starts = np.concatenate(([0], bounds))
        ends = np.concatenate((bounds, [len(order)]))
        sorted_ms = ms[order]
        pieces = [(int(sorted_days[s]), s, e) for s, e in zip(starts.tolist(), ends.tolist())]
        # Days with an open file first: cycling through more days than open slots in a fixed
        # order is LRU's worst case and would close a file for every day of every batch.
        pieces.sort(key=lambda p: p[0] not in self._open)
        for day, start, end in pieces:
            # One compact copy per day (not slices of one reordered batch): a day's buffer then
            # pins only its own rows, and its size is exactly what the budget counts.
            piece = batch.take(pa.array(order[start:end]))
            self._route(day, piece, sorted_ms[start:end])
        self._within_budget()

    def _within_budget(self) -> None:
        """Write the largest buffers as row groups while buffers and pending writes pass
        ``buffer_bytes``.

        A row group handed to the writer thread still holds its memory until written, so it
        counts; each flush waits for the writer's previous row group (``max_pending``), so
        memory stays near the budget while the writer and the decoder run side by side.
        """
        buffered = sum(f.buffered_bytes for f in self._open.values())
        while buffered and buffered + self._background.pending_bytes > self._buffer_bytes:
            largest = max(self._open.values(), key=lambda f: f.buffered_bytes)
            buffered -= largest.buffered_bytes
            largest.flush()

    def _partition(self, day: int) -> str:
        if day not in self._partitions:
            self._partitions[day] = layout.day_partition(_EPOCH + dt.timedelta(days=day))
        return self._partitions[day]

    def _route(self, day: int, piece: pa.RecordBatch, ms: np.ndarray) -> None:
        current = self._open.get(day)
        if current is not None:
            self._open.move_to_end(day)
        offset = 0
        while offset < piece.num_rows:
            if current is None or current.rows >= self._max_rows:
                rolled = current is not None
                if current is not None:
                    self._close(day)
                current = self._new_file(day)
                if rolled:
                    failpoint("append.after_roll")
            take = min(piece.num_rows - offset, self._max_rows - current.rows)
            chunk = ms[offset:offset + take]
            current.append(piece.slice(offset, take), int(chunk.min()), int(chunk.max()))
            offset += take

    def _close(self, day: int) -> None:
        handle = self._open.pop(day)
        self._closed.append((day, handle, handle.close()))

    def _new_file(self, day: int) -> ParquetFile:
        if len(self._open) >= self._max_open:
            self._close(next(iter(self._open)))
            failpoint("append.after_lru_close")
        directory = self.feed_dir / self._partition(day)
        try:
            created = self._storage.make_dirs(directory, self._dir_mode)
        except OSError as exc:
            raise LakeStateError(
                f"cannot create partition {self._storage.show(directory)}: {exc}"
            ) from exc
        if created:
            self._created_dirs.extend(Path(d) for d in created)
            failpoint("append.after_mkdir")
        self._seq += 1
        if self._in_place:
            name = self._final_name(day, directory)
        else:
            name = layout.temp_name(f"data_{self._stamp}_{self._token}_{self._seq:04d}.parquet")
        handle = ParquetFile(
            directory / name, self.schema, file_mode=self._file_mode,
            row_group_rows=self._rg_rows, row_group_bytes=self._rg_bytes,
            failpoint_prefix="append", background=self._background, storage=self._storage,
        )
        if self._in_place:  # only once created: a name found taken is someone else's
            self.created.append(handle.path)
        self._open[day] = handle
        return handle

    def _final_name(self, day: int, directory: Path) -> str:
        """In place: ``data_<run>[_NN]_partNNNN.parquet``, ``_NN`` free in the partition."""
        if day not in self._collisions:
            taken = frozenset(e.name for e in self._storage.list_dir(directory))
            self._collisions[day] = layout.free_collision(taken, self._run_start)
        self._parts[day] = self._parts.get(day, 0) + 1
        return layout.data_file_name(self._run_start, collision=self._collisions[day],
                                     part=self._parts[day])

    def finish(self) -> list[WrittenFile]:
        """Close, fsync and rename every file to its final name; nothing is listed yet."""
        self._close_all()
        if self._in_place:
            return self._finish_in_place()
        by_day: dict[int, list[tuple[ParquetFile, int]]] = {}
        for day, handle, size in self._closed:
            by_day.setdefault(day, []).append((handle, size))
        written: list[WrittenFile] = []
        dirs: set[Path] = {d.parent for d in self._created_dirs}
        try:
            for day, files in by_day.items():
                partition = self._partition(day)
                directory = self.feed_dir / partition
                taken = frozenset(e.name for e in self._storage.list_dir(directory))
                collision = layout.free_collision(taken, self._run_start)
                for part, (handle, size) in enumerate(files, start=1):
                    name = layout.data_file_name(
                        self._run_start, collision=collision,
                        part=part if len(files) > 1 else None,
                    )
                    self._rename(handle.path, directory / name)
                    written.append(WrittenFile(
                        partition, name, handle.rows, size,
                        handle.min_event_ms, handle.max_event_ms,
                    ))
                dirs.add(directory)
            failpoint("append.after_all_renames")
            self._storage.sync(dirs)
            failpoint("append.after_dir_fsync")
        except OSError as exc:
            raise LakeStateError(f"cannot publish files of {self.feed_dir}: {exc}") from exc
        self._closed = []
        # From here the files may be committed: abort() must leave them to orphan cleanup,
        # which knows whether the commit happened.
        self._renamed = []
        self._created_dirs = []
        failpoint("append.after_finish")
        return written

    def _close_all(self) -> None:
        """Write every last row group, close (and on object stores complete) every file."""
        failpoint("append.before_close")
        for handle in self._open.values():
            handle.flush()  # all last row groups queued first, so the lanes encode them together
        for day in list(self._open):
            self._close(day)
        self._background.close()

    def _finish_in_place(self) -> list[WrittenFile]:
        """The closed files already carry their final names: list them."""
        written = [
            WrittenFile(self._partition(day), handle.path.name, handle.rows, size,
                        handle.min_event_ms, handle.max_event_ms)
            for day, handle, size in self._closed
        ]
        self._closed = []
        failpoint("append.after_finish")
        return written

    def _rename(self, source: Path, target: Path) -> None:
        failpoint("append.before_rename")
        try:
            self._storage.promote(source, target)
        except FileExistsError as exc:
            raise LakeStateError(
                f"{self._storage.show(target)} appeared while this run was writing it"
            ) from exc
        self._renamed.append(target)
        failpoint("append.after_rename")

    def abort(self) -> None:
        """Remove the files this run created; after ``finish`` returned, orphan cleanup decides."""
        self._background.close(discard=True)  # no row group may be written under discard()
        victims = [h for h in self._open.values()] + [h for _, h, _ in self._closed]
        self._open.clear()
        self._closed = []
        for i, handle in enumerate(victims):
            handle.discard()
            if i == 0 and len(victims) > 1:
                failpoint("append.mid_abort")
        for path in self._renamed:
            self._storage.delete(path)
        self._renamed = []
        for directory in reversed(self._created_dirs):
            try:
                self._storage.remove_dir(directory)  # refused when not empty: others' files
            except OSError:
                pass  # left for orphan cleanup
        self._created_dirs = []
