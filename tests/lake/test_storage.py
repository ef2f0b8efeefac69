"""The storage seam's contract, checked on every implementation.

Each test taking the ``store`` fixture states what any ``Storage`` must do and runs on every
store in ``STORES``: the local disk, obstore's in-memory store, S3 (moto's server) and Azure
Blob (Azurite), the last two real servers started by the tests. The local-only facts (modes, symlinks, flock freed by
death) are the ``test_local_*`` tests, which take ``LocalStorage`` directly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path, PurePath

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from objectstores import Bucket

from lakeexportd.errors import LakeStateError
from lakeexportd.lake.storage import (
    LocalStorage,
    ObjectStorage,
    PreconditionFailed,
    Storage,
    open_lake,
    open_storage,
)

Store = tuple[Storage, PurePath]
"""A storage and the lake root to use in it."""


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return LocalStorage(), tmp_path / "lake"


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    lake = open_lake("memory:///lake")
    return lake.storage, lake.root


def _server(fixture: str) -> Callable[[pytest.FixtureRequest, Path], Store]:
    """A lake under a fresh bucket/container of a real server started by the tests (moto's
    S3 server, Azurite), opened the way an operator's ``lake.root`` URL and ``lake.storage``
    options open it."""

    def factory(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
        bucket: Bucket = request.getfixturevalue(fixture)
        options = {**bucket.config, "allow_http": "true"}
        lake = open_lake(f"{bucket.url}/lake", {k: str(v) for k, v in options.items()})
        return lake.storage, lake.root

    return factory


STORES: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "local": _local,
    "memory": _memory,
    "s3": _server("s3_bucket"),
    "azure": _server("azure_container"),
}
"""Store name -> factory: every contract test runs on each."""


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    return STORES[request.param](request, tmp_path)


def test_open_storage_gives_the_local_store_for_a_path(tmp_path: Path) -> None:
    assert isinstance(open_storage(tmp_path), LocalStorage)
    lake = open_lake(f"file://{tmp_path}")
    assert isinstance(lake.storage, LocalStorage) and lake.root == tmp_path
    assert open_lake(str(tmp_path)).root == tmp_path


def test_open_storage_gives_an_object_store_for_a_url() -> None:
    lake = open_lake("memory:///some/lake")
    assert isinstance(lake.storage, ObjectStorage)
    assert lake.storage.show(lake.root / "feed" / "_metadata.json") == (
        "memory:///some/lake/feed/_metadata.json")


def test_publish_replaces_whole_and_changes_the_signature(store: Store) -> None:
    storage, root = store
    path = root / "feed" / "_metadata.json"
    assert storage.signature(path) is None
    first = storage.publish(path, b'{"a": 1}\n', file_mode=0o640, dir_mode=0o750)
    assert storage.read_bytes(path) == b'{"a": 1}\n'
    assert storage.signature(path) == first
    second = storage.publish(path, b'{"a": 2}\n', file_mode=0o640)
    assert second != first and storage.read_bytes(path) == b'{"a": 2}\n'
    # no temp left beside it
    assert [e.name for e in storage.list_dir(path.parent)] == ["_metadata.json"]


def test_local_publish_and_create_set_exact_modes_whatever_the_umask(tmp_path: Path) -> None:
    """Local only: object stores have no modes (access is the bucket policy's)."""
    storage, root = LocalStorage(), tmp_path / "lake"
    old = os.umask(0o077)
    try:
        storage.make_dirs(root / "a" / "b", 0o755)
        storage.publish(root / "a" / "doc.json", b"{}", file_mode=0o644)
        sink = storage.create(root / "a" / "b" / "f.bin", file_mode=0o644)
        sink.write(b"x")
        sink.close()
    finally:
        os.umask(old)
    assert (root / "a").stat().st_mode & 0o777 == 0o755  # local: modes are real
    assert (root / "a" / "b").stat().st_mode & 0o777 == 0o755
    assert (root / "a" / "doc.json").stat().st_mode & 0o777 == 0o644
    assert (root / "a" / "b" / "f.bin").stat().st_mode & 0o777 == 0o644


def test_create_never_takes_a_name_that_exists(store: Store) -> None:
    storage, root = store
    storage.make_dirs(root, 0o750)
    storage.publish(root / "x.parquet", b"theirs", file_mode=0o640)
    with pytest.raises(FileExistsError):
        storage.create(root / "x.parquet", file_mode=0o640)
    assert storage.read_bytes(root / "x.parquet") == b"theirs"


def test_promote_refuses_to_replace_and_keeps_both(store: Store) -> None:
    storage, root = store
    storage.make_dirs(root, 0o750)
    for name, data in (("a.tmp", b"new"), ("final", b"old")):
        sink = storage.create(root / name, file_mode=0o640)
        sink.write(data)
        sink.close()
    with pytest.raises(FileExistsError):
        storage.promote(root / "a.tmp", root / "final")
    assert storage.read_bytes(root / "final") == b"old"
    storage.promote(root / "a.tmp", root / "b")
    storage.sync([root])
    assert [e.name for e in storage.list_dir(root)] == ["b", "final"]


def test_parquet_written_and_read_through_the_store(store: Store) -> None:
    storage, root = store
    storage.make_dirs(root, 0o750)
    table = pa.table({"n": pa.array([1, 2, 3], pa.int64())})
    sink = storage.create(root / "t.parquet", file_mode=0o640)
    with pq.ParquetWriter(sink, table.schema) as writer:
        writer.write_table(table)
    sink.close()
    storage.sync_file(root / "t.parquet")
    assert storage.size(root / "t.parquet") == len(storage.read_bytes(root / "t.parquet"))
    with storage.open_read(root / "t.parquet") as source:
        assert pq.read_table(source).equals(table)


def test_listing_deleting_and_directories(store: Store) -> None:
    storage, root = store
    assert storage.list_dir(root / "missing") == []
    created = storage.make_dirs(root / "y" / "m", 0o750)
    # the directories it made: all of them on disk, none where prefixes need no making
    assert created in ([root, root / "y", root / "y" / "m"], [])
    storage.publish(root / "y" / "m" / "f", b"1", file_mode=0o640)
    listing = storage.list_dir(root / "y")
    assert [(e.name, e.is_dir) for e in listing] == [("m", True)]
    assert [e.name for e in storage.walk_files(root)] == ["f"]
    assert storage.remove_dir(root / "y" / "m") is False  # not empty: refused, kept
    assert storage.delete(root / "y" / "m" / "f") is True
    assert storage.delete(root / "y" / "m" / "f") is False
    assert storage.remove_dir(root / "y" / "m") is True
    storage.publish(root / "y" / "z" / "g", b"2", file_mode=0o640, dir_mode=0o750)
    storage.delete_tree(root / "y")
    assert not storage.exists(root / "y")


def test_a_lock_has_one_holder_and_keeps_its_note(store: Store) -> None:
    storage, root = store
    storage.make_dirs(root, 0o750)
    path = root / ".lock"
    assert not storage.is_locked(path)
    held = storage.try_lock(path, file_mode=0o640, note=b"42\n")
    assert held is not None
    assert storage.is_locked(path)
    assert storage.try_lock(path, file_mode=0o640) is None
    assert storage.lock_note(path) == b"42\n"
    held.release()
    assert not storage.is_locked(path)
    again = storage.try_lock(path, file_mode=0o640)
    assert again is not None
    again.release()
    assert storage.exists(path)  # lock files are never deleted


def test_local_lock_frees_itself_when_its_holder_is_killed(tmp_path: Path) -> None:
    """Local only: the kernel drops a dead process's flock, however it dies."""
    storage = LocalStorage()
    path = tmp_path / ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pathlib import Path
            from lakeexportd.lake.storage import LocalStorage
            held = LocalStorage().try_lock(Path({str(path)!r}), file_mode=0o640, note=b"x")
            print("held" if held else "busy", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert storage.is_locked(path)
        assert storage.try_lock(path, file_mode=0o640) is None
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        held = storage.try_lock(path, file_mode=0o640)
        assert held is not None
        held.release()
    finally:
        holder.kill()
        holder.communicate()


def test_local_lock_created_concurrently_has_one_holder(tmp_path: Path) -> None:
    """Local only: many processes racing to create the same lock file, exactly one holds it.

    (Object-store leases race through a create-if-absent PUT instead.)
    """
    path = tmp_path / "race.lock"
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from lakeexportd.lake.storage import LocalStorage
        while time.time() < float(sys.argv[1]):
            pass
        held = LocalStorage().try_lock(Path({str(path)!r}), file_mode=0o640)
        print("held" if held else "busy", flush=True)
        time.sleep(3)
    """)
    import time
    start = str(time.time() + 1.5)
    procs = [subprocess.Popen([sys.executable, "-c", script, start], stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    answers = [p.communicate(timeout=30)[0].strip() for p in procs]
    assert sorted(answers) == ["busy"] * 5 + ["held"]


def test_check_inside_refuses_escapes(store: Store) -> None:
    """Resolved paths must stay in the base folder: nothing is touched outside a feed."""
    storage, root = store
    base = root / "feed"
    storage.make_dirs(base, 0o750)
    storage.check_inside(base, base / "year=2025")
    with pytest.raises(LakeStateError, match="outside"):
        storage.check_inside(base, base / ".." / "other")


def test_local_check_inside_refuses_a_symlink_out(tmp_path: Path) -> None:
    """Local only: object stores have no symlinks."""
    storage, base = LocalStorage(), tmp_path / "lake" / "feed"
    storage.make_dirs(base, 0o750)
    (base / "link").symlink_to(tmp_path)
    with pytest.raises(LakeStateError, match="outside"):
        storage.check_inside(base, base / "link" / "x")


def test_conditional_publish_creates_once_and_replaces_only_what_was_read(
    store: Store,
) -> None:
    """Create-if-absent and If-Match: the fences exactly-once is built on."""
    storage, root = store
    path = root / "_metadata.json"
    first = storage.publish(path, b"1", file_mode=0o640, dir_mode=0o750, expected=None)
    with pytest.raises(PreconditionFailed):
        storage.publish(path, b"again", file_mode=0o640, expected=None)
    second = storage.publish(path, b"2", file_mode=0o640, expected=first)
    with pytest.raises(PreconditionFailed):  # a writer still holding the first version loses
        storage.publish(path, b"stale", file_mode=0o640, expected=first)
    assert storage.read_bytes(path) == b"2" and storage.signature(path) == second
