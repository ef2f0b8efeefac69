"""Storage tiering (lake/tiering.py) in process, on obstore's memory store and on a local folder.

The lake is made by hand: a ``_metadata.json`` listing day partitions and data objects of known
bytes. What the store holds is read back through obstore itself (the memory store keeps the
``Storage-Class`` attribute as written), never through the code under test. The real servers
(moto, Azurite) and the real CLI are in ``tests/cli/test_tier_cli.py``.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import threading
from pathlib import Path

import obstore
import pytest

from lakeexportd.errors import ConfigError, LakeStateError
from lakeexportd.lake import layout
from lakeexportd.lake.locking import FeedLock
from lakeexportd.lake.metadata import MetadataStore
from lakeexportd.lake.metadata_codec import decode, encode
from lakeexportd.lake.metadata_model import (
    MIXED,
    FileEntry,
    Partition,
    StreamMetadata,
    WrittenFile,
)
from lakeexportd.lake.metadata_update import with_stream_files
from lakeexportd.lake.storage import LOCAL, Storage, open_lake
from lakeexportd.lake.tiering import Tierer, due

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)
DAY_MS = 86_400_000


def ms(day: dt.date, hour: int = 12) -> int:
    return int(dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.UTC).timestamp() * 1000)


def days_ago(n: int) -> dt.date:
    return NOW.date() - dt.timedelta(days=n)


def build(storage: Storage, root: Path, ages: list[int], *, files_per_day: int = 2,
          watermark: dt.date | None = None) -> tuple[Path, dict[str, bytes]]:
    """A stream feed ``tx`` with ``files_per_day`` objects in each day ``ages`` days old;
    returns its folder and object key -> bytes."""
    feed_dir = layout.feed_dir(root, "stream", "tx")
    partitions, objects = [], {}
    for age in ages:
        day = days_ago(age)
        path = layout.day_partition(day)
        entries = []
        for n in range(files_per_day):
            name = f"data_{day:%Y%m%d}_12000{n}.parquet"
            data = f"{path}/{name}".encode() * (10 + n)
            storage.publish(feed_dir / path / name, data, file_mode=0o640, dir_mode=0o750)
            objects[f"{path}/{name}"] = data
            entries.append(FileEntry(name, 10 + n, len(data), ms(day), ms(day)))
        partitions.append(Partition(path, tuple(entries)))
    mark = watermark or NOW.date()
    doc = StreamMetadata(feed="tx", source="TX", partitions=tuple(partitions),
                         watermark_ms=ms(mark, 11))
    store = MetadataStore(storage)
    store.load(feed_dir)
    store.commit(feed_dir, doc)
    return feed_dir, objects


def memory_lake() -> tuple[Storage, Path]:
    lake = open_lake("memory:///lake")
    return lake.storage, Path(lake.root)


def classes(storage: Storage, feed_dir: Path) -> dict[str, str | None]:
    """partition/name -> the Storage-Class attribute the memory store holds (None: default)."""
    store = storage.store  # type: ignore[attr-defined]
    prefix = "streams/tx/"
    out = {}
    for chunk in obstore.list(store, prefix):
        for meta in chunk:
            key = meta["path"][len(prefix):]
            if key.startswith("year="):
                out[key] = obstore.get(store, meta["path"]).attributes.get("Storage-Class")
    return out


def listed(storage: Storage, feed_dir: Path) -> StreamMetadata:
    doc = decode(storage.read_bytes(feed_dir / "_metadata.json"))
    assert isinstance(doc, StreamMetadata)
    return doc


def test_due_picks_closed_days_older_than_after_not_yet_in_the_class() -> None:
    """Days before now - after AND before the watermark's day, with files in another class."""
    def part(age: int, tier: str | None = None) -> Partition:
        return Partition(layout.day_partition(days_ago(age)),
                         (FileEntry("data_20261101_120000.parquet", 1, 5, tier=tier),))
    doc = StreamMetadata(feed="tx", source="TX",
                         partitions=(part(9), part(8, "STANDARD_IA"), part(5), part(3), part(2)),
                         watermark_ms=ms(days_ago(4)))
    moves = due(doc, "STANDARD_IA", now=NOW, after_days=2, timezone="UTC")
    # 2 and 3 days old: not older than 2 days / not before the watermark's day (4 days ago)
    assert [m.partition for m in moves] == [layout.day_partition(days_ago(9)),
                                            layout.day_partition(days_ago(5))]
    assert due(doc, "STANDARD_IA", now=NOW, after_days=30, timezone="UTC") == []
    assert due(StreamMetadata(feed="tx", source="TX"), "STANDARD_IA", now=NOW, after_days=1,
               timezone="UTC") == []


