"""``history``: a feed's commits from its ``_metadata.json``, newest first, one shape for all."""

from __future__ import annotations

from pathlib import PurePosixPath

from lakeexportd.audit.history import HistoryEntry, history
from lakeexportd.lake.metadata_model import (
    ExportRecord,
    FileEntry,
    Partition,
    StreamMetadata,
    TableMetadata,
    Version,
    Window,
)
from lakeexportd.lake.storage import LocalStorage

FEED_DIR = PurePosixPath("/lake/feed")


def _record(run_id: str, finished: str, records: int, status: str = "success",
            **more: object) -> ExportRecord:
    return ExportRecord(run_id, finished, finished, records, status, **more)  # type: ignore[arg-type]


def test_a_streams_history_is_its_successful_runs_newest_first() -> None:
    """Each successful run is an `append` (an empty one with 0 rows), a backfill is a
    `backfill`; a failed run committed nothing and is not listed; no version numbers; a run
    none of whose files is listed any more (here: replaced by the backfill) is not readable."""
    doc = StreamMetadata(feed="tx", source="TX", partitions=(Partition(
        "year=2025/month=01/day=15", (FileEntry("data_20250115_130005.parquet", 2, 20,
                                                added="2025-01-15T13:00:05Z"),)),), exports=(
        _record("r1", "2025-01-15T10:00:05Z", 3, window=Window(None, 1), files=1, size_bytes=30),
        _record("r2", "2025-01-15T11:00:05Z", 0, "failed", error="TransientError: down"),
        _record("r3", "2025-01-15T12:00:05Z", 0, window=Window(1, 2), files=0, size_bytes=0),
        _record("backfill-r4", "2025-01-15T13:00:05Z", 2, files=1, size_bytes=20),
    ))
    assert history(LocalStorage(), FEED_DIR, doc) == [
        HistoryEntry(None, "2025-01-15T13:00:05Z", "backfill", 2, 20, 1, "backfill-r4"),
        HistoryEntry(None, "2025-01-15T12:00:05Z", "append", 0, 0, 0, "r3"),
        HistoryEntry(None, "2025-01-15T10:00:05Z", "append", 3, 30, 1, "r1", readable=False),
    ]


def test_a_tables_history_marks_current_and_versions_retention_removed() -> None:
    """Kept versions come from `versions` (their time: the run's commit), the current one is
    marked; an older version only `exports` still names is listed as not readable; a kept
    version whose run left the history shows its `created`."""
    files = (FileEntry("snapshot_20250115_100000.parquet", 7, 70),)
    doc = TableMetadata(
        feed="users", source="USERS", current_version=3, last_version=3,
        versions=(Version(2, "2025-01-15T09:00:00Z", files),
                  Version(3, "2025-01-15T10:00:00Z", files + files[:0])),
        exports=(_record("r1", "2025-01-15T08:00:04Z", 5, version=1, files=1, size_bytes=50),
                 _record("r3", "2025-01-15T10:00:06Z", 7, version=3, files=1, size_bytes=70),
                 _record("r4", "2025-01-15T11:00:00Z", 0, "failed")),
    )
    assert history(LocalStorage(), FEED_DIR, doc) == [
        HistoryEntry(3, "2025-01-15T10:00:06Z", "overwrite", 7, 70, 1, "r3", current=True),
        HistoryEntry(2, "2025-01-15T09:00:00Z", "overwrite", 7, 70, 1, None),
        HistoryEntry(1, "2025-01-15T08:00:04Z", "overwrite", 5, 50, 1, "r1", readable=False),
    ]


def test_a_feed_with_no_run_has_no_history() -> None:
    """A first run's empty document (committed before any data) is not a commit to list."""
    assert history(LocalStorage(), FEED_DIR, StreamMetadata(feed="tx", source="TX")) == []
    assert history(LocalStorage(), FEED_DIR, TableMetadata(feed="u", source="U")) == []


def test_a_stream_run_from_before_added_is_matched_by_its_files_name() -> None:
    """A file listed before `added` existed belongs to the run whose start its name carries."""
    doc = StreamMetadata(feed="tx", source="TX", partitions=(Partition(
        "year=2025/month=01/day=15", (FileEntry("data_20250115_100000.parquet", 3, 30),)),),
        exports=(ExportRecord("r1", "2025-01-15T10:00:00Z", "2025-01-15T10:00:04Z", 3,
                              "success", files=1, size_bytes=30),
                 ExportRecord("r2", "2025-01-15T11:00:00Z", "2025-01-15T11:00:04Z", 3,
                              "success", files=1, size_bytes=30)))
    assert [h.readable for h in history(LocalStorage(), FEED_DIR, doc)] == [False, True]
