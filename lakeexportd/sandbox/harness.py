"""``Sandbox``: the real server in a background thread, for tests (a test double that ships
with the library), with ground-truth accessors to compare a lake against.

    with Sandbox.start(seed=1, preload=1000) as sb:
        client = httpx.Client(base_url=sb.url)
        sb.inject("cut_after_rows", rows=10, path="/query-stream")
        expected = sb.arrow("TRANSACTION_FLATTENED")
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pyarrow as pa

from lakeexportd.sandbox.expected import ARROW_TYPES
from lakeexportd.sandbox.faults import Fault
from lakeexportd.sandbox.server import Settings, TLSFiles, bind, build, serve
from lakeexportd.sandbox.sources import StreamSource, TableSource


class Sandbox:
    """A running sandbox server bound to 127.0.0.1 on its own event-loop thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = build(settings)
        self.catalog = self.app.catalog
        # What ARROW_TYPES describes: a column added or retyped later needs its type named.
        self._initial_types = {(s.name, c.name): c.type for s in self.catalog.sources.values()
                               for c in s.columns}
        self._sock = bind(settings.host, settings.port)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"{'https' if settings.tls else 'http'}://{self.host}:{self.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._shutdown: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sandbox-server", daemon=True)

    @classmethod
    def start(cls, *, port: int = 0, seed: int = 1, rate: float = 0.0, preload: int = 0,
              preload_days: float = 7.0, partitions: int = 4, max_disorder_ms: int = 5_000,
              user: str | None = None, password: str | None = None,
              faults: list[Fault] | None = None, clock: Callable[[], float] = time.time,
              tls: TLSFiles | None = None, max_push_queries: int = 100,
              ) -> Sandbox:
        """Build, preload and start a sandbox; returns once it accepts requests."""
        settings = Settings(
            port=port, seed=seed, rate=rate, preload=preload, preload_days=preload_days,
            partitions=partitions, max_disorder_ms=max_disorder_ms,
            credentials=(user, password or "") if user else None, faults=list(faults or []),
            clock=clock, tls=tls, max_push_queries=max_push_queries,
        )
        sandbox = cls(settings)
        sandbox._thread.start()
        if not sandbox.app.started.wait(timeout=15):
            sandbox.stop()
            raise RuntimeError(f"sandbox did not start: {sandbox._error!r}")
        return sandbox

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start() and stop()
            self._error = exc
        finally:
            loop.close()

    async def _main(self) -> None:
        self._shutdown = asyncio.Event()
        await serve(self.app, self._sock, self._shutdown, self.settings.tls)

    def stop(self) -> None:
        if self._loop is not None and self._shutdown is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._shutdown.set)
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- steering ---------------------------------------------------------------------------

    def inject(self, kind: str, **params: Any) -> Fault:
        """Add a fault (same keys as ``POST /_sandbox/faults``); count defaults to 1."""
        fault = Fault.from_dict({"kind": kind, **params})
        self.app.faults.add(fault)
        return fault

    def clear_faults(self) -> None:
        self.app.faults.clear()

    def generate(self, rows: int, rowtime_ms: tuple[int, int] | None = None) -> int:
        return self.app.feeder.generate(rows, rowtime_ms)

    def counts(self) -> dict[str, int]:
        return self.catalog.counts()

    def add_partition(self, stream: str) -> int:
        """Add a partition to a stream's topic, as Kafka can mid-run; returns its index.
        Later rows hash over the new count (some keys move); running push queries read it
        from offset 0."""
        return self.catalog.add_partition(stream)

    def end_queries(self, how: str = "end") -> int:
        """End every running push query and stream pull as a ksqlDB restart does: ``end``
        (the body ends as a completed query's) or ``drop`` (the connection closes mid-body).
        Returns how many were running."""
        if self._loop is None:
            raise RuntimeError("the sandbox is not running")

        async def end() -> int:
            return self.app.end_queries(how)

        return asyncio.run_coroutine_threadsafe(end(), self._loop).result(timeout=15)

    # -- ground truth -----------------------------------------------------------------------

    def rows(self, source: str) -> list[dict[str, Any]]:
        """Every row of a stream in append order: ROWTIME, ROWPARTITION, ROWOFFSET, then its
        columns.

        Values use the sandbox's Python forms (TIMESTAMP epoch ms, DATE epoch days, TIME ms of
        the day, DECIMAL ``Decimal``, BYTES ``bytes``).
        """
        stream = self.catalog.stream(source)
        with self.catalog.lock:
            count = len(stream.rows)
            partitions = [0] * count
            offsets = [0] * count
            for p, indexes in enumerate(stream.by_partition):
                for offset, i in enumerate(indexes):
                    partitions[i] = p
                    offsets[i] = offset
            columns = list(stream.columns)
            return [
                {"ROWTIME": stream.rowtimes[i], "ROWPARTITION": partitions[i],
                 "ROWOFFSET": offsets[i], **{c.name: c.read(stream.rows[i]) for c in columns}}
                for i in range(count)
            ]

    def table(self, name: str) -> list[dict[str, Any]]:
        """The table's current rows in key order, with ROWTIME."""
        table = self.catalog.table(name)
        with self.catalog.lock:
            columns = list(table.columns)
            return [{"ROWTIME": rowtime, **{c.name: c.read(stored) for c in columns}}
                    for stored, rowtime in table.snapshot()]

    def arrow(self, source: str, changed: dict[str, pa.DataType] | None = None) -> pa.Table:
        """Ground truth as Arrow, typed as lakeexportd must type it (``expected.ARROW_TYPES``).

        ``changed`` names the expected Arrow type of each column added or retyped since the
        sandbox started; such a column without one is an error rather than a guess.
        """
        target = self.catalog.sources[source]
        rows = self.rows(source) if isinstance(target, StreamSource) else self.table(source)
        assert isinstance(target, StreamSource | TableSource)
        fields = [pa.field("ROWTIME", pa.int64())]
        arrays = [pa.array([r["ROWTIME"] for r in rows], pa.int64())]
        for c in target.columns:
            if changed and c.name in changed:
                arrow_type = changed[c.name]
            elif self._initial_types.get((source, c.name)) == c.type:
                arrow_type = ARROW_TYPES[source][c.name]
            else:
                raise KeyError(f"{source}.{c.name} was added or retyped ({c.type}): "
                               "pass its expected Arrow type in changed=")
            fields.append(pa.field(c.name, arrow_type, metadata={"ksql_type": str(c.type)}))
            arrays.append(pa.array([_arrow_value(arrow_type, r[c.name]) for r in rows],
                                   arrow_type))
        return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _arrow_value(arrow_type: pa.DataType, value: Any) -> Any:
    """A stored value in the form ``pa.array`` takes for ``arrow_type``."""
    if value is None:
        return None
    if isinstance(arrow_type, pa.MapType):
        return [(k, _arrow_value(arrow_type.item_type, v)) for k, v in value.items()]
    if isinstance(arrow_type, pa.ListType):
        return [_arrow_value(arrow_type.value_type, v) for v in value]
    if isinstance(arrow_type, pa.StructType):
        return {f.name: _arrow_value(f.type, value.get(f.name)) for f in arrow_type}
    if pa.types.is_time(arrow_type):  # millis of the day, whatever unit the type counts in
        return (dt.datetime.min + dt.timedelta(milliseconds=value)).time()
    return value