def test_due_counts_days_in_the_feeds_time_zone() -> None:
    """At 23:30 UTC it is already tomorrow in Auckland: one more day is old enough there."""
    late = dt.datetime(2026, 12, 6, 23, 30, tzinfo=dt.UTC)
    day = dt.date(2026, 12, 4)
    doc = StreamMetadata(feed="tx", source="TX", partitions=(Partition(
        layout.day_partition(day), (FileEntry("data_20261204_120000.parquet", 1, 5),)),),
        watermark_ms=ms(dt.date(2026, 12, 6), 23))
    assert due(doc, "Cool", now=late, after_days=2, timezone="UTC") == []
    assert len(due(doc, "Cool", now=late, after_days=2, timezone="Pacific/Auckland")) == 1


def test_tiering_rewrites_old_partitions_in_place_and_records_each_files_class() -> None:
    """Objects of old days get the class with their bytes unchanged; _metadata.json says so
    per file and per partition; the young days stay in the default class."""
    storage, root = memory_lake()
    feed_dir, objects = build(storage, root, [6, 5, 1, 0])
    result = Tierer(storage, root, lock_wait=1).tier("tx", "STANDARD_IA", after_days=3,
                                                    timezone="UTC", now=NOW)
    old = {layout.day_partition(days_ago(a)) for a in (6, 5)}
    assert {m.partition for m in result.moves} == old and result.files == 4
    for key, cls in classes(storage, feed_dir).items():
        assert cls == ("STANDARD_IA" if key.split("/data_")[0] in old else None), key
    for key, data in objects.items():  # same bytes under the same keys
        assert storage.read_bytes(feed_dir / key) == data
    doc = listed(storage, feed_dir)
    for partition in doc.partitions:
        want = "STANDARD_IA" if partition.path in old else None
        assert partition.tier == want and all(f.tier == want for f in partition.files)
    raw = json.loads(storage.read_bytes(feed_dir / "_metadata.json"))
    assert [p["tier"] for p in raw["partitions"]] == ["STANDARD_IA", "STANDARD_IA", None, None]
    moved = sum(len(objects[k]) for k in objects if k.split("/data_")[0] in old)
    assert result.bytes_per_tier == {"STANDARD_IA": moved,
                                     None: sum(map(len, objects.values())) - moved}
    again = Tierer(storage, root, lock_wait=1).tier("tx", "STANDARD_IA", after_days=3,
                                                   timezone="UTC", now=NOW)
    assert again.moves == []  # idempotent: nothing left to move


def test_a_late_file_makes_the_partition_mixed_and_only_it_moves_next_time() -> None:
    """A file added to a moved day (late event_time row, backfill) is listed without a tier:
    the partition reads mixed, and the next run rewrites that file alone."""
    storage, root = memory_lake()
    feed_dir, _ = build(storage, root, [6, 0])
    tierer = Tierer(storage, root, lock_wait=1)
    tierer.tier("tx", "GLACIER_IR", after_days=3, timezone="UTC", now=NOW)
    path = layout.day_partition(days_ago(6))
    late = "data_20261206_130000.parquet"
    storage.publish(feed_dir / path / late, b"late rows", file_mode=0o640)
    store = MetadataStore(storage)
    doc = store.load(feed_dir)
    assert isinstance(doc, StreamMetadata)
    store.commit(feed_dir, with_stream_files(doc, [WrittenFile(path, late, 1, 9)],
                                             watermark_ms=doc.watermark_ms or 0))
    assert listed(storage, feed_dir).partitions[0].tier == MIXED
    result = tierer.tier("tx", "GLACIER_IR", after_days=3, timezone="UTC", now=NOW)
    assert [(m.partition, [f.name for f in m.files]) for m in result.moves] == [(path, [late])]
    assert result.moves[0].from_tiers == "default"
    assert classes(storage, feed_dir)[f"{path}/{late}"] == "GLACIER_IR"
    assert listed(storage, feed_dir).partitions[0].tier == "GLACIER_IR"


