"""``lakeexportd metadata ACTION``: what the lake holds, read from each feed's ``_metadata.json``.

``list`` (one line per feed), ``show FEED``, ``stats`` (lake-wide), ``partitions FEED`` (day
partitions or table versions), ``report [--format table|markdown|json|html] [-o FILE]`` and
``export-csv FILE [--partitions]``. With a ``catalog:``, ``list`` and ``show`` also give each
Parquet feed's Iceberg table state (level, behind: N missing, M extra; asked within
catalog.timeout, else "catalog unreachable: <reason>", never a failure of the command), and
the report shows each feed's description, owner and tags. Read-only: a broken
``_metadata.json`` is reported with the fix and left as it is. Exit codes: 0 ok; 1 a feed's
metadata is unreadable; 2 unknown feed or bad name; 78 invalid configuration.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lakeexportd.audit.report import FORMATS, MetadataAnalyzer, MetadataReader
from lakeexportd.audit.report_format import HEADERS, NUMERIC, stats_lines, summary_row
from lakeexportd.audit.summaries import FeedAbout
from lakeexportd.audit.text_table import human_age, human_bytes, render
from lakeexportd.cli.catalog_states import configured_feeds, feed_states, long_states, state_cell
from lakeexportd.cli.options import add_config_argument, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.config.model import Config
from lakeexportd.errors import EX_FAILED, EX_OK
from lakeexportd.lake.configured import lake_of
from lakeexportd.lake.metadata_model import FeedMetadata, StreamMetadata
from lakeexportd.lake.tiering import DEFAULT_TIER, shown_bytes_per_tier, shown_tier


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    meta = sub.add_parser("metadata", help="show what the lake holds: feeds, partitions, reports",
                          description=plain(__doc__),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = meta.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, text: str, *, json_flag: bool = True) -> argparse.ArgumentParser:
        parser = actions.add_parser(name, help=text, description=text)
        add_config_argument(parser)
        if json_flag:
            parser.add_argument("--json", action="store_true", help="print JSON for scripts")
        parser.set_defaults(handler=run)
        return parser

    action("list", "one line per feed: records, size, last export, freshness, lag (and the "
           "catalog's state with a `catalog:`)")
    action("show", "one feed's summary, recent exports (and catalog state)").add_argument(
        "feed", metavar="FEED")
    action("stats", "lake-wide statistics")
    action("partitions", "a stream's day partitions or a table's versions").add_argument(
        "feed", metavar="FEED")
    report = action("report", "a report of every feed", json_flag=False)
    report.add_argument("--format", choices=FORMATS, default="table")
    report.add_argument("-o", "--output", type=Path, help="write to FILE instead of stdout")
    csv = action("export-csv", "write one CSV row per feed (or per partition)", json_flag=False)
    csv.add_argument("file", type=Path, metavar="FILE")
    csv.add_argument("--partitions", action="store_true",
                     help="one row per day partition / table version instead of per feed")


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2))


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    lake = lake_of(config.lake)
    reader = MetadataReader(lake.root, now=dt.datetime.now(dt.UTC), storage=lake.storage)
    analyzer = MetadataAnalyzer(reader)
    if args.action == "report":
        text = analyzer.generate_report(args.format, about=about_feeds(config))
        if args.output:
            args.output.write_text(text, encoding="utf-8")
            print(f"wrote {args.format} report to {args.output}", file=sys.stderr)
        else:
            print(text, end="" if text.endswith("\n") else "\n")
        return _status(reader)
    if args.action == "export-csv":
        count = analyzer.export_to_csv(args.file, partitions=args.partitions)
        print(f"wrote {count} rows to {args.file}", file=sys.stderr)
        return _status(reader)
    if args.action == "partitions":
        infos = reader.get_partition_info(args.feed)
        if args.json:
            _dump([asdict(i) for i in infos])
            return EX_OK
        headers: tuple[str, ...] = ("PARTITION", "RECORDS", "SIZE", "FILES", "FIRST EVENT",
                                    "LAST EVENT", "CREATED", "CURRENT")
        rows: list[tuple[object, ...]] = [
            (i.partition, f"{i.records:,}", human_bytes(i.size_bytes), i.files, i.min_event,
             i.max_event, i.created, None if i.current is None else ("yes" if i.current else ""))
            for i in infos]
        tiers = _partition_tiers(reader.read_metadata(args.feed))
        if tiers:  # a tiered stream: which class each day is in
            headers += ("TIER",)
            rows = [(*row, tiers.get(str(row[0]), DEFAULT_TIER)) for row in rows]
        print(render(headers, rows, right=("RECORDS", "SIZE", "FILES")))
        return EX_OK
    if args.action == "show":
        return _show(reader, args.feed, args.json, config)
    summaries = reader.list_all_metadata()
    if args.action == "stats":
        stats = reader.get_statistics(summaries)
        if args.json:
            _dump(asdict(stats))
        else:
            print("\n".join(stats_lines(stats)))
    else:
        states = feed_states(config, configured_feeds(config))  # None without a catalog
        if args.json:
            _dump([asdict(s) | ({"catalog": states.get(s.feed)} if states is not None else {})
                   for s in summaries])
        elif states is None:
            print(render(HEADERS, [summary_row(s) for s in summaries], right=NUMERIC))
        else:
            print(render((*HEADERS, "CATALOG"),
                         [(*summary_row(s), state_cell(states.get(s.feed)))
                          for s in summaries], right=NUMERIC))
            for line in long_states({n: st["state"] for n, st in states.items()}, prefix=True):
                print(line)
    for s in summaries:
        if s.error:
            print(f"lakeexportd metadata: {s.feed}: {s.error}", file=sys.stderr)
    return EX_FAILED if any(s.error for s in summaries) else EX_OK


def about_feeds(config: Config) -> dict[str, FeedAbout]:
    """Description, owner and tags of each configured feed, for the report."""
    return {f.name: FeedAbout(f.description, f.owner, f.tags) for f in configured_feeds(config)}


def _partition_tiers(doc: FeedMetadata | None) -> dict[str, str]:
    """Partition -> its class, for a stream with at least one file moved (else empty)."""
    if not isinstance(doc, StreamMetadata) or set(doc.bytes_per_tier()) <= {None}:
        return {}
    return {p.path: shown_tier(p.tier) for p in doc.partitions}


def _bytes_per_tier(doc: FeedMetadata | None) -> dict[str, int] | None:
    """A stream's listed bytes by storage class (``default``: the store's default class)."""
    if not isinstance(doc, StreamMetadata):
        return None
    return shown_bytes_per_tier(doc.bytes_per_tier())


def _status(reader: MetadataReader) -> int:
    broken = [s for s in reader.list_all_metadata() if s.error]
    for s in broken:
        print(f"lakeexportd metadata: {s.feed}: {s.error}", file=sys.stderr)
    return EX_FAILED if broken else EX_OK


def _show(reader: MetadataReader, feed: str, as_json: bool, config: Config) -> int:
    doc = reader.read_metadata(feed)  # raises on a broken file: exit 1 with the fix
    summary = reader.summary(feed)
    exports = list(doc.exports[-10:]) if doc else []
    tiers = _bytes_per_tier(doc)
    settings = {f.name: f for f in configured_feeds(config)}.get(feed)
    states = feed_states(config, [settings]) if settings is not None else None
    catalog = states.get(feed) if states is not None else None
    about = FeedAbout(settings.description, settings.owner, settings.tags) if settings else None
    if as_json:
        _dump({**asdict(summary), "bytes_per_tier": tiers, "catalog": catalog,
               "about": asdict(about) if about else None,
               "recent_exports": [asdict(e) for e in exports],
               "schema": [asdict(c) for c in doc.schema] if doc else []})
        return EX_OK
    for key, value in asdict(summary).items():
        if key in ("freshness_s", "lag_s"):
            value = f"{human_age(value)} ({value} s)" if value is not None else None
        elif key == "size_bytes":
            value = f"{human_bytes(value)} ({value:,} bytes)"
        elif key == "offsets" and value is not None:  # a realtime feed's committed point
            value = "realtime, last ROWOFFSET by partition: " + ", ".join(
                f"{p}: {o:,}" for p, o in value.items())
        if value is not None:
            print(f"{key + ':':<17}{value}")
    if about is not None:
        for key, text in (("description", about.description), ("owner", about.owner),
                          ("tags", ", ".join(about.tags))):
            if text:
                print(f"{key + ':':<17}{text}")
    if catalog is not None:
        print(f"{'catalog:':<17}{catalog['table']} {catalog['state']}")
    if tiers:
        print(f"{'tiers:':<17}" + ", ".join(f"{tier} {human_bytes(size)} ({size:,} bytes)"
                                             for tier, size in tiers.items()))
    if doc is not None:
        print(f"{'columns:':<17}{', '.join(c.name for c in doc.schema)}")
    if exports:
        print("recent exports:")
        print(render(("RUN", "STARTED", "STATUS", "RECORDS", "WINDOW/VERSION"),
                     [(e.run_id, e.started, e.status, f"{e.records:,}",
                       f"v{e.version}" if e.version else
                       (f"({e.window.from_ms or 'start'}, {e.window.to_ms}]" if e.window else None))
                      for e in exports], right=("RECORDS",)))
    return EX_OK
