"""PushQuery: a running push query's rows, handed over as soon as they arrive.

A push query never ends by itself: rows come one HTTP chunk each when they are produced, and
nothing at all while the source is quiet (ksqlDB sends no keep-alives). So, unlike
``QueryResult``:

- the body has no read timeout (``Transport.open(idle_body=True)``: TCP keep-alive notices a
  vanished server instead), and the reader flushes the decoder when the transport has
  nothing more for the moment (``iter_raw(idle_marks=True)``) and the first byte waiting
  came ``LINGER_S`` ago or more, so a lone row is handed over within a fraction of a second,
  rows of a slow stream are decoded a few at a time, and a fast one in large blocks;
- the caller waits with a timeout (``next_batch``), so it can rotate files while no rows come;
- how the body ended is part of the answer: ``PushQueryEnded`` when ksqlDB ended it on a row
  boundary (``/close-query``, a restart), ``KsqlDBStreamError`` when it broke (connection
  lost, cut mid-row, ksqlDB's error line). Either way every row handed over is whole, and
  its ROWPARTITION/ROWOFFSET say exactly where it was: the caller reconnects from there.

At most ``read_ahead`` decoded tables wait between the reader thread and the caller; a full
queue stops the reader, so libcurl stops reading the socket and TCP slows ksqlDB down
(back-pressure rather than an unbounded queue).
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Literal, TypeAlias

import pyarrow as pa
import structlog

from lakeexportd.errors import (
    ExportAborted,
    KsqlDBProtocolError,
    KsqlDBStreamError,
    LakeExportError,
    PushQueryEnded,
)
from lakeexportd.ksqldb.curl_stream import TransportFailure
from lakeexportd.ksqldb.framing import DelimitedStream, QueryHeader, StreamedRowStream
from lakeexportd.ksqldb.transport import Response

log = structlog.get_logger(__name__)

State = Literal["running", "ended", "broken", "closed"]
READ_AHEAD_TABLES = 4
LINGER_S = 0.1
"""How long bytes that came wait for more before a quiet moment decodes them. ksqlDB sends
one chunk per row, so at a low rate every row came alone and was decoded as a table of its
own: 20 push queries of 100 rows/s each cost 53 % of a core, 28 % with this linger
(``python -m benchmarks.push_linger``). It adds at most LINGER_S plus one
transport wake (0.2 s) to a lone row's way into a file, against rotations of seconds."""
_END = object()  # the reader's last item after a clean end of the body
_Item: TypeAlias = "pa.Table | BaseException | object"


