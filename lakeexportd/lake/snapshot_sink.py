"""``SnapshotSink``: one table version built under ``.staging`` and renamed in when complete.

Readers never see a partial version: ``version=vN`` appears in the feed's folder in one
rename, after every file in it is fsynced; ``_metadata.json`` makes it current afterwards.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from pathlib import Path
from types import TracebackType

import pyarrow as pa

from lakeexportd.errors import LakeStateError
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
from lakeexportd.lake.storage import LOCAL, Storage


class SnapshotSink:
    """Builds one table version under ``.staging`` and renames it into the feed when complete."""

    def __init__(
        self,
        root: Path,
        feed: str,
        schema: pa.Schema,
        *,
        version: int,
        run_start: dt.datetime,
        security: layout.Security = "raw",
        max_rows_per_file: int = 1_000_000,
        row_group_rows: int = ROW_GROUP_ROWS,
        row_group_bytes: int = ROW_GROUP_BYTES,
        storage: Storage = LOCAL,
        in_place: bool | None = None,
    ) -> None:
        self.schema = schema
        self._storage = storage
        self.version = version
        self.feed_dir = layout.feed_dir(root, "table", feed)
        self.staging = layout.staging_dir(root, feed) / layout.version_dir_name(version)
        self._run_start = run_start
        self._token = secrets.token_hex(4)
        self._dir_mode, self._file_mode = layout.modes(security)
        self._max_rows = max_rows_per_file
        self._rg_rows, self._rg_bytes = row_group_rows, row_group_bytes
        self._background = BackgroundWriter()  # row groups encode while rows are decoded
        self._current: ParquetFile | None = None
        self._closed: list[tuple[ParquetFile, int]] = []
        self._published = False
        # Without an atomic rename (object stores) the version is written where it stays, under
        # final names: _metadata.json's current_version is the only completeness signal there.
        # So are a Delta table's files on any store: its log, not a rename, commits them.
        self._in_place = not storage.atomic_rename if in_place is None else in_place
        # In place: every object this sink created, for its run to remove should it fail.
        self.created: list[Path] = []
        self._target = self.feed_dir / layout.version_dir_name(version)
        if self._in_place:
            if storage.exists(self._target):
                raise LakeStateError(
                    f"{storage.show(self._target)} already exists but this run builds version "
                    f"{version}; run `lakeexportd repair` to remove versions no commit lists"
                )
            try:
                storage.make_dirs(self._target, self._dir_mode)
            except OSError as exc:
                raise LakeStateError(f"cannot create {storage.show(self._target)}: {exc}") \
                    from exc
            return
        try:
            if storage.exists(self.staging):
                storage.delete_tree(self.staging)  # an interrupted run's leftovers, never listed
            storage.make_dirs(self.staging, self._dir_mode)
        except OSError as exc:
            raise LakeStateError(f"cannot prepare {storage.show(self.staging)}: {exc}") from exc
        failpoint("snapshot.after_staging_dir")

    def __enter__(self) -> SnapshotSink:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.abort()

    def _open_next(self) -> ParquetFile:
        if self._current is not None:
            self._closed.append((self._current, self._current.close()))
        part = len(self._closed) + 1
        if self._in_place:
            path = self._target / layout.snapshot_file_name(self._run_start, part=part)
        else:
            name = f"snapshot_{self._token}_{part:04d}.parquet"
            path = self.staging / layout.temp_name(name)
        self._current = ParquetFile(
            path, self.schema, file_mode=self._file_mode,
            row_group_rows=self._rg_rows, row_group_bytes=self._rg_bytes,
            failpoint_prefix="snapshot", background=self._background, storage=self._storage,
        )
        if self._in_place:  # only once created: a name found taken is someone else's
            self.created.append(path)
        return self._current

    def write(self, batch: pa.RecordBatch) -> None:
        """Append rows; a new ``_partNNNN`` file starts past ``max_rows_per_file``."""
        batch = check_schema(batch, self.schema, self.feed_dir.name)
        offset = 0
        while offset < batch.num_rows:
            current = self._current or self._open_next()
            if current.rows >= self._max_rows:
                current = self._open_next()
                failpoint("snapshot.after_roll")
            take = min(batch.num_rows - offset, self._max_rows - current.rows)
            current.append(batch.slice(offset, take), None, None)
            offset += take

    def publish(self) -> list[WrittenFile]:
        """Make the version visible as ``version=vN`` (complete or not at all)."""
        if self._current is None:
            self._open_next()
            failpoint("snapshot.after_empty_file")
        assert self._current is not None
        self._closed.append((self._current, self._current.close()))
        self._current = None
        self._background.close()
        dir_name = layout.version_dir_name(self.version)
        if self._in_place:
            written = [WrittenFile(dir_name, handle.path.name, handle.rows, size)
                       for handle, size in self._closed]
            self._published = True  # complete; listed by the commit that follows
            failpoint("snapshot.after_publish_fsync")
            self._closed = []
            return written
        target = self.feed_dir / dir_name
        written = []
        storage = self._storage
        try:
            for part, (handle, size) in enumerate(self._closed, start=1):
                name = layout.snapshot_file_name(
                    self._run_start, part=part if len(self._closed) > 1 else None
                )
                failpoint("snapshot.before_file_rename")
                storage.promote(handle.path, self.staging / name)
                failpoint("snapshot.after_file_rename")
                written.append(WrittenFile(dir_name, name, handle.rows, size))
            storage.sync([self.staging])
            failpoint("snapshot.after_staging_fsync")
            created = storage.make_dirs(self.feed_dir, self._dir_mode)
            if storage.exists(target):
                raise LakeStateError(
                    f"{storage.show(target)} already exists but this run built version "
                    f"{self.version}; run `lakeexportd repair` to remove versions no commit lists"
                )
            failpoint("snapshot.before_publish")
            storage.rename_dir(self.staging, target)
            self._published = True
            failpoint("snapshot.after_publish")
            storage.sync([self.feed_dir, self.staging.parent, *(c.parent for c in created)])
        except OSError as exc:
            raise LakeStateError(f"cannot publish {storage.show(target)}: {exc}") from exc
        failpoint("snapshot.after_publish_fsync")
        self._closed = []
        return written

    def abort(self) -> None:
        """Forget the version being built (a published one is left to orphan cleanup)."""
        self._background.close(discard=True)
        if self._current is not None:
            self._current.discard()
            self._current = None
        for handle, _ in self._closed:
            if self._in_place:
                handle.discard()  # a finished object of this run: no staging holds it
        self._closed = []
        if not self._published and not self._in_place:
            failpoint("snapshot.mid_abort")
            with contextlib.suppress(OSError):  # what stays is a leftover cleanup removes
                self._storage.delete_tree(self.staging)
