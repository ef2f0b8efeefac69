"""What the lake holds: ``MetadataReader`` (per-feed facts) and ``MetadataAnalyzer`` (reports, CSV).

Read-only, and only through ``MetadataStore.load``: a ``_metadata.json`` that cannot be used is
reported (its ``LakeStateError`` names the file and the fix) and never touched. Feeds are found
on disk (``streams/*``, ``tables/*``) and in the registry (a registered feed may not have
exported yet); the registry supplies each feed's state.

Freshness is the age of the newest data: for a stream, now minus the largest ``max_event_ms``
of its listed files; for a table, now minus the current version's ``created``. Lag is what
``lakeexportd_lag_seconds`` reports: now minus the watermark (streams) or minus the current
version's scan start (tables).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Literal

from lakeexportd.audit import report_format  # renderers live apart: one idea per module
from lakeexportd.audit.summaries import FeedAbout, FeedSummary, LakeStatistics, PartitionInfo
from lakeexportd.errors import LakeStateError
from lakeexportd.feeds.registry import RegistryFiles, UnknownFeed, check_name
from lakeexportd.lake import layout
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import FeedMetadata, StreamMetadata, TableMetadata
from lakeexportd.lake.storage import Storage, open_storage

Format = Literal["table", "markdown", "json", "html"]
FORMATS: tuple[Format, ...] = ("table", "markdown", "json", "html")


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S.%f}"[:-3] + "Z"


def _parse_iso(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_of(doc: FeedMetadata) -> dict[str, Any]:
    """The feed's table format and, for Delta, the log version ``_metadata.json`` summarises."""
    if doc.extra.get("format") != "delta":
        return {"format": "parquet", "delta_version": None}
    version = doc.extra.get("delta_version")
    return {"format": "delta", "delta_version": version if isinstance(version, int) else None}


class MetadataReader:
    """Reads every feed's metadata under ``lake_root`` as of ``now``."""

    def __init__(self, lake_root: Path, *, now: dt.datetime,
                 store: MetadataStore | None = None, storage: Storage | None = None) -> None:
        self.root = lake_root
        self.now = now
        self.store = store or MetadataStore(storage or open_storage(lake_root))
        self.registry = RegistryFiles(lake_root, self.store.storage)

    def feeds(self) -> dict[str, layout.Kind]:
        """Every feed on disk or in the registry, by name, with its kind."""
        found: dict[str, layout.Kind] = {}
        for name in self.registry.names():
            try:
                entry = self.registry.read(name)
            except LakeStateError:
                continue  # still listed from disk if it has data; `feeds list` reports the file
            if entry is not None:
                found[name] = entry.feed.kind
        for kind, folder in (("stream", "streams"), ("table", "tables")):
            for item in self.store.storage.list_dir(self.root / folder):
                if item.is_dir and not item.name.startswith("."):
                    found.setdefault(item.name, kind)  # type: ignore[arg-type]
        return dict(sorted(found.items()))

    def _kind(self, feed: str) -> layout.Kind:
        check_name(feed)
        kinds = self.feeds()
        if feed not in kinds:
            raise UnknownFeed(f"unknown feed {feed!r}: no data under "
                              f"{self.store.storage.show(self.root)} and no registry entry; "
                              f"feeds: {', '.join(kinds) or '(none)'}")
        return kinds[feed]

    def feed_dir(self, feed: str) -> Path:
        """The folder of a feed on disk or in the registry; ``UnknownFeed`` otherwise."""
        return layout.feed_dir(self.root, self._kind(feed), feed)

    def read_metadata(self, feed: str) -> FeedMetadata | None:
        """The feed's document (None before its first export); unusable is ``LakeStateError``."""
        return self.store.load(self.feed_dir(feed))

    def _state(self, feed: str) -> str:
        try:
            entry = self.registry.read(feed)
        except LakeStateError:
            return "unreadable"
        return entry.state if entry is not None else "unregistered"

    def summary(self, feed: str) -> FeedSummary:
        kind = self._kind(feed)
        try:
            doc = self.store.load(layout.feed_dir(self.root, kind, feed))
        except LakeStateError as exc:
            return FeedSummary(feed, kind, "?", self._state(feed), error=str(exc))
        if doc is None:
            entry = self.registry.read(feed) if self._state(feed) != "unreadable" else None
            source = entry.feed.source if entry else "?"
            return FeedSummary(feed, kind, source, self._state(feed))
        return self._summarize(doc)

    def _summarize(self, doc: FeedMetadata) -> FeedSummary:
        now_ms = (self.now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) / dt.timedelta(seconds=1)
        common: dict[str, Any] = {
            "feed": doc.feed, "kind": doc.kind, "source": doc.source,
            "state": self._state(doc.feed), "records": doc.total_records,
            "size_bytes": doc.total_size_bytes, "last_export": doc.last_export,
            "last_status": doc.last_status, **format_of(doc),
        }
        if isinstance(doc, StreamMetadata):
            ends = [f.max_event_ms for p in doc.partitions for f in p.files
                    if f.max_event_ms is not None]
            newest = max(ends) if ends else None
            mark = doc.watermark_ms
            return FeedSummary(
                **common, files=sum(len(p.files) for p in doc.partitions),
                partitions=len(doc.partitions), newest_data=iso_ms(newest),
                freshness_s=None if newest is None else round(now_ms - newest / 1000, 3),
                lag_s=None if mark is None else round(now_ms - mark / 1000, 3),
                watermark=iso_ms(mark),
                offsets=None if doc.offsets is None else {
                    str(p): o for p, o in sorted(doc.offsets.partitions.items())})
        current = doc.current
        created = _parse_iso(current.created) if current else None
        started = next((_parse_iso(e.started) for e in reversed(doc.exports)
                        if e.version == doc.current_version and e.status == "success"), None)
        scan = started or created
        return FeedSummary(
            **common, files=len(current.files) if current else 0, versions=len(doc.versions),
            current_version=doc.current_version,
            newest_data=current.created if current else None,
            freshness_s=None if created is None else (self.now - created).total_seconds(),
            lag_s=None if scan is None else (self.now - scan).total_seconds())

    def list_all_metadata(self) -> list[FeedSummary]:
        return [self.summary(name) for name in self.feeds()]

    def get_partition_info(self, feed: str) -> list[PartitionInfo]:
        doc = self.read_metadata(feed)
        if isinstance(doc, StreamMetadata):
            out = []
            for p in doc.partitions:
                lows = [f.min_event_ms for f in p.files if f.min_event_ms is not None]
                highs = [f.max_event_ms for f in p.files if f.max_event_ms is not None]
                out.append(PartitionInfo(feed, "stream", p.path, p.records, p.size_bytes,
                                         len(p.files), iso_ms(min(lows) if lows else None),
                                         iso_ms(max(highs) if highs else None)))
            return out
        if isinstance(doc, TableMetadata):
            return [PartitionInfo(feed, "table", v.path, v.records, v.size_bytes, len(v.files),
                                  created=v.created, current=v.version == doc.current_version)
                    for v in doc.versions]
        return []

    def get_statistics(self, summaries: list[FeedSummary] | None = None) -> LakeStatistics:
        rows = self.list_all_metadata() if summaries is None else summaries
        aged = [s for s in rows if s.freshness_s is not None
                and s.state in ("active", "unregistered")]
        stalest = max(aged, key=lambda s: s.freshness_s or 0.0, default=None)
        return LakeStatistics(
            feeds=len(rows), streams=sum(s.kind == "stream" for s in rows),
            tables=sum(s.kind == "table" for s in rows),
            records=sum(s.records for s in rows), size_bytes=sum(s.size_bytes for s in rows),
            files=sum(s.files for s in rows), partitions=sum(s.partitions or 0 for s in rows),
            versions=sum(s.versions or 0 for s in rows),
            failed_last_run=[s.feed for s in rows if s.last_status == "failed"],
            unreadable=[s.feed for s in rows if s.error],
            stalest_feed=stalest.feed if stalest else None,
            stalest_freshness_s=stalest.freshness_s if stalest else None)

    def rows_per_day(self) -> dict[str, dict[str, int]]:
        """Stream name -> ``YYYY-MM-DD`` -> records (from the day partitions; bad feeds skipped)."""
        out: dict[str, dict[str, int]] = {}
        for name, kind in self.feeds().items():
            if kind != "stream":
                continue
            try:
                doc = self.store.load(layout.feed_dir(self.root, kind, name))
            except LakeStateError:
                continue
            if isinstance(doc, StreamMetadata):
                out[name] = {layout.partition_day(p.path).isoformat(): p.records
                             for p in doc.partitions}
        return out