class PushQuery:
    """One push query: ``query_id`` and ``schema`` once open, then ``next_batch``.

    ``state`` is ``"running"`` until the end is handed over: ``"ended"`` (ksqlDB ended the
    body cleanly), ``"broken"`` (it broke), or ``"closed"`` (``close()`` from this side).
    """

    def __init__(
        self,
        response: Response,
        decoder: DelimitedStream | StreamedRowStream,
        *,
        close_query: Callable[[str], None],
        read_ahead: int = READ_AHEAD_TABLES,
        cancel: threading.Event | None = None,
        linger: float = LINGER_S,
    ) -> None:
        self.response = response
        self._linger = linger
        self.http_version = response.http_version
        self.state: State = "running"
        self.rows = 0  # rows handed to the caller
        self._decoder = decoder
        self._close_query = close_query
        self._cancel = cancel
        self._chunks = response.iter_raw(idle_marks=True)
        self._tables: queue.Queue[_Item] = queue.Queue(read_ahead)
        self._ready: collections.deque[pa.RecordBatch] = collections.deque()
        self._stop = threading.Event()
        self._reader: threading.Thread | None = None
        self._end: BaseException | None = None
        self._deferred: BaseException | None = None  # an end that came with the header

    @property
    def header(self) -> QueryHeader:
        assert self._decoder.header is not None
        return self._decoder.header

    @property
    def query_id(self) -> str | None:
        return self.header.query_id

    @property
    def schema(self) -> pa.Schema:
        assert self._decoder.decoder is not None
        return self._decoder.decoder.schema

    @property
    def what(self) -> str:
        return self._decoder.what

    def start(self) -> None:
        """Read the header line (the caller's thread), then start the reader thread."""
        pending: list[pa.Table] = []
        try:
            for chunk in self._chunks:
                if self._cancel is not None and self._cancel.is_set():
                    raise ExportAborted(f"{self.what}: stopped by shutdown before the header")
                pending.extend(self._decoder.feed(chunk))
                if self._decoder.header is not None:
                    break
            else:
                list(self._decoder.finish())  # raises: the body ended before its header line
                raise KsqlDBStreamError(f"{self.what}: the answer ended before its header")
        except TransportFailure as exc:
            raise KsqlDBStreamError(
                f"{self.what}: the connection broke before the header line ({exc})"
            ) from exc
        except (KsqlDBStreamError, KsqlDBProtocolError) as exc:
            # Rows and their end came in the header's chunk: hand both over in order.
            if self._decoder.header is None:
                raise
            self._deferred = _whole_rows_kept(exc, self._decoder.rows)
        for table in pending:
            self._ready.extend(table.to_batches())
        if self._deferred is None:
            self._reader = threading.Thread(target=self._read, name="ksqldb-push", daemon=True)
            self._reader.start()

    def next_batch(self, timeout: float | None = None) -> pa.RecordBatch | None:
        """The next rows that arrived, or ``None`` if none came within ``timeout`` seconds.

        Raises ``PushQueryEnded`` once ksqlDB ended the body cleanly and every row was handed
        over, ``KsqlDBStreamError`` once it broke (after the whole rows before the break),
        and the same again on every later call.
        """
        if self._ready:
            return self._hand_over(self._ready.popleft())
        if self._end is not None:
            raise self._end
        if self._deferred is not None:
            self.state, self._end = "broken", self._deferred
            raise self._end
        try:
            item = self._tables.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, pa.Table):
            self._ready.extend(item.to_batches())
            return self._hand_over(self._ready.popleft()) if self._ready else None
        if item is _END:
            self.state = "ended"
            self._end = PushQueryEnded(
                f"{self.what}: ksqlDB ended the body after {self._decoder.rows} rows, on a "
                "row boundary (/close-query or a restart); every row it sent was handed over"
            )
        else:
            assert isinstance(item, BaseException)
            self.state = "broken"
            self._end = item
        raise self._end

    def _hand_over(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        self.rows += batch.num_rows
        return batch

    def close_query(self) -> None:
        """Ask ksqlDB to end the query (``POST /close-query``); the body then ends by itself
        after the rows already sent, which ``next_batch`` still hands over."""
        if self.query_id is not None:
            self._close_query(self.query_id)

    def close(self) -> None:
        """``/close-query`` while still running, then end the body from this side.

        Not sent once the body has ended or broken (nothing runs on the server to close). A
        failed ``/close-query`` is only logged: closing the connection ends the query on the
        server too. Rows not yet handed over are dropped (they are after the caller's
        last offsets, so the next query reads them again).
        """
        body_open = self._reader is not None and self._reader.is_alive()
        if self.state == "running" and body_open and self.query_id is not None:
            try:
                self._close_query(self.query_id)
            except LakeExportError as exc:
                log.warning("ksqldb.close_query_failed", query_id=self.query_id, error=str(exc))
        if self.state == "running":
            self.state = "closed"
            self._end = PushQueryEnded(f"{self.what}: closed by lakeexportd")
        self._stop.set()
        self.response.close()
        if self._reader is not None:
            self._reader.join(timeout=1.0)

    # -- the reader thread ------------------------------------------------------------------

    def _read(self) -> None:
        """Decode chunk by chunk, flushing whenever nothing more has arrived; then the end."""
        try:
            try:
                # When the first byte not decoded yet came (start() may have left some).
                waiting_since: float | None = time.monotonic()
                for chunk in self._chunks:
                    if self._stop.is_set():
                        return
                    if chunk:
                        if waiting_since is None:
                            waiting_since = time.monotonic()
                        tables = self._decoder.feed(chunk)
                    elif waiting_since is not None and \
                            time.monotonic() - waiting_since >= self._linger:
                        tables, waiting_since = self._decoder.flush(), None
                    else:
                        continue  # nothing waits, or not for long: more may come with it
                    if not self._offer_all(tables):
                        return
            except TransportFailure as exc:
                # The whole lines that came before the break are rows like any other.
                if not self._offer_all(self._decoder.flush()):
                    return
                raise KsqlDBStreamError(
                    f"{self.what}: the connection broke after {self._decoder.rows} rows "
                    f"({exc}); the whole rows before the break were handed over"
                ) from exc
            for table in self._decoder.finish():
                if not self._offer(table):
                    return
            self._offer(_END)
        except KsqlDBStreamError as exc:  # cut mid-row, or ksqlDB's error line
            self._offer(_whole_rows_kept(exc, self._decoder.rows))
        except BaseException as exc:  # handed to the caller by next_batch()
            self._offer(exc)

    def _offer_all(self, tables: Iterator[pa.Table]) -> bool:
        return all(self._offer(table) for table in tables)

    def _offer(self, item: _Item) -> bool:
        """Queue ``item`` once there is room; ``False`` if the query was closed first."""
        while not self._stop.is_set():
            try:
                self._tables.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False


def _whole_rows_kept(exc: BaseException, rows: int) -> BaseException:
    """The decoder's error, saying what holds for a push query: the whole rows count."""
    if not isinstance(exc, KsqlDBStreamError) or isinstance(exc.__cause__, TransportFailure):
        return exc  # _read's own message
    text = str(exc).removesuffix("; the rows received are not used")
    error = KsqlDBStreamError(
        f"{text}; the {rows} whole rows before it were handed over", error_code=exc.error_code
    )
    error.__cause__ = exc
    return error
