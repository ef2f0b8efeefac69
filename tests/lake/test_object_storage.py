"""What only object stores do: leases, URLs and options, errors without secrets, copies.

The shared contract is ``test_storage.py`` (run on the memory store too); these tests use
obstore's ``MemoryStore``, which enforces create-if-absent and If-Match like S3 and Azure, so
a lease race or a stale commit fails here exactly as it would there.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import PurePosixPath
from typing import Any

import obstore
import obstore.exceptions as obx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from obstore.store import MemoryStore

from lakeexportd.errors import ConfigError, LakeStateError
from lakeexportd.lake.storage import (
    LOCAL,
    ObjectStorage,
    PreconditionFailed,
    open_lake,
    open_storage,
)
from lakeexportd.lake.storage import object as object_module

ROOT = PurePosixPath("/bucket/lake")
TTL = 30.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(store: MemoryStore, clock: Clock | None = None, **kwargs: Any) -> ObjectStorage:
    """One process's view of the shared ``store``."""
    return ObjectStorage(store, url="s3://bucket/lake", root=ROOT, lease_ttl=TTL,
                         monotonic=clock or Clock(), **kwargs)


@pytest.fixture
def shared() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def storage(shared: MemoryStore) -> ObjectStorage:
    return make(shared)


# -- locations ----------------------------------------------------------------------------
def test_locations_map_to_keys_under_the_root_and_show_as_urls(
    storage: ObjectStorage, shared: MemoryStore,
) -> None:
    storage.publish(ROOT / "feed" / "_metadata.json", b"{}", file_mode=0o640)
    assert [m["path"] for m in obstore.list(shared).collect()] == ["feed/_metadata.json"]
    assert storage.show(ROOT / "feed" / "_metadata.json") == "s3://bucket/lake/feed/_metadata.json"
    assert storage.show(ROOT) == "s3://bucket/lake"
    assert [e.path for e in storage.walk_files(ROOT)] == [ROOT / "feed" / "_metadata.json"]
    for outside in (PurePosixPath("/bucket/other/x"), ROOT / ".." / "other"):
        with pytest.raises(LakeStateError):
            storage.read_bytes(outside)


def test_directories_are_prefixes(storage: ObjectStorage) -> None:
    feed = ROOT / "feed"
    assert not storage.exists(feed) and not storage.is_dir(feed)
    assert storage.make_dirs(feed / "year=2025", 0o750) == []  # nothing to make
    assert storage.remove_dir(feed)  # nothing under it: nothing to remove
    storage.publish(feed / "year=2025" / "a.parquet", b"a", file_mode=0o640)
    assert storage.exists(feed) and storage.is_dir(feed) and storage.is_dir(feed / "year=2025")
    assert not storage.is_dir(feed / "year=2025" / "a.parquet")
    assert storage.exists(feed / "year=2025" / "a.parquet")
    assert [(e.name, e.is_dir) for e in storage.list_dir(feed)] == [("year=2025", True)]
    [entry] = storage.list_dir(feed / "year=2025")
    assert (entry.name, entry.is_dir, entry.size) == ("a.parquet", False, 1)
    assert entry.mtime_ns > 1_600_000_000 * 10**9
    assert not storage.remove_dir(feed / "year=2025")  # objects remain: refused
    with pytest.raises(LakeStateError, match="whole lake"):
        storage.delete_tree(ROOT)
    storage.delete_tree(feed)
    assert not storage.exists(feed)
    assert storage.delete(feed / "year=2025" / "a.parquet") is False


# -- publish ------------------------------------------------------------------------------
def test_publish_calls_the_failpoints_around_its_one_put(
    storage: ObjectStorage, monkeypatch: pytest.MonkeyPatch,
) -> None:
    hits: list[str] = []
    monkeypatch.setattr(object_module, "failpoint", hits.append)
    path = ROOT / "_metadata.json"
    storage.publish(path, b"1", file_mode=0o640, failpoint_prefix="metadata", expected=None)
    assert hits == ["metadata.before_tmp_write", "metadata.after_replace",
                    "metadata.after_dir_fsync"]
    hits.clear()
    with pytest.raises(PreconditionFailed) as lost:
        storage.publish(path, b"2", file_mode=0o640, failpoint_prefix="metadata",
                        expected=None)
    assert hits == ["metadata.before_tmp_write"]  # refused by the store: nothing after
    assert lost.value.errno == errno.EEXIST and lost.value.filename == storage.show(path)


