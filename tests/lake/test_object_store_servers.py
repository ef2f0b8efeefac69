"""The test servers enforce what exactly-once on object stores needs (DESIGN section 11), via obstore.

Every test runs on both real servers: moto's S3 server (``moto_s3``) and Azurite's blob server
(``azurite``), each its own process started by ``tests/conftest.py``. If an emulator stopped
enforcing create-if-absent or If-Match, the lake's own tests on it would prove nothing; these
tests are what says they can be trusted.

What obstore (0.12.1) raises, seen on these servers (moto 5.2.6, Azurite 3.35.0):

======================================  ===========================================  ===========================================
case                                    S3 (moto)                                    Azure Blob (Azurite)
======================================  ===========================================  ===========================================
``put(mode="create")``, object exists   ``obstore.exceptions.AlreadyExistsError``    ``obstore.exceptions.AlreadyExistsError``
                                        (server: 412 Precondition Failed)            (server: 409 BlobAlreadyExists)
``put(mode={"e_tag": stale})``          ``obstore.exceptions.PreconditionError``     ``obstore.exceptions.PreconditionError``
                                        (412)                                        (412 ConditionNotMet)
``put(mode={"e_tag": ...})``, no object ``obstore.exceptions.PreconditionError``     ``obstore.exceptions.PreconditionError``
                                        (moto: 412; real S3 answers 404, which
                                        obstore raises as ``FileNotFoundError``)
``get``/``head`` of a missing object    ``FileNotFoundError`` (builtin)              ``FileNotFoundError`` (builtin)
======================================  ===========================================  ===========================================

Both exception classes derive from ``obstore.exceptions.BaseError``; they are importable at run
time (``from obstore.exceptions import AlreadyExistsError, PreconditionError``). ``UpdateVersion``
must leave out ``version`` when it is None (``{"e_tag": etag}``): obstore rejects
``"version": None`` with a TypeError.

ETags: ``put`` and ``head`` return them quoted on both servers. ``list`` returns S3's quoted and
Azure's *unquoted* (``0x8D...`` without the quotes); Azurite takes either form in If-Match, but
compare ETags with the quotes stripped.

Storage class / access tier: obstore can *set* it at write time, through the ``Storage-Class``
attribute (``put(..., attributes={"Storage-Class": "STANDARD_IA"})``, and the same in
``open_writer(..., attributes=...)`` for multipart uploads): S3 sends ``x-amz-storage-class``,
Azure ``x-ms-access-tier`` (``Cool``, ``Cold``). obstore cannot *read* it back (neither
``get().attributes`` nor ``ObjectMeta`` has it) and cannot change it in place (no Set Blob Tier;
``copy`` takes no attributes and moto's copy comes out STANDARD). So the tests read the class
with raw requests (``MotoS3.storage_classes``, ``Azurite.request("HEAD", ...)``), and tiering
in place needs either a rewrite with the attribute or a request obstore does not make.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from xml.etree import ElementTree

import obstore
import pytest
from objectstores import (
    Azurite,
    Bucket,
    MotoS3,
    ServerProcess,
    ServerStartError,
    azure_container_on,
    free_port,
    s3_bucket_on,
    spawn,
    start_on_free_port,
    unique_name,
)
from obstore.exceptions import AlreadyExistsError, PreconditionError

MIB = 1024 * 1024
PART = 5 * MIB  # S3's smallest part (moto enforces it); Azure blocks may be any size


@pytest.fixture(params=["s3", "azure"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    """A fresh bucket on moto or a fresh container on Azurite."""
    name = "s3_bucket" if request.param == "s3" else "azure_container"
    result: Bucket = request.getfixturevalue(name)
    return result


def paths(bucket: Bucket, prefix: str | None = None) -> list[str]:
    return sorted(meta["path"] for batch in obstore.list(bucket.store, prefix) for meta in batch)


def unquoted(etag: str | None) -> str:
    assert etag, "the server returned no ETag"
    return etag.strip('"')


def test_put_get_list_head_delete(bucket: Bucket) -> None:
    store = bucket.store
    obstore.put(store, "feed/day=2030-01-01/part-0.parquet", b"first")
    obstore.put(store, "feed/day=2030-01-02/part-0.parquet", b"second object")
    obstore.put(store, "other/_metadata.json", b"{}")

    assert obstore.get(store, "feed/day=2030-01-01/part-0.parquet").bytes() == b"first"
    assert paths(bucket, "feed") == [
        "feed/day=2030-01-01/part-0.parquet",
        "feed/day=2030-01-02/part-0.parquet",
    ]
    listed = {m["path"]: m for m in obstore.list(bucket.store, "feed").collect()}
    head = obstore.head(store, "feed/day=2030-01-02/part-0.parquet")
    assert head["size"] == listed[head["path"]]["size"] == len(b"second object")
    assert unquoted(head["e_tag"]) == unquoted(listed[head["path"]]["e_tag"])

    obstore.delete(store, "feed/day=2030-01-01/part-0.parquet")
    with pytest.raises(FileNotFoundError):
        obstore.get(store, "feed/day=2030-01-01/part-0.parquet")
    with pytest.raises(FileNotFoundError):
        obstore.head(store, "feed/day=2030-01-01/part-0.parquet")
    assert paths(bucket) == ["feed/day=2030-01-02/part-0.parquet", "other/_metadata.json"]


def test_each_test_gets_a_fresh_bucket_that_sees_no_other(
    bucket: Bucket, moto_s3: MotoS3, azurite: Azurite
) -> None:
    assert paths(bucket) == []
    obstore.put(bucket.store, "mine", b"1")
    neighbour = s3_bucket_on(moto_s3) if bucket.kind == "s3" else azure_container_on(azurite)
    assert neighbour.name != bucket.name and paths(neighbour) == []
    obstore.put(neighbour.store, "theirs", b"2")
    assert paths(bucket) == ["mine"] and paths(neighbour) == ["theirs"]


def test_create_if_absent_is_refused_when_the_object_exists(bucket: Bucket) -> None:
    first = obstore.put(bucket.store, "feed/_metadata.json", b"run 1", mode="create")
    assert first["e_tag"]

    with pytest.raises(AlreadyExistsError):
        obstore.put(bucket.store, "feed/_metadata.json", b"run 1 again", mode="create")
    assert obstore.get(bucket.store, "feed/_metadata.json").bytes() == b"run 1"


def test_conditional_update_with_the_etag_read_succeeds_once(bucket: Bucket) -> None:
    obstore.put(bucket.store, "feed/_metadata.json", b"v1", mode="create")
    read = obstore.get(bucket.store, "feed/_metadata.json")
    etag = read.meta["e_tag"]
    assert read.bytes() == b"v1" and etag

    second = obstore.put(bucket.store, "feed/_metadata.json", b"v2", mode={"e_tag": etag})
    assert unquoted(second["e_tag"]) != unquoted(etag)

    # A second writer that read the same ETag loses: its If-Match is now stale.
    with pytest.raises(PreconditionError):
        obstore.put(bucket.store, "feed/_metadata.json", b"v2 by another", mode={"e_tag": etag})
    assert obstore.get(bucket.store, "feed/_metadata.json").bytes() == b"v2"

    # The ETag the winning PUT returned is the one to use next.
    obstore.put(bucket.store, "feed/_metadata.json", b"v3", mode={"e_tag": second["e_tag"]})
    assert obstore.get(bucket.store, "feed/_metadata.json").bytes() == b"v3"


def test_conditional_update_of_a_missing_object_is_refused(bucket: Bucket) -> None:
    obstore.put(bucket.store, "feed/_metadata.json", b"v1")
    etag = obstore.head(bucket.store, "feed/_metadata.json")["e_tag"]
    obstore.delete(bucket.store, "feed/_metadata.json")

    # Both emulators answer 412; real S3 answers 404, which obstore raises as FileNotFoundError.
    with pytest.raises((PreconditionError, FileNotFoundError)):
        obstore.put(bucket.store, "feed/_metadata.json", b"v2", mode={"e_tag": etag})
    with pytest.raises(FileNotFoundError):
        obstore.head(bucket.store, "feed/_metadata.json")


def test_an_etag_from_list_works_in_if_match(bucket: Bucket) -> None:
    obstore.put(bucket.store, "feed/_lease.json", b"owner a")
    [meta] = obstore.list(bucket.store, "feed").collect()

    obstore.put(bucket.store, "feed/_lease.json", b"owner b", mode={"e_tag": meta["e_tag"]})
    assert obstore.get(bucket.store, "feed/_lease.json").bytes() == b"owner b"


def _race(bucket: Bucket, attempt: Callable[[int], None], writers: int = 8) -> list[str]:
    """Run ``attempt`` from ``writers`` threads released together; their outcomes."""
    start = threading.Barrier(writers)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        start.wait(timeout=30)
        try:
            attempt(i)
            outcome = "won"
        except (AlreadyExistsError, PreconditionError) as exc:
            outcome = type(exc).__name__
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return sorted(outcomes)


def test_concurrent_writers_exactly_one_wins_create_and_update(bucket: Bucket) -> None:
    def create(i: int) -> None:
        obstore.put(bucket.store, "feed/_metadata.json", f"writer {i}".encode(), mode="create")

    assert _race(bucket, create) == ["AlreadyExistsError"] * 7 + ["won"]
    etag = obstore.head(bucket.store, "feed/_metadata.json")["e_tag"]

    def update(i: int) -> None:
        obstore.put(bucket.store, "feed/_metadata.json", f"update {i}".encode(),
                    mode={"e_tag": etag})

    assert _race(bucket, update) == ["PreconditionError"] * 7 + ["won"]
    assert obstore.get(bucket.store, "feed/_metadata.json").bytes().to_bytes().startswith(b"update ")


def _payload(size: int) -> list[bytes]:
    """``size`` bytes in 1 MiB chunks that differ, so a misplaced part shows in the hash."""
    return [bytes([i % 251]) * min(MIB, size - i * MIB) for i in range(-(-size // MIB))]


def test_multipart_upload_of_a_file_larger_than_one_part(
    bucket: Bucket, azurite: Azurite
) -> None:
    size = 2 * PART + MIB  # three parts: 5 MiB, 5 MiB, 1 MiB
    chunks = _payload(size)
    with obstore.open_writer(bucket.store, "feed/day=2030-01-01/big.parquet",
                             buffer_size=PART) as writer:
        for chunk in chunks:
            writer.write(chunk)
    assert writer.closed()  # a method in obstore, not a property

    meta = obstore.head(bucket.store, "feed/day=2030-01-01/big.parquet")
    assert meta["size"] == size
    got = obstore.get(bucket.store, "feed/day=2030-01-01/big.parquet").bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()

    if bucket.kind == "s3":  # a multipart ETag is "<md5 of the part md5s>-<part count>"
        assert unquoted(meta["e_tag"]).endswith("-3")
    else:  # a block blob committed from its blocks
        status, body = azurite.request(
            "GET", f"{bucket.name}/feed/day=2030-01-01/big.parquet",
            {"blocklisttype": "committed", "comp": "blocklist"},
        )
        assert status == 200 and isinstance(body, bytes)
        sizes = [int(s.text or 0) for s in ElementTree.fromstring(body).iter("Size")]
        assert sizes == [PART, PART, MIB]


def test_a_multipart_upload_that_fails_leaves_no_object(bucket: Bucket) -> None:
    with pytest.raises(RuntimeError, match="writer died"):
        with obstore.open_writer(bucket.store, "feed/partial.parquet",
                                 buffer_size=PART) as writer:
            for chunk in _payload(PART + MIB):  # one part sent, the rest buffered
                writer.write(chunk)
            raise RuntimeError("writer died")
    assert paths(bucket) == []
    with pytest.raises(FileNotFoundError):
        obstore.head(bucket.store, "feed/partial.parquet")


@pytest.mark.parametrize("multipart", [False, True], ids=["put", "multipart"])
def test_storage_class_is_set_on_the_server_through_the_storage_class_attribute(
    bucket: Bucket, moto_s3: MotoS3, azurite: Azurite, multipart: bool
) -> None:
    cold = "STANDARD_IA" if bucket.kind == "s3" else "Cool"
    attributes = {"Storage-Class": cold}
    if multipart:
        with obstore.open_writer(bucket.store, "cold", buffer_size=PART,
                                 attributes=attributes) as writer:
            for chunk in _payload(PART + MIB):
                writer.write(chunk)
    else:
        obstore.put(bucket.store, "cold", b"cold bytes", attributes=attributes)
    obstore.put(bucket.store, "hot", b"hot bytes")

    if bucket.kind == "s3":
        assert moto_s3.storage_classes(bucket.name) == {"cold": cold, "hot": "STANDARD"}
    else:
        tiers = {}
        for name in ("cold", "hot"):
            status, headers = azurite.request("HEAD", f"{bucket.name}/{name}")
            assert status == 200 and isinstance(headers, dict)
            tiers[name] = headers.get("x-ms-access-tier")
        assert tiers == {"cold": "Cool", "hot": "Hot"}  # Hot: the account default
    # obstore does not read it back: the class is no attribute of a GET.
    assert "Storage-Class" not in obstore.get(bucket.store, "cold").attributes


def test_unique_names_are_valid_bucket_and_container_names() -> None:
    name = unique_name("lake")
    assert 3 <= len(name) <= 63 and name == name.lower() and name.replace("-", "").isalnum()


def test_the_servers_are_separate_processes_on_loopback(moto_s3: MotoS3, azurite: Azurite) -> None:
    for server, endpoint in ((moto_s3.server, moto_s3.endpoint), (azurite.server, azurite.endpoint)):
        assert server.process.poll() is None and server.pid != os.getpid()
        assert endpoint.startswith("http://127.0.0.1:")


# --- The helper itself: a server that dies or hangs fails the fixture with its log. ------------


def test_a_server_that_exits_before_answering_is_reported_with_its_log(tmp_path: Path) -> None:
    code = "import sys; print('cannot bind: port taken'); sys.exit(3)"
    server = spawn("dying server", [sys.executable, "-c", code], tmp_path / "dying.log")
    with pytest.raises(ServerStartError, match=r"(?s)exited with status 3.*cannot bind"):
        server.wait_until_answers(f"http://127.0.0.1:{free_port()}/", deadline=30)


def test_a_server_that_never_answers_is_stopped_at_the_deadline(tmp_path: Path) -> None:
    code = "import time; print('stuck', flush=True); time.sleep(120)"
    server = spawn("silent server", [sys.executable, "-c", code], tmp_path / "silent.log")
    with pytest.raises(ServerStartError, match=r"(?s)did not answer .* within 1s.*stuck"):
        server.wait_until_answers(f"http://127.0.0.1:{free_port()}/", deadline=1)
    assert server.process.returncode is not None  # stopped by its PID, reaped


def test_a_port_lost_to_another_process_is_retried_on_a_new_port(tmp_path: Path) -> None:
    ports: list[int] = []

    def launch(port: int) -> ServerProcess:
        ports.append(port)
        if len(ports) == 1:  # as if the port were taken: the server exits at once
            argv = [sys.executable, "-c", "raise SystemExit('Address already in use')"]
        else:
            argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
        return spawn("http.server", argv, tmp_path / f"try{len(ports)}.log")

    server, port = start_on_free_port(launch, lambda port: f"http://127.0.0.1:{port}/")
    try:
        assert len(ports) == 2 and port == ports[1] and server.process.poll() is None
    finally:
        server.stop()
    assert server.process.returncode is not None


def test_stop_kills_a_server_that_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(120)"
    )
    server = spawn("stubborn server", [sys.executable, "-c", code], tmp_path / "stubborn.log")
    end = time.monotonic() + 30
    while "ready" not in server.log.read_text():  # poll until its SIGTERM handler is in place
        assert time.monotonic() < end and server.process.poll() is None, server.log_tail()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.process.wait(timeout=0.05)
    server.stop(grace=0.5)
    assert server.process.returncode == -9
