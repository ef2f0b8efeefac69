"""One temp Parquet file being written, plus the filesystem steps the sinks share.

Rows are buffered per file up to one row group (rows or bytes, whichever comes first) because
each ``ParquetWriter.write_table`` call ends a row group: writing every small batch directly
would give readers thousands of tiny row groups.

Encoding a row group (dictionary, Snappy, statistics) is as costly as decoding its rows, and
pyarrow releases the GIL while it runs, so a sink hands full row groups to a
``BackgroundWriter``: worker threads that write them (each file's in order) while the caller
decodes the next block on the other core. At most ``max_pending`` row groups wait, and the
sink counts them in its memory budget; the first failure is raised in the caller at the next
submit, ``drain`` or file close, so a full disk still fails the run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lakeexportd.errors import LakeStateError, SchemaError
from lakeexportd.failpoints import failpoint
from lakeexportd.lake.storage import LOCAL, Storage, Writable

ROW_GROUP_ROWS = 262_144
ROW_GROUP_BYTES = 64 * 1024 * 1024


def use_lean_arrow_memory() -> None:
    """Make Arrow give freed memory back to the OS at once (jemalloc without decay), if built in.

    Called once by the CLI, for the daemon and one-shot exports alike; ``lakeexportd/__init__``
    selects jemalloc before pyarrow loads (only then do Arrow's C++ internals use it too).
    Arrow's default allocator (mimalloc) keeps freed pages for reuse, and blocks allocated by
    the decoder and freed by the writer thread piled up: 5M rows peaked at 497 MB RSS with
    171 MB of live Arrow data; jemalloc without decay peaked at 353 MB, at no measurable
    speed cost (jemalloc's default 1 s decay: 445 MB).
    """
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return  # a pyarrow build without jemalloc keeps its default allocator
    pa.jemalloc_set_decay_ms(0)
    pa.set_memory_pool(pool)


def check_schema(batch: pa.RecordBatch, schema: pa.Schema, where: str) -> pa.RecordBatch:
    """``batch`` with the sink's schema (field metadata included); other types are an error."""
    if batch.schema is schema or batch.schema.equals(schema, check_metadata=True):
        return batch
    if not batch.schema.equals(schema, check_metadata=False):
        raise SchemaError(
            f"{where}: a batch has schema {batch.schema.to_string(show_schema_metadata=False)} "
            f"but the sink was opened with {schema.to_string(show_schema_metadata=False)}; "
            "one run must keep one schema"
        )
    return pa.RecordBatch.from_arrays(batch.columns, schema=schema)


class BackgroundWriter:
    """Runs row-group writes on worker threads: one lane per file, so each file's row groups
    are written in order and a ``ParquetWriter`` is only ever used by one thread at a time."""

    def __init__(self, *, lanes: int = 2, max_pending: int = 2) -> None:
        self._lanes: list[ThreadPoolExecutor | None] = [None] * lanes
        self._next_lane = 0
        self._max_pending = max_pending
        self._pending: deque[tuple[Future[None], int]] = deque()

    def lane(self) -> int:
        """The lane for a new file (round robin, so the last row groups of several files can be
        encoded at the same time when a run finishes)."""
        lane = self._next_lane
        self._next_lane = (lane + 1) % len(self._lanes)
        return lane

    @property
    def pending_bytes(self) -> int:
        """Bytes of row groups handed over and not yet written (they still use memory)."""
        self._reap()
        return sum(size for _, size in self._pending)

    def _reap(self) -> None:
        while self._pending and self._pending[0][0].done():
            self._pending.popleft()[0].result()

    def submit(self, lane: int, job: Callable[[], None], size: int) -> None:
        """Queue ``job`` (holding ``size`` bytes) on ``lane``; waits while ``max_pending`` jobs
        are queued. Raises the failure of an earlier job, so a full disk stops the run at the
        next submit."""
        self._reap()
        while len(self._pending) >= self._max_pending:
            self._pending.popleft()[0].result()
        pool = self._lanes[lane]
        if pool is None:
            pool = self._lanes[lane] = ThreadPoolExecutor(1, thread_name_prefix="parquet-writer")
        self._pending.append((pool.submit(job), size))

    def drain(self) -> None:
        """Wait for every queued job; raise the first failure."""
        while self._pending:
            self._pending.popleft()[0].result()

    def close(self, *, discard: bool = False) -> None:
        """Wait for the queue (failures ignored when ``discard``) and stop the thread."""
        try:
            if discard:
                while self._pending:
                    self._pending.popleft()[0].exception()
            else:
                self.drain()
        finally:
            for i, pool in enumerate(self._lanes):
                if pool is not None:
                    pool.shutdown(wait=True)
                    self._lanes[i] = None


class ParquetFile:
    """A temp Parquet file created with exact permissions, written in whole row groups."""

    def __init__(
        self,
        path: Path,
        schema: pa.Schema,
        *,
        file_mode: int,
        row_group_rows: int = ROW_GROUP_ROWS,
        row_group_bytes: int = ROW_GROUP_BYTES,
        failpoint_prefix: str,
        background: BackgroundWriter | None = None,
        storage: Storage = LOCAL,
    ) -> None:
        self.path = path
        self._storage = storage
        self._background = background
        self._lane = background.lane() if background is not None else 0
        self.rows = 0
        self.min_event_ms: int | None = None
        self.max_event_ms: int | None = None
        self._schema = schema
        self._row_group_rows = row_group_rows
        self._row_group_bytes = row_group_bytes
        self._prefix = failpoint_prefix
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_rows = 0
        self.buffered_bytes = 0
        self._sink: Writable | None = None
        try:
            self._sink = storage.create(path, file_mode=file_mode)  # new, ours, exact mode
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
                self._sink,
                schema,
                compression="snappy",
                use_dictionary=True,
                write_statistics=True,
                store_schema=True,
                # A CRC per page lets `verify --deep` tell a damaged page from a valid one.
                write_page_checksum=True,
            )
        except (OSError, pa.ArrowException) as exc:
            if self._sink is not None:  # ours: a full disk must not leave a half-made temp
                self._close_sink()
                storage.delete(path)
            raise LakeStateError(f"cannot create {storage.show(path)}: {exc}") from exc
        failpoint(f"{failpoint_prefix}.after_open_temp")

    def append(self, batch: pa.RecordBatch, min_ms: int | None, max_ms: int | None) -> None:
        """Buffer ``batch`` (already of this file's schema); write a row group when full."""
        if batch.num_rows == 0:
            return
        self._buffer.append(batch)
        self._buffered_rows += batch.num_rows
        self.buffered_bytes += batch.get_total_buffer_size()
        self.rows += batch.num_rows
        if min_ms is not None and (self.min_event_ms is None or min_ms < self.min_event_ms):
            self.min_event_ms = min_ms
        if max_ms is not None and (self.max_event_ms is None or max_ms > self.max_event_ms):
            self.max_event_ms = max_ms
        if (
            self._buffered_rows >= self._row_group_rows
            or self.buffered_bytes >= self._row_group_bytes
        ):
            self.flush()

    def flush(self) -> None:
        """Write the buffer as one row group (on the background writer, if there is one)."""
        if not self._buffer or self._writer is None:
            return
        table = pa.Table.from_batches(self._buffer, schema=self._schema)
        size = self.buffered_bytes
        self._buffer, self._buffered_rows, self.buffered_bytes = [], 0, 0
        writer = self._writer

        def write() -> None:
            try:
                writer.write_table(table, row_group_size=max(table.num_rows, 1))
            except (OSError, pa.ArrowException) as exc:
                raise self._failed("write", exc) from exc
            failpoint(f"{self._prefix}.after_row_group")

        if self._background is None:
            write()
        else:
            self._background.submit(self._lane, write, size)

    def close(self) -> int:
        """Write what is buffered, close, fsync; returns the file's size in bytes."""
        self.flush()
        if self._background is not None:
            self._background.drain()  # this file's row groups are written before it closes
        if self._writer is not None:
            try:
                if self.rows == 0:
                    # Readers must see the columns of an empty table: one empty row group.
                    self._writer.write_table(self._schema.empty_table())
                self._writer.close()
                self._writer = None
                self._close_sink()
                failpoint(f"{self._prefix}.after_close")
                self._storage.sync_file(self.path)
                failpoint(f"{self._prefix}.after_file_fsync")
            except (OSError, pa.ArrowException) as exc:
                raise self._failed("finish", exc) from exc
        return self._storage.size(self.path)

    def _failed(self, what: str, exc: BaseException) -> LakeStateError:
        return LakeStateError(
            f"cannot {what} {self._storage.show(self.path)}: {exc} (nothing of this run is "
            "published; the next run writes these rows again once the lake's storage takes "
            "writes)"
        )

    def _close_sink(self, *, abort: bool = False) -> None:
        """Close the file under the writer (a writer given an open file leaves it open);
        ``abort`` drops an unfinished object-store upload instead of completing it."""
        sink, self._sink = self._sink, None
        if sink is None:
            return
        drop = getattr(sink, "abort", None) if abort else None
        if callable(drop):
            drop()  # the object never appears: nothing to delete, nothing for a reader to see
        else:
            sink.close()

    def discard(self) -> None:
        """Close without caring about the content and remove the temp file.

        The caller has stopped the background writer first (``BackgroundWriter.close``).
        """
        self._buffer, self._buffered_rows, self.buffered_bytes = [], 0, 0
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass  # the file is being thrown away
            self._writer = None
        try:
            self._close_sink(abort=True)
        except OSError:
            pass  # the file is being thrown away
        try:
            self._storage.delete(self.path)
        except OSError as exc:
            raise LakeStateError(f"cannot remove temp file {self.path}: {exc}") from exc