def test_batches_commit_on_their_own_and_cancel_stops_between_objects() -> None:
    """With two files per batch, each batch is committed; a cancel keeps what was moved."""
    storage, root = memory_lake()
    feed_dir, _ = build(storage, root, [9], files_per_day=5)
    cancel = threading.Event()
    seen: list[str] = []

    def progress(partition: str, entry: FileEntry) -> None:
        seen.append(entry.name)
        if len(seen) == 3:
            cancel.set()

    result = Tierer(storage, root, lock_wait=1, batch_files=2).tier(
        "tx", "ONEZONE_IA", after_days=1, timezone="UTC", now=NOW, progress=progress,
        cancel=cancel)
    assert result.stopped and result.files == 3 and len(result.moves) == 2
    doc = listed(storage, feed_dir)
    assert [f.tier for f in doc.partitions[0].files] == ["ONEZONE_IA"] * 3 + [None] * 2
    assert list(classes(storage, feed_dir).values()) == ["ONEZONE_IA"] * 3 + [None] * 2


def test_dry_run_changes_nothing_and_says_what_would_move() -> None:
    storage, root = memory_lake()
    feed_dir, objects = build(storage, root, [7, 0])
    before = storage.read_bytes(feed_dir / "_metadata.json")
    result = Tierer(storage, root, lock_wait=1).tier("tx", "INTELLIGENT_TIERING", after_days=2,
                                                    timezone="UTC", now=NOW, dry_run=True)
    assert result.dry_run and result.files == 2
    assert result.bytes_per_tier[None] + result.bytes_per_tier["INTELLIGENT_TIERING"] == \
        sum(map(len, objects.values()))
    assert storage.read_bytes(feed_dir / "_metadata.json") == before
    assert set(classes(storage, feed_dir).values()) == {None}


def test_an_object_of_another_size_is_refused_and_left_as_it_is() -> None:
    """A listed object whose size is not the listed one is not the file the metadata means:
    the run stops with a LakeStateError naming it and pointing at verify; nothing moves."""
    storage, root = memory_lake()
    feed_dir, objects = build(storage, root, [7, 0], files_per_day=1)
    key = next(iter(objects))
    storage.publish(feed_dir / key, b"someone else's bytes", file_mode=0o640)
    before = storage.read_bytes(feed_dir / "_metadata.json")
    with pytest.raises(LakeStateError, match=r"is not the file _metadata.json lists.*verify tx"):
        Tierer(storage, root, lock_wait=1).tier("tx", "STANDARD_IA", after_days=2,
                                                timezone="UTC", now=NOW)
    assert storage.read_bytes(feed_dir / key) == b"someone else's bytes"
    assert classes(storage, feed_dir)[key] is None
    assert storage.read_bytes(feed_dir / "_metadata.json") == before


def test_a_listed_but_missing_object_stops_the_run_naming_verify_and_backfill() -> None:
    storage, root = memory_lake()
    feed_dir, objects = build(storage, root, [7, 0], files_per_day=1)
    storage.delete(feed_dir / next(iter(objects)))
    with pytest.raises(LakeStateError, match=r"listed but missing.*backfill tx"):
        Tierer(storage, root, lock_wait=1).tier("tx", "STANDARD_IA", after_days=2,
                                                timezone="UTC", now=NOW)