class MetadataAnalyzer:
    """Reports and CSV exports built from a ``MetadataReader``."""

    def __init__(self, reader: MetadataReader) -> None:
        self.reader = reader

    def generate_report(self, format: Format = "table",
                        about: Mapping[str, FeedAbout] | None = None) -> str:
        """The report of every feed; ``about`` (from the configuration: the lake does not
        hold it) adds description, owner and tags to the HTML and JSON reports."""
        summaries = self.reader.list_all_metadata()
        stats = self.reader.get_statistics(summaries)
        about = about or {}
        if format == "json":
            return json.dumps({"generated": self.reader.now.isoformat(),
                               "lake": str(self.reader.root), "statistics": asdict(stats),
                               "feeds": [asdict(s) | {"about": asdict(about[s.feed])
                                                      if s.feed in about else None}
                                         for s in summaries]}, indent=2)
        if format == "markdown":
            return report_format.markdown(summaries, stats, self.reader.now)
        if format == "html":
            return report_format.html(summaries, stats, self.reader.rows_per_day(),
                                      self.reader.now, str(self.reader.root), about)
        if format == "table":
            return report_format.text(summaries, stats)
        raise ValueError(f"unknown report format {format!r}; use one of {', '.join(FORMATS)}")

    def export_to_csv(self, path: Path, partitions: bool = False) -> int:
        """Write one row per feed (or per partition/version); returns the number of rows."""
        if partitions:
            rows: list[Any] = [info for name in self.reader.feeds()
                               for info in self._partitions_or_empty(name)]
            columns = [f.name for f in fields(PartitionInfo)]
        else:
            rows = self.reader.list_all_metadata()
            columns = [f.name for f in fields(FeedSummary)]
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.DictWriter(out, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                values = asdict(row)
                if values.get("offsets") is not None:  # one cell: {"0": 41, "1": 7}
                    values["offsets"] = json.dumps(values["offsets"])
                writer.writerow(values)
        return len(rows)

    def _partitions_or_empty(self, feed: str) -> list[PartitionInfo]:
        try:
            return self.reader.get_partition_info(feed)
        except LakeStateError:
            return []
