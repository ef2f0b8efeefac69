"""``lakeexportd verify [FEED] [--source]``: reconcile the lake with its metadata, and with ksqlDB.

Offline (always): every listed file exists with the listed size and the row count of its
Parquet footer, and nothing unlisted lies in the feed's folder (``verify.verify_feed``).
Delta feeds are checked against their log (``verify_delta``): every file the log lists exists
with its size and row count, ``_metadata.json`` says what the log says (files, records, bytes,
watermark = the feed's transaction version), and files no commit lists are reported;
``--deep`` also decodes every row group with page checksums verified.
With a ``catalog:``, each Parquet feed's Iceberg table is compared with the lake too: every
file the lake lists is in the table's current snapshot once, no other file is, each exists, the
row counts agree and a table feed's snapshot is its current version (``verify_catalog``).
With ``--source``: streams recount each recent exported ROWTIME window in ksqlDB and report late
rows per window; tables compare the current version's row count with a table scan.

Feeds: the named one, else every feed in the config file, the registry or the lake (archived
feeds are checked offline only, unless named: their source may be gone). Each mismatch is one
line on stdout. Exit codes: 0 consistent; 1 a mismatch or unreadable metadata; 2 unknown feed;
75 ksqlDB unavailable; 78 configuration error.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from lakeexportd.audit import verify, verify_delta, verify_source
from lakeexportd.audit.report import MetadataReader
from lakeexportd.catalog.policy import in_catalog, open_catalog
from lakeexportd.cli.options import add_config_argument, plain
from lakeexportd.config.load import default_config_path, load_config
from lakeexportd.config.model import Config, Feed
from lakeexportd.errors import (
    EX_CONFIG,
    EX_FAILED,
    EX_OK,
    EX_TEMPFAIL,
    CatalogError,
    LakeExportError,
    exit_code,
)
from lakeexportd.feeds.registry import RegistryFiles, UnknownFeed, check_name
from lakeexportd.ksqldb.client import KsqlDBClient, client_from_settings
from lakeexportd.lake import layout
from lakeexportd.lake.configured import ConfiguredLake, lake_of
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_model import StreamMetadata, TableMetadata, current_file_count

if TYPE_CHECKING:
    from lakeexportd.catalog.iceberg import LakeCatalog

_SEVERITY = {EX_OK: 0, EX_TEMPFAIL: 1, EX_FAILED: 2, EX_CONFIG: 3}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("verify", help="check the lake against its metadata (and ksqlDB)",
                            description=plain(__doc__),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("feed", nargs="?", metavar="FEED", help="one feed (default: every feed)")
    parser.add_argument("--source", action="store_true",
                        help="also recount rows in ksqlDB (late rows per stream window)")
    parser.add_argument("--windows", type=int, default=verify_source.DEFAULT_WINDOWS,
                        metavar="N", help="streams: recount the last N exported windows "
                        f"(default {verify_source.DEFAULT_WINDOWS}: all that are kept)")
    parser.add_argument("--deep", action="store_true",
                        help="also decode every row group with page checksums verified "
                        "(reads all data; finds damaged pages the footer cannot show)")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
    parser.set_defaults(handler=run)


def _targets(config: Config, name: str | None) -> list[tuple[str, layout.Kind, Feed | None, bool]]:
    """(name, kind, feed settings if known, archived) of each feed to check."""
    lake = lake_of(config.lake)
    registry = RegistryFiles(lake.root, lake.storage)
    known: dict[str, tuple[layout.Kind, Feed | None, bool]] = {}
    reader = MetadataReader(lake.root, now=_now(), storage=lake.storage)
    for kind_name, kind in reader.feeds().items():
        entry = registry.read(kind_name)
        known[kind_name] = (kind, entry.feed if entry else None,
                            entry is not None and entry.state == "archived")
    for feed in config.feeds:
        known[feed.name] = (feed.kind, feed, known.get(feed.name, (feed.kind, None, False))[2])
    if name is not None:
        if check_name(name) not in known:
            raise UnknownFeed(f"unknown feed {name!r}: not in {config.path}, the registry or "
                              f"the lake; feeds: {', '.join(sorted(known)) or '(none)'}")
        kind, settings, _ = known[name]
        return [(name, kind, settings, False)]  # named explicitly: checked against ksqlDB too
    return [(n, k, f, archived) for n, (k, f, archived) in sorted(known.items())]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config or default_config_path())
    lake = lake_of(config.lake)
    targets = _targets(config, args.feed)
    client: KsqlDBClient | None = client_from_settings(config.ksqldb) if args.source else None
    catalog = open_catalog(config.catalog, lake)
    worst = EX_OK
    results: list[dict[str, Any]] = []
    try:
        for name, kind, feed, archived in targets:
            result = _check(lake, name, kind, feed, client if not archived else None, args,
                            catalog)
            results.append(result)
            worst = max(worst, result["exit"], key=_SEVERITY.__getitem__)
    finally:
        if client is not None:
            client.close()
        if catalog is not None:
            catalog.close()
    if args.json:
        print(json.dumps(results, indent=2))
    return worst


def _check(lake: ConfiguredLake, name: str, kind: layout.Kind, feed: Feed | None,
           client: KsqlDBClient | None, args: argparse.Namespace,
           catalog: LakeCatalog | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"feed": name, "kind": kind, "format": "parquet", "mismatches": [],
                           "windows": [], "exit": EX_OK, "note": None, "catalog": None}

    def say(text: str) -> None:
        if not args.json:
            print(text)

    checked = None
    try:
        root, storage = lake.root, lake.storage
        is_delta = verify_delta.is_delta_feed(root, kind, name, storage=storage)
        if is_delta:  # the Delta log is the truth; _metadata.json is checked against it
            out["format"] = "delta"
            problems = verify_delta.verify_delta_feed(root, kind, name, deep=args.deep,
                                                      storage=storage)
            doc = None if problems else MetadataStore(storage).load(
                layout.feed_dir(root, kind, name))
        else:
            problems = verify.verify_feed(root, kind, name, deep=args.deep, storage=storage)
            doc = MetadataStore(storage).load(layout.feed_dir(root, kind, name))
        if client is not None and doc is not None and problems:
            # Counting rows of missing or damaged files would only add noise: fix those first.
            checked = verify_source.SourceCheck(
                name, skipped="not recounted: fix the problems above first")
        elif client is not None and doc is not None:
            if isinstance(doc, StreamMetadata):
                checked = verify_source.check_stream(
                    client, root, doc, limit=args.windows, storage=storage,
                    retention_days=feed.retention_days if feed else None,
                    timezone=feed.timezone if feed else "UTC")
            elif isinstance(doc, TableMetadata):
                checked = verify_source.check_table(client, doc)
            problems += list(checked.mismatches) if checked else []
        if catalog is not None and feed is not None and in_catalog(feed) and not is_delta:
            out["catalog"] = catalog.name(feed)
            problems += _catalog_problems(catalog, feed)
    except LakeExportError as exc:
        say(f"{name}: {exc}")
        out.update(exit=exit_code(exc), note=str(exc))
        return out
    except (OSError, pa.ArrowException) as exc:  # one feed's unreadable file: report, go on
        say(f"{name}: cannot read the lake ({type(exc).__name__}: {exc})")
        out.update(exit=EX_FAILED, note=str(exc))
        return out
    out["mismatches"] = [str(p) for p in problems]
    if checked is not None:
        out["windows"] = [dataclasses.asdict(w) | {"late": w.late} for w in checked.windows]
        out["note"] = checked.skipped
    for problem in problems:
        say(str(problem))
    if problems and checked is not None and checked.skipped:
        say(f"{name}: source {checked.skipped}")
    if not problems:
        files = current_file_count(doc) if doc else 0
        version = doc.extra.get("delta_version") if doc else None
        extra = ""
        if checked is not None:
            extra = f", source: {checked.skipped}" if checked.skipped else \
                f", {len(checked.windows)} " + ("windows" if kind == "stream" else "scan") + \
                " match ksqlDB"
        shown = f", Delta version {version}" if version is not None else ""
        if out["catalog"] is not None and doc is not None:
            extra += f", catalog {out['catalog']} level"
        say(f"{name}: ok ({files} files{shown}" + (", no export yet" if doc is None else "")
            + f"{extra})")
    out["exit"] = EX_FAILED if problems else EX_OK
    return out


def _catalog_problems(catalog: LakeCatalog, feed: Feed) -> list[verify.Mismatch]:
    """The table against the lake; a catalog that cannot be read is one problem of the feed
    (the lake's own checks above still count)."""
    from lakeexportd.audit import verify_catalog  # pyiceberg: only with a catalog

    try:
        return verify_catalog.verify_catalog_feed(catalog, feed)
    except CatalogError as exc:
        return [verify.Mismatch(feed.name, verify_catalog.WHOLE,
                                f"cannot compare with the catalog: {exc}")]
