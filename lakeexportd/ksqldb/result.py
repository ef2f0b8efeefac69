"""QueryResult: the rows of one running query, decoded on a reader thread.

The body is read and decoded a block ahead of the caller, so receiving and CSV parsing
overlap the caller's routing and Parquet writing; at most ``_READ_AHEAD_TABLES`` decoded
blocks wait, so memory never holds the whole answer. Errors of the reader thread are raised
in the caller's, after the rows that came before them. Once rows flow, any break is a
``KsqlDBStreamError``: the caller must discard what it received.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeAlias

import pyarrow as pa

from lakeexportd.errors import ExportAborted, KsqlDBStreamError
from lakeexportd.ksqldb.curl_stream import TransportFailure
from lakeexportd.ksqldb.framing import DelimitedStream, QueryHeader, StreamedRowStream
from lakeexportd.ksqldb.transport import Response

# Decoded blocks (about 4 MiB of body each) queued ahead of the caller: one more made no
# measurable difference in speed and cost 7-14 MB of peak RSS at 5M rows.
_READ_AHEAD_TABLES = 1
# What the reader thread hands over: a decoded block, the error that ended it, or the end.
_Item: TypeAlias = "pa.Table | BaseException | None"


class QueryResult:
    """A running query: ``schema`` once the header is read, then ``batches()``."""

    def __init__(
        self,
        response: Response,
        decoder: DelimitedStream | StreamedRowStream,
        batch_size: int,
        cancel: threading.Event | None = None,
    ) -> None:
        self.response = response
        self._cancel = cancel
        self.http_version = response.http_version
        self._decoder = decoder
        self._batch_size = batch_size
        self._chunks = self._raw_chunks()
        self._pending: list[pa.Table] = []
        self._finished = False
        self.rows = 0

    @property
    def header(self) -> QueryHeader:
        assert self._decoder.header is not None
        return self._decoder.header

    @property
    def schema(self) -> pa.Schema:
        assert self._decoder.decoder is not None
        return self._decoder.decoder.schema

    @property
    def query_id(self) -> str | None:
        return self.header.query_id

    @property
    def fast_rows(self) -> int:
        """Rows decoded by the native block path (the rest took the exact JSON path)."""
        return self._decoder.decoder.fast_rows if self._decoder.decoder else 0

    def _raw_chunks(self) -> Iterator[bytes]:
        what = self._decoder.what
        try:
            yield from self.response.iter_raw()
        except TransportFailure as exc:
            if exc.kind == "timeout":
                raise KsqlDBStreamError(
                    f"{what}: no data from ksqlDB for longer than the read timeout after "
                    f"{self._decoder.rows} rows; raise ksqldb.read_timeout if the source is "
                    "large"
                ) from exc
            raise KsqlDBStreamError(
                f"{what}: the connection broke after {self._decoder.rows} rows "
                f"({exc}); the rows received are not used"
            ) from exc

    def read_header(self) -> None:
        """Read until the header line is known (rows that came with it are kept)."""
        for chunk in self._chunks:
            self._pending.extend(self._decoder.feed(chunk))
            if self._decoder.header is not None:
                return
        self._finished = True
        self._pending.extend(self._decoder.finish())

    def batches(self) -> Iterator[pa.RecordBatch]:
        """Every row of the answer, in order; raises if the answer turns out incomplete.

        The body is read and decoded on a reader thread, a block ahead of the caller:
        receiving and CSV parsing then overlap the caller's routing and
        Parquet writing. Its exceptions are raised here, after the rows that came before them.
        """
        for table in self._pending:
            yield from self._split(table)
        self._pending = []
        if self._finished:
            return
        self._finished = True
        tables: queue.Queue[_Item] = queue.Queue(_READ_AHEAD_TABLES)
        stop = threading.Event()
        reader = threading.Thread(
            target=self._read, args=(tables, stop), name="ksqldb-reader", daemon=True
        )
        reader.start()
        try:
            while (item := self._next(tables)) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield from self._split(item)
        finally:
            # A caller that stops early (a failed sink) must not leave the reader running: it
            # stops at its next block. One blocked in recv wakes when data or the read timeout
            # arrive, or when query() closes the response; as a daemon it never delays exit.
            stop.set()
            reader.join(timeout=1.0)

    def _next(self, tables: queue.Queue[_Item]) -> _Item:
        """The next item; a set ``cancel`` ends the wait even while ksqlDB sends nothing (a
        stream pull query is silent while it scans old offsets), so shutdown is not held up."""
        if self._cancel is None:
            return tables.get()
        while True:
            try:
                return tables.get(timeout=0.2)
            except queue.Empty:
                if self._cancel.is_set():
                    raise ExportAborted(
                        f"{self._decoder.what}: stopped by shutdown while waiting for ksqlDB "
                        f"after {self.rows} rows; nothing was published"
                    ) from None

    def _read(self, tables: queue.Queue[_Item], stop: threading.Event) -> None:
        """The reader thread: each decoded table, then ``None``, or the exception that ended it."""
        try:
            for chunk in self._chunks:
                for table in self._decoder.feed(chunk):
                    if not _offer(tables, table, stop):
                        return
                if stop.is_set():
                    return
            for table in self._decoder.finish():
                if not _offer(tables, table, stop):
                    return
            _offer(tables, None, stop)
        except BaseException as exc:  # raised in the caller's thread by batches()
            _offer(tables, exc, stop)

    def _split(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        for batch in table.to_batches(max_chunksize=self._batch_size):
            self.rows += batch.num_rows
            yield batch


def _offer(tables: queue.Queue[_Item], item: _Item, stop: threading.Event) -> bool:
    """Put ``item`` once there is room; ``False`` if the caller stopped reading first."""
    while not stop.is_set():
        try:
            tables.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False
