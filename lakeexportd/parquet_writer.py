"""One temp Parquet file being written, plus the filesystem steps the sinks share.

Rows are buffered per file up to one row group (rows or bytes, whichever comes first) because
each ``ParquetWriter.write_table`` call ends a row group: writing every small batch directly
would give readers thousands of tiny row groups.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lakeexportd.errors import LakeStateError, SchemaError
from lakeexportd.failpoints import failpoint

ROW_GROUP_ROWS = 262_144
ROW_GROUP_BYTES = 64 * 1024 * 1024


def fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, dir_mode: int) -> list[Path]:
    """Create ``path`` and missing parents with ``dir_mode`` exactly; returns the created ones."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    created = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, dir_mode)
        except FileExistsError:
            continue
        os.chmod(directory, dir_mode)  # umask may have removed bits
        created.append(directory)
    return created


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
    ) -> None:
        self.path = path
        self.rows = 0
        self.min_event_ms: int | None = None
        self.max_event_ms: int | None = None
        self._schema = schema
        self._row_group_rows = row_group_rows
        self._row_group_bytes = row_group_bytes
        self._prefix = failpoint_prefix
        self._buffer: list[pa.RecordBatch] = []
        self._buffered_rows = 0
        self._buffered_bytes = 0
        try:
            # O_EXCL: never write into a file someone else owns; explicit fchmod: raw data must
            # not be world-readable even for the life of a temp file, whatever the umask.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, file_mode)
            os.fchmod(fd, file_mode)
            os.close(fd)
            self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
                str(path),
                schema,
                compression="snappy",
                use_dictionary=True,
                write_statistics=True,
                store_schema=True,
            )
        except (OSError, pa.ArrowException) as exc:
            raise LakeStateError(f"cannot create {path}: {exc}") from exc
        failpoint(f"{failpoint_prefix}.after_open_temp")

    def append(self, batch: pa.RecordBatch, min_ms: int | None, max_ms: int | None) -> None:
        """Buffer ``batch`` (already of this file's schema); write a row group when full."""
        if batch.num_rows == 0:
            return
        self._buffer.append(batch)
        self._buffered_rows += batch.num_rows
        self._buffered_bytes += batch.get_total_buffer_size()
        self.rows += batch.num_rows
        if min_ms is not None and (self.min_event_ms is None or min_ms < self.min_event_ms):
            self.min_event_ms = min_ms
        if max_ms is not None and (self.max_event_ms is None or max_ms > self.max_event_ms):
            self.max_event_ms = max_ms
        if (
            self._buffered_rows >= self._row_group_rows
            or self._buffered_bytes >= self._row_group_bytes
        ):
            self.flush()

    def flush(self) -> None:
        if not self._buffer or self._writer is None:
            return
        table = pa.Table.from_batches(self._buffer, schema=self._schema)
        self._buffer, self._buffered_rows, self._buffered_bytes = [], 0, 0
        try:
            self._writer.write_table(table, row_group_size=max(table.num_rows, 1))
        except (OSError, pa.ArrowException) as exc:
            raise LakeStateError(f"cannot write {self.path}: {exc}") from exc
        failpoint(f"{self._prefix}.after_row_group")

    def close(self) -> int:
        """Write what is buffered, close, fsync; returns the file's size in bytes."""
        self.flush()
        if self._writer is not None:
            try:
                if self.rows == 0:
                    # Readers must see the columns of an empty table: one empty row group.
                    self._writer.write_table(self._schema.empty_table())
                self._writer.close()
                self._writer = None
                failpoint(f"{self._prefix}.after_close")
                fsync_path(self.path)
                failpoint(f"{self._prefix}.after_file_fsync")
            except (OSError, pa.ArrowException) as exc:
                raise LakeStateError(f"cannot finish {self.path}: {exc}") from exc
        return self.path.stat().st_size

    def discard(self) -> None:
        """Close without caring about the content and remove the temp file."""
        self._buffer = []
        if self._writer is not None:
            try:
                self._writer.close()
            except (OSError, pa.ArrowException):
                pass  # the file is being thrown away
            self._writer = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise LakeStateError(f"cannot remove temp file {self.path}: {exc}") from exc