def test_a_local_lake_has_no_storage_classes(tmp_path: Path) -> None:
    """On disk rewrite_in_class refuses (EOPNOTSUPP) and the tierer is a ConfigError."""
    root = tmp_path / "lake"
    feed_dir, objects = build(LOCAL, root, [7, 0], files_per_day=1)
    with pytest.raises(OSError) as info:
        LOCAL.rewrite_in_class(feed_dir / next(iter(objects)), "STANDARD_IA", size=1)
    assert info.value.errno == errno.EOPNOTSUPP
    with pytest.raises(ConfigError, match="has no storage classes.*`tiering:`"):
        Tierer(LOCAL, root, lock_wait=1).tier("tx", "STANDARD_IA", after_days=2,
                                              timezone="UTC", now=NOW)


def test_the_codec_keeps_file_tiers_and_reads_documents_without_them() -> None:
    """``tier`` round-trips per file; a document written before tiering still loads (None)."""
    doc = StreamMetadata(feed="tx", source="TX", watermark_ms=5, partitions=(Partition(
        "year=2026/month=11/day=01",
        (FileEntry("data_20261101_120000.parquet", 1, 5, tier="Cold"),
         FileEntry("data_20261101_130000.parquet", 1, 7))),))
    raw = json.loads(encode(doc))
    assert raw["partitions"][0]["tier"] == MIXED
    assert raw["partitions"][0]["files"][0]["tier"] == "Cold"
    assert "tier" not in raw["partitions"][0]["files"][1]
    assert decode(encode(doc)) == doc
    for p in raw["partitions"]:
        del p["tier"]
        for f in p["files"]:
            f.pop("tier", None)
    old = decode(json.dumps(raw).encode())
    assert isinstance(old, StreamMetadata)
    assert [f.tier for f in old.partitions[0].files] == [None, None]
    assert old.bytes_per_tier() == {None: 12}


def test_an_export_waiting_on_the_feed_lock_is_never_disturbed() -> None:
    """While a batch holds the feed's lock, an export of the same feed waits for it (seen by
    its lock's first poll); it then appends today's file and commits; the tiering run goes on
    from the fresh document: the new file is kept, in the default class, and the old days
    move."""
    storage, root = memory_lake()
    feed_dir, _ = build(storage, root, [9, 8, 0], files_per_day=1)
    waiting, committed = threading.Event(), threading.Event()
    today = layout.day_partition(NOW.date())
    name = "data_20261206_130000.parquet"

    def poll(seconds: float) -> None:
        waiting.set()
        threading.Event().wait(seconds)

    def export() -> None:
        with FeedLock(feed_dir, feed="tx", wait=30, storage=storage, sleep=poll):
            store = MetadataStore(storage)
            doc = store.load(feed_dir)
            assert isinstance(doc, StreamMetadata) and doc.watermark_ms is not None
            storage.publish(feed_dir / today / name, b"today's rows", file_mode=0o640)
            store.commit(feed_dir, with_stream_files(doc, [WrittenFile(today, name, 1, 12)],
                                                     watermark_ms=doc.watermark_ms + 1))
        committed.set()

    appender = threading.Thread(target=export)

    def progress(partition: str, entry: FileEntry) -> None:
        if not appender.is_alive() and not committed.is_set():
            appender.start()  # the first batch holds the lock now
            assert waiting.wait(10), "the export never found the feed locked"

    result = Tierer(storage, root, lock_wait=30, batch_files=1).tier(
        "tx", "STANDARD_IA", after_days=2, timezone="UTC", now=NOW, progress=progress)
    appender.join(10)
    assert committed.is_set() and result.files == 2
    doc = listed(storage, feed_dir)
    assert {p.path: p.tier for p in doc.partitions} == {
        layout.day_partition(days_ago(9)): "STANDARD_IA",
        layout.day_partition(days_ago(8)): "STANDARD_IA", today: None}
    assert [f.name for f in doc.partitions[-1].files] == ["data_20261206_120000.parquet", name]
    assert classes(storage, feed_dir)[f"{today}/{name}"] is None
    assert storage.read_bytes(feed_dir / today / name) == b"today's rows"
