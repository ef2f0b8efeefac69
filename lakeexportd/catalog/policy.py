"""Which feeds the catalog follows, and the hook code below the catalog calls after a commit.

Light on purpose (no pyiceberg: its import costs about 1.3 s): every export and CLI command
imports this; ``iceberg`` is imported only where a catalog is configured.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from lakeexportd.config.model import CatalogSettings, Feed
from lakeexportd.lake.configured import ConfiguredLake

if TYPE_CHECKING:
    from lakeexportd.catalog.iceberg import LakeCatalog


def open_catalog(settings: CatalogSettings | None, lake: ConfiguredLake) -> LakeCatalog | None:
    """The configured catalog of ``lake`` (None without ``catalog:``); pyiceberg is imported
    here, so a lake without a catalog never pays for it."""
    if settings is None:
        return None
    from lakeexportd.catalog.iceberg import LakeCatalog

    return LakeCatalog(settings, lake)


def in_catalog(feed: Feed) -> bool:
    """A feed the catalog registers: a Parquet feed without ``catalog: false``."""
    return left_out(feed) is None


def left_out(feed: Feed) -> str | None:
    """Why the catalog does not register ``feed`` (None: it does)."""
    if feed.format != "parquet":
        return (f"feed {feed.name!r} is `format: {feed.format}`: only Parquet feeds are "
                "catalogued (a Delta table is its own catalog of files)")
    if not feed.catalogued:
        return (f"feed {feed.name!r} has `catalog: false`: the catalog leaves it out (remove "
                "that key to register it)")
    return None


def follow_catalog(catalog: LakeCatalog | None, feed: Feed) -> Callable[[], bool] | None:
    """For code below this layer (compaction): a call that brings ``feed``'s table level
    after a lake commit and says whether it is (no catalog, or a Delta feed: None)."""
    if catalog is None or not in_catalog(feed):
        return None
    return lambda: catalog.follow(feed) is None
