"""The catalog half of ``lakeexportd verify``: a Parquet feed's Iceberg table against its lake.

The lake's ``_metadata.json`` is the truth (DESIGN 13); the table's current snapshot must list
exactly its files (a table feed: the current version's), each once, each existing, with the
lake's row counts, and (tables) be that version. Read-only: each disagreement is a ``Mismatch``
that names the fix. ``catalog sync`` fixes what is missing, extra or of an older version; a
file listed twice is not something a diff can see (a set has it once), so that one takes
``catalog drop`` then ``catalog sync``.
"""

from __future__ import annotations

from collections import Counter

from lakeexportd.audit.verify import Mismatch
from lakeexportd.catalog import tables
from lakeexportd.catalog.iceberg import LakeCatalog
from lakeexportd.config.model import Feed
from lakeexportd.lake import layout
from lakeexportd.lake.metadata_model import FileEntry, StreamMetadata, TableMetadata

WHOLE = "catalog"  # the ``path`` of a problem of the whole table


def verify_catalog_feed(catalog: LakeCatalog, feed: Feed) -> list[Mismatch]:
    """How ``feed``'s table disagrees with the lake (``CatalogError`` if it cannot be read)."""
    name, table_name = feed.name, catalog.name(feed)
    sync = f"`lakeexportd catalog sync {name}`"
    storage = catalog.lake.storage
    feed_dir = layout.feed_dir(catalog.lake.root, feed.kind, name)
    doc = catalog.store.load(feed_dir)
    lake = _current_files(doc)
    found = tables.read(catalog, feed)
    if found is None:
        if not lake:
            return []
        why = catalog.refusal(feed)
        fix = f"the catalog refuses it: {why}" if why else f"run {sync}"
        return [Mismatch(name, WHOLE, f"{table_name} is not registered in {catalog.where} "
                         f"though the lake lists {len(lake)} files; {fix}")]
    view, listed = found
    view_version = next((s.version for s in view.snapshots if s.current), None)
    prefix = tables.feed_uri(catalog, feed) + "/"
    problems: list[Mismatch] = []
    counts = Counter(e.path for e in listed)
    seen: set[str] = set()
    for entry in listed:
        rel = entry.path.removeprefix(prefix) if entry.path.startswith(prefix) else None
        shown = rel or entry.path
        if entry.path in seen:
            continue
        seen.add(entry.path)
        if counts[entry.path] > 1:
            problems.append(Mismatch(name, shown, f"listed {counts[entry.path]} times by "
                                     f"{table_name}'s current snapshot (readers through the "
                                     f"catalog read its rows {counts[entry.path]} times): run "
                                     f"`lakeexportd catalog drop {name}`, then {sync}"))
        if rel is None or rel not in lake:
            exists = rel is not None and storage.exists(feed_dir / rel)
            problem = ("listed by the catalog, not by _metadata.json (the lake dropped it)"
                       if exists else "listed by the catalog but not in the lake: readers "
                       "through the catalog fail on it")
            problems.append(Mismatch(name, shown, f"{problem}; {sync} removes it"))
            continue
        if entry.records != lake[rel].records:
            problems.append(Mismatch(name, rel, f"{entry.records} rows in the catalog's entry, "
                                     f"_metadata.json says {lake[rel].records}"))
    for rel in sorted(set(lake) - {e.path.removeprefix(prefix) for e in listed}):
        problems.append(Mismatch(name, rel, f"in the lake, not in {table_name}: {sync} adds it"))
    catalog_rows = sum(e.records for e in listed)
    lake_rows = sum(e.records for e in lake.values())
    if catalog_rows != lake_rows:
        problems.append(Mismatch(name, WHOLE, f"{table_name} counts {catalog_rows:,} rows, the "
                                 f"lake {lake_rows:,}: run {sync}"))
    if isinstance(doc, TableMetadata) and view_version != doc.current_version:
        problems.append(Mismatch(name, WHOLE, f"{table_name}'s current snapshot is version "
                                 f"{view_version}, the lake's current version is "
                                 f"{doc.current_version}: run {sync}"))
    return problems


def _current_files(doc: StreamMetadata | TableMetadata | None) -> dict[str, FileEntry]:
    """``directory/name`` -> entry of what a reader of the feed reads now (a table: the
    current version's files)."""
    if isinstance(doc, StreamMetadata):
        return {f"{p.path}/{f.name}": f for p in doc.partitions for f in p.files}
    if isinstance(doc, TableMetadata):
        return {f"{v.path}/{f.name}": f for v in doc.versions
                if v.version == doc.current_version for f in v.files}
    return {}