def test_if_match_on_a_deleted_object_is_a_lost_race(storage: ObjectStorage) -> None:
    path = ROOT / "_metadata.json"
    read = storage.publish(path, b"1", file_mode=0o640)
    storage.delete(path)
    with pytest.raises(PreconditionFailed):
        storage.publish(path, b"2", file_mode=0o640, expected=read)
    assert not storage.exists(path)


def test_the_memory_store_enforces_both_fences(storage: ObjectStorage,
                                               shared: MemoryStore) -> None:
    assert storage.check_conditional_writes() == []
    assert obstore.list(shared).collect() == []  # the scratch object is gone


def test_a_store_that_ignores_conditions_is_described(
    storage: ObjectStorage, shared: MemoryStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_put = obstore.put

    def careless_put(store: Any, path: str, data: Any, **kwargs: Any) -> Any:
        kwargs.pop("mode", None)  # an S3-compatible that drops If-None-Match and If-Match
        return real_put(store, path, data, **kwargs)

    monkeypatch.setattr(obstore, "put", careless_put)
    problems = storage.check_conditional_writes()
    assert len(problems) == 2
    assert "create-if-absent is ignored" in problems[0]
    assert "If-Match is ignored" in problems[1]
    assert obstore.list(shared).collect() == []


def test_a_store_without_conditional_put_is_described(
    storage: ObjectStorage, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unsupported(*args: Any, **kwargs: Any) -> Any:
        raise obx.NotSupportedError("conditional put disabled")

    monkeypatch.setattr(obstore, "put", unsupported)
    [problem] = storage.check_conditional_writes()
    assert "create-if-absent (If-None-Match) is not supported" in problem


# -- create, promote, rename_dir ----------------------------------------------------------
def test_create_streams_in_parts_and_shows_nothing_before_close(storage: ObjectStorage) -> None:
    path = ROOT / "big.bin"
    storage.part_size = 5 * 1024 * 1024
    sink = storage.create(path, file_mode=0o640)
    chunk = bytes(range(256)) * 4096  # 1 MiB
    for _ in range(12):
        assert sink.write(chunk) == len(chunk)
    assert not storage.exists(path)  # parts uploaded, object not there yet
    sink.close()
    sink.close()  # twice is harmless (pyarrow and the sinks may both close)
    assert storage.read_bytes(path) == chunk * 12


def test_an_aborted_upload_never_appears(storage: ObjectStorage) -> None:
    path = ROOT / "dropped.parquet"
    sink = storage.create(path, file_mode=0o640)
    sink.write(b"half")
    sink.abort()  # type: ignore[attr-defined]
    assert not storage.exists(path)
    assert storage.create(path, file_mode=0o640) is not None  # the name is still free


def test_parquet_footer_is_read_with_ranges(storage: ObjectStorage) -> None:
    table = pa.table({"n": pa.array(range(10_000), pa.int64())})
    sink = storage.create(ROOT / "t.parquet", file_mode=0o640)
    with pq.ParquetWriter(sink, table.schema) as writer:
        writer.write_table(table, row_group_size=2_500)
    sink.close()
    with storage.open_read(ROOT / "t.parquet") as source:
        parquet = pq.ParquetFile(source)
        assert parquet.metadata.num_row_groups == 4
        assert parquet.read_row_group(3).column("n")[0].as_py() == 7_500
    with pytest.raises(FileNotFoundError):
        storage.open_read(ROOT / "missing.parquet")


def test_promote_without_atomic_copy_checks_first(
    storage: ObjectStorage, monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_copy = obstore.copy

    def plain_s3_copy(store: Any, source: str, target: str, *, overwrite: bool = True) -> None:
        if not overwrite:
            raise obx.NotSupportedError("copy_if_not_exists not configured")
        real_copy(store, source, target, overwrite=True)

    monkeypatch.setattr(obstore, "copy", plain_s3_copy)
    for name in ("a.tmp", "b.tmp", "final"):
        storage.publish(ROOT / name, name.encode(), file_mode=0o640)
    storage.promote(ROOT / "a.tmp", ROOT / "a")
    with pytest.raises(FileExistsError):
        storage.promote(ROOT / "b.tmp", ROOT / "final")
    assert storage.read_bytes(ROOT / "final") == b"final"
    assert [e.name for e in storage.list_dir(ROOT)] == ["a", "b.tmp", "final"]
    with pytest.raises(FileNotFoundError):
        storage.promote(ROOT / "a.tmp", ROOT / "again")


def test_rename_dir_moves_every_object_and_is_not_atomic(storage: ObjectStorage) -> None:
    assert storage.atomic_rename is False and LOCAL.atomic_rename is True
    staging, version = ROOT / "feed" / "_staging", ROOT / "feed" / "version=v2"
    for name in ("part-0.parquet", "part-1.parquet"):
        storage.publish(staging / name, name.encode(), file_mode=0o640)
    storage.rename_dir(staging, version)
    assert not storage.exists(staging)
    assert sorted(e.name for e in storage.walk_files(version)) == ["part-0.parquet",
                                                                   "part-1.parquet"]
    storage.publish(staging / "x", b"x", file_mode=0o640)
    with pytest.raises(FileExistsError):
        storage.rename_dir(staging, version)
    with pytest.raises(FileNotFoundError):
        storage.rename_dir(ROOT / "none", ROOT / "elsewhere")


# -- leases -------------------------------------------------------------------------------
def test_a_dead_holders_lease_is_taken_after_a_whole_ttl_on_our_clock(
    shared: MemoryStore,
) -> None:
    holder, clock = make(shared), Clock()
    contender = make(shared, clock)
    path = ROOT / "feed" / ".lock"
    held = holder.try_lock(path, file_mode=0o640, note=b"41\n")
    assert held is not None
    assert contender.try_lock(path, file_mode=0o640) is None  # first look: held
    clock.now += TTL - 0.1
    assert contender.is_locked(path)
    assert contender.try_lock(path, file_mode=0o640) is None
    clock.now += 0.1  # the same ETag for a whole ttl: the holder is gone
    assert not contender.is_locked(path)
    taken = contender.try_lock(path, file_mode=0o640, note=b"42\n")
    assert taken is not None and taken.epoch == 2  # type: ignore[attr-defined]
    assert holder.lock_note(path) == b"42\n"
    # the old holder comes back: its renewal fails, it must stop; releasing changes nothing
    with pytest.raises(PreconditionFailed):
        held.renew()  # type: ignore[attr-defined]
    assert held.remaining() == 0.0  # type: ignore[attr-defined]
    held.release()
    assert holder.lock_note(path) == b"42\n" and make(shared).is_locked(path)


def test_a_renewed_lease_is_never_stale(shared: MemoryStore) -> None:
    holder_clock, clock = Clock(), Clock()
    holder, contender = make(shared, holder_clock), make(shared, clock)
    path = ROOT / ".lock"
    held = holder.try_lock(path, file_mode=0o640)
    assert held is not None
    before = bytes(obstore.get(shared, ".lock").bytes())
    held.renew()  # type: ignore[attr-defined]
    # never the same bytes twice: S3's ETag is their MD5, a contender times the ETag
    assert bytes(obstore.get(shared, ".lock").bytes()) != before
    for _ in range(10):  # a holder renewing every ttl/3 keeps it for as long as it lives
        assert contender.try_lock(path, file_mode=0o640) is None
        clock.now += TTL / 3
        holder_clock.now += TTL / 3
        assert held.remaining() == pytest.approx(2 * TTL / 3)  # type: ignore[attr-defined]
        held.renew()  # type: ignore[attr-defined]
        assert held.remaining() == TTL  # type: ignore[attr-defined]
    assert contender.try_lock(path, file_mode=0o640) is None


def test_a_released_lease_is_taken_at_once_and_never_deleted(shared: MemoryStore) -> None:
    first, second = make(shared), make(shared)
    path = ROOT / ".lock"
    held = first.try_lock(path, file_mode=0o640, note=b"7\n")
    assert held is not None and second.is_locked(path)
    held.release()
    held.release()
    assert not second.is_locked(path) and second.lock_note(path) == b""
    assert first.exists(path)  # a tombstone, like a lock file that is never deleted
    again = second.try_lock(path, file_mode=0o640)
    assert again is not None and again.epoch == 2  # type: ignore[attr-defined]
    assert first.try_lock(path, file_mode=0o640) is None


def test_one_holder_when_many_race_for_a_new_lease(shared: MemoryStore) -> None:
    views = [make(shared) for _ in range(8)]
    start = threading.Barrier(len(views))
    results: list[bool] = []
    guard = threading.Lock()

    def contend(view: ObjectStorage) -> None:
        start.wait()
        held = view.try_lock(ROOT / "race" / ".lock", file_mode=0o640)
        with guard:
            results.append(held is not None)

    threads = [threading.Thread(target=contend, args=(v,)) for v in views]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_a_damaged_lease_is_held_until_a_ttl_has_passed(shared: MemoryStore) -> None:
    clock = Clock()
    storage = make(shared, clock)
    path = ROOT / ".lock"
    obstore.put(shared, "lock-junk", b"x")  # unrelated object
    obstore.put(shared, ".lock", b"\x00 not json")
    assert storage.try_lock(path, file_mode=0o640) is None
    clock.now += TTL
    held = storage.try_lock(path, file_mode=0o640, note=b"\xff\xfe bytes")
    assert held is not None and held.epoch == 1  # type: ignore[attr-defined]
    assert make(shared).lock_note(path) == b"\xff\xfe bytes"


def test_shared_leases_do_not_exist(storage: ObjectStorage) -> None:
    with pytest.raises(OSError) as refused:
        storage.try_lock(ROOT / ".lock", file_mode=0o640, shared=True)
    assert refused.value.errno == errno.EOPNOTSUPP


# -- errors and URLs ----------------------------------------------------------------------
SECRET = "SUPERSECRETVALUE123"


def test_errors_name_the_object_and_never_a_secret(
    shared: MemoryStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = make(shared, redact=[SECRET])
    with pytest.raises(FileNotFoundError) as missing:
        storage.read_bytes(ROOT / "nope")
    assert missing.value.filename == "s3://bucket/lake/nope"

    def denied(*args: Any, **kwargs: Any) -> Any:
        raise obx.PermissionDeniedError(
            f"Error performing GET https://h/bucket/lake/x?X-Amz-Signature={SECRET} with "
            f"key {SECRET}\n\nDebug source:\nGeneric {{ secret: {SECRET} }}")

    monkeypatch.setattr(obstore, "get", denied)
    with pytest.raises(PermissionError) as refused:
        storage.read_bytes(ROOT / "x")
    text = str(refused.value)
    assert SECRET not in text and "Debug source" not in text
    assert "s3://bucket/lake/x" in text


def test_a_connection_error_is_an_oserror_without_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "SESSIONTOKEN456")
    storage = open_storage("s3://bucket/lake", {
        "endpoint": "http://127.0.0.1:1", "region": "us-east-1", "allow_http": "true",
        "aws_access_key_id": "AKIDEXAMPLE", "aws_secret_access_key": SECRET,
        "max_retries": "0", "retry_timeout": "2", "connect_timeout": "1s",
    })
    assert {SECRET, "SESSIONTOKEN456"} <= set(storage._redact)  # type: ignore[attr-defined]
    with pytest.raises(OSError) as failed:
        storage.read_bytes(PurePosixPath("/bucket/lake/x"))
    assert failed.value.errno == errno.EIO
    assert SECRET not in str(failed.value) and "Debug source" not in str(failed.value)


@pytest.mark.parametrize(("url", "options", "root", "prefix"), [
    ("s3://bucket/some/lake/", {"region": "eu-west-1", "aws_allow_http": "true",
                                "timeout": "30s"}, "/bucket/some/lake", "some/lake"),
    ("s3://bucket", {"endpoint": "http://localhost:5000"}, "/bucket", None),
    ("az://container/lake", {"account_name": "devstoreaccount1", "use_emulator": "true"},
     "/container/lake", "lake"),
    ("abfss://container@acct.dfs.core.windows.net/lake", {},
     "/container@acct.dfs.core.windows.net/lake", "lake"),
    ("gs://bucket/lake", {}, "/bucket/lake", "lake"),
])
def test_urls_open_the_store_scoped_to_the_prefix(
    url: str, options: dict[str, str], root: str, prefix: str | None,
) -> None:
    lake = open_lake(url, options)
    assert isinstance(lake.storage, ObjectStorage)
    assert lake.root == PurePosixPath(root)
    assert lake.storage.store.prefix == prefix  # type: ignore[union-attr]
    assert lake.storage.show(lake.root / "f" / "x.parquet") == (
        url.rstrip("/") + "/f/x.parquet")


@pytest.mark.parametrize(("url", "options", "message"), [
    ("ftp://host/lake", {}, "not supported"),
    ("s3://user:" + SECRET + "@bucket/lake", {}, "must not carry credentials"),
    ("az://container/lake?sig=" + SECRET, {}, "must not carry credentials"),
    ("s3:///lake", {}, "names no bucket"),
    ("s3://bucket/a/../b", {}, "'..'"),
    ("s3://bucket/lake", {"no_such_option": SECRET}, "no_such_option"),
    ("s3://bucket/lake", {"max_retries": "many"}, "must be a number"),
    ("memory:///lake", {"region": "x"}, "takes no store options"),
    ("file:///tmp/lake", {"region": "x"}, "object stores only"),
])
def test_bad_roots_and_options_are_config_errors_without_secrets(
    url: str, options: dict[str, str], message: str,
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        open_lake(url, options)
    assert SECRET not in str(refused.value)


@pytest.fixture(autouse=True)
def _no_cloud_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Construction reads AWS_* / AZURE_* from the environment: keep these tests hermetic."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "AZURE_", "GOOGLE_")):
            monkeypatch.delenv(name)


def test_a_held_lease_is_renewed_in_the_background_until_released(shared: MemoryStore) -> None:
    """Real clocks, a 0.3 s ttl: over ten ttls the holder's thread keeps the lease; a
    contender never takes it, and takes it at once after ``release``."""
    ttl = 0.3
    holder = ObjectStorage(shared, url="s3://bucket/lake", root=ROOT, lease_ttl=ttl)
    contender = ObjectStorage(shared, url="s3://bucket/lake", root=ROOT, lease_ttl=ttl)
    path = ROOT / "feed" / "_lease.json"
    held = holder.try_lock(path, file_mode=0o640)
    assert held is not None
    deadline = time.monotonic() + 10 * ttl
    while time.monotonic() < deadline:
        assert contender.try_lock(path, file_mode=0o640) is None
        assert held.holding()
        time.sleep(ttl / 5)
    held.release()
    assert not held.holding()
    taken = contender.try_lock(path, file_mode=0o640)
    assert taken is not None
    taken.release()


def test_a_lease_taken_over_stops_holding_at_the_next_renewal(shared: MemoryStore) -> None:
    """Someone overwrote the lease (an operator, a contender with a wrong clock): the
    holder's next renewal is refused, and it must not commit any more."""
    ttl = 0.3
    holder = ObjectStorage(shared, url="s3://bucket/lake", root=ROOT, lease_ttl=ttl)
    path = ROOT / "feed" / "_lease.json"
    held = holder.try_lock(path, file_mode=0o640)
    assert held is not None and held.holding()
    obstore.put(shared, "feed/_lease.json", b'{"not": "yours"}')
    deadline = time.monotonic() + 3 * ttl
    while held.holding() and time.monotonic() < deadline:
        time.sleep(ttl / 10)
    assert not held.holding()
    held.release()  # changes nothing: the lease is not ours
    assert bytes(obstore.get(shared, "feed/_lease.json").bytes()) == b'{"not": "yours"}'
