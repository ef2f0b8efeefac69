"""The facts a report shows: one feed at a glance, a partition or version, the whole lake.

Plain values, shared by ``report`` (which computes them) and ``report_format`` (which prints
them), so neither imports the other's internals.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeedSummary:
    """One feed at a glance; ``error`` is set (and the numbers are 0) if its metadata is bad."""

    feed: str
    kind: str
    source: str
    state: str
    records: int = 0
    size_bytes: int = 0
    files: int = 0
    partitions: int | None = None  # streams
    versions: int | None = None  # tables
    current_version: int | None = None
    last_export: str | None = None
    last_status: str | None = None
    newest_data: str | None = None
    freshness_s: float | None = None
    lag_s: float | None = None
    watermark: str | None = None
    error: str | None = None
    format: str = "parquet"  # or "delta" (DESIGN.md section 12)
    delta_version: int | None = None  # Delta feeds: the table version the summary shows
    # A realtime feed's committed point: Kafka partition -> ROWOFFSET of its last row (last,
    # so the CSV's earlier columns stay where they were).
    offsets: dict[str, int] | None = None


@dataclass(frozen=True)
class FeedAbout:
    """What the configuration says about a feed for people: the same ``description``,
    ``owner`` and ``tags`` the catalog's table properties carry (DESIGN 13)."""

    description: str | None = None
    owner: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class PartitionInfo:
    """A stream's day partition or a table's version."""

    feed: str
    kind: str
    partition: str
    records: int
    size_bytes: int
    files: int
    min_event: str | None = None
    max_event: str | None = None
    created: str | None = None
    current: bool | None = None


@dataclass(frozen=True)
class LakeStatistics:
    feeds: int
    streams: int
    tables: int
    records: int
    size_bytes: int
    files: int
    partitions: int
    versions: int
    failed_last_run: list[str]
    unreadable: list[str]
    stalest_feed: str | None
    stalest_freshness_s: float | None
