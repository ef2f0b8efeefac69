"""What following the lake costs a stream feed: the catalog's sync after each run, over many runs.

A stream is exported ``--runs`` times against the sandbox (``--rows`` new rows per run, one
minute apart), with a SQLite catalog (or ``--postgres URL``) following each commit, as the
daemon does. Each sync (``LakeCatalog.sync``: read the table, read ``_metadata.json``, diff,
commit one snapshot) is timed; the table is then read by pyiceberg and must hold every row.
Manifests are merged (``commit.manifest-merge.enabled``), so a sync reads a bounded number of
them however many runs came before: the figures per decile of runs show whether it stays flat.

    python -m benchmarks.catalog_sync                  # 600 runs x 20 rows
    python -m benchmarks.catalog_sync --runs 100       # quick
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lakeexportd.catalog.iceberg import LakeCatalog, SyncResult
from lakeexportd.config.model import CatalogSettings, Feed, Schedule
from lakeexportd.export.exporter import DataLakeExporter
from lakeexportd.ksqldb.client import KsqlDBClient
from lakeexportd.ksqldb.curl_stream import CurlTransport
from lakeexportd.lake.configured import ConfiguredLake
from lakeexportd.lake.storage import LOCAL
from lakeexportd.sandbox import Sandbox

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


class Timed(LakeCatalog):
    """The catalog the exporter follows, with each sync's wall time kept."""

    durations: list[float]

    def sync(self, feed: Feed) -> SyncResult:
        began = time.perf_counter()
        try:
            return super().sync(feed)
        finally:
            self.durations.append(time.perf_counter() - began)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=600)
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--postgres", help="a SQLAlchemy URL instead of a SQLite file")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="catalog-sync-"))
    root = work / "lake"
    uri = args.postgres or f"sqlite:///{work / 'catalog.db'}"
    catalog = Timed(CatalogSettings(uri=uri, timeout=60), ConfiguredLake(LOCAL, root, str(root)))
    catalog.durations = []
    feed = Feed(name="tx", source="TRANSACTION_FLATTENED", kind="stream",
                schedule=Schedule(every=60), settle_delay=0, compaction=None)
    ms = int(START.timestamp() * 1000)
    with Sandbox.start(seed=7, preload=0) as sandbox:
        client = KsqlDBClient(CurlTransport(sandbox.url))
        exporter = DataLakeExporter(client, root, catalog=catalog)
        exporter.export(feed, START)  # the first run commits the empty document
        catalog.durations.clear()
        began = time.perf_counter()
        for run in range(1, args.runs + 1):
            sandbox.generate(args.rows, rowtime_ms=(ms + (run - 1) * 60_000 + 1,
                                                    ms + run * 60_000))
            result = exporter.export(feed, START + dt.timedelta(minutes=run))
            if result.catalog_behind:
                print(f"run {run}: catalog behind: {result.catalog_behind}", file=sys.stderr)
                return 1
        total = time.perf_counter() - began
        client.close()
        expected = len(sandbox.rows("TRANSACTION_FLATTENED"))
    table = catalog.load(feed)
    assert table is not None
    rows = table.scan(selected_fields=("TRANSACTION_ID",)).to_arrow().num_rows
    manifests = len(table.current_snapshot().manifests(table.io))  # type: ignore[union-attr]
    metadata = sum(p.stat().st_size for p in (root / "_catalog").rglob("*") if p.is_file())
    durations = catalog.durations[1:]  # each run's post-commit sync (the first also creates)
    print(f"{args.runs} runs x {args.rows} rows, catalog {uri.split(':')[0]}: "
          f"{total:.1f} s in all; table rows {rows:,} (sandbox {expected:,}); "
          f"{manifests} manifests in the current snapshot; "
          f"Iceberg metadata on disk {metadata / 1024:.0f} KiB")
    tenth = max(1, len(durations) // 10)
    print("runs        sync p50   sync p95")
    for start in range(0, len(durations), tenth):
        part = sorted(durations[start:start + tenth])
        p95 = part[min(len(part) - 1, round(0.95 * (len(part) - 1)))]
        print(f"{start + 2:>4}-{start + len(part) + 1:<5} {statistics.median(part) * 1000:7.1f} ms"
              f" {p95 * 1000:7.1f} ms")
    return 0 if rows == expected else 1


if __name__ == "__main__":
    sys.exit(main())
