"""Ambiguous commits of ``_metadata.json`` are settled by reading the document back.

A storage double over obstore's memory store (real conditional PUTs and ETags) loses the
answer of a commit in each of the ways a network does: after the write landed (a timeout, or
obstore's retry refused by its own first attempt), before it landed, or landing late. The
real-server versions run through a fault proxy in ``tests/export/test_store_faults.py``.
"""

from __future__ import annotations

import datetime as dt
import errno
import threading
from pathlib import Path, PurePath
from typing import Any

import pytest
from faultproxy import FaultProxy, Rule
from objectstores import Bucket
from structlog.testing import capture_logs

from lakeexportd.errors import CommitOutcomeUnknown, LakeStateError
from lakeexportd.lake import layout
from lakeexportd.lake import metadata as md
from lakeexportd.lake.metadata_codec import decode
from lakeexportd.lake.storage import ObjectStorage, PreconditionFailed, Signature, open_lake

TIMEOUT = OSError(errno.EIO, "operation timed out", "memory:///lake/streams/tx/_metadata.json")


class LossyStore(ObjectStorage):
    """The memory store, whose next ``publish`` calls go wrong as ``plan`` says.

    Plan steps: ``"land_then_timeout"`` (written, then the answer lost), ``"land_then_refuse"``
    (written, then a retry refused by that write), ``"timeout"`` (nothing written),
    ``"late"`` (nothing written now; it lands right before the next publish), ``"ok"``.
    ``fail_reads`` makes every read of the document fail (the store went away).
    """

    def __init__(self, base: ObjectStorage) -> None:
        super().__init__(base.store, url=base.url, root=base.root)
        self.plan: list[str] = []
        self.fail_reads = False
        self.publishes = 0
        self._late: tuple[PurePath, bytes, Any] | None = None

    def publish(self, path: PurePath, data: bytes, **kwargs: Any) -> Signature:
        self.publishes += 1
        if self._late is not None:
            late_path, late_data, late_kwargs = self._late
            self._late = None
            super().publish(late_path, late_data, **late_kwargs)
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "ok":
            return super().publish(path, data, **kwargs)
        if step == "late":
            self._late = (path, data, kwargs)
            raise TIMEOUT
        if step == "timeout":
            raise TIMEOUT
        super().publish(path, data, **kwargs)
        if step == "land_then_refuse":
            raise PreconditionFailed(errno.ESTALE, "changed since it was read", str(path))
        raise TIMEOUT

    def signature(self, path: PurePath) -> Signature | None:
        if self.fail_reads:
            raise OSError(errno.EIO, "connection refused", str(path))
        return super().signature(path)

    def read_bytes(self, path: PurePath) -> bytes:
        if self.fail_reads:
            raise OSError(errno.EIO, "connection refused", str(path))
        return super().read_bytes(path)


@pytest.fixture
def store() -> LossyStore:
    lake = open_lake("memory:///lake")
    assert isinstance(lake.storage, ObjectStorage)
    return LossyStore(lake.storage)


FEED = Path("/lake/streams/tx")
NOW = dt.datetime(2025, 1, 15, 14, 30, tzinfo=dt.UTC)


def _doc(run: str, watermark: int) -> md.StreamMetadata:
    doc = md.new_document("stream", feed="tx", source="TX")
    assert isinstance(doc, md.StreamMetadata)
    record = md.ExportRecord(run, "2025-01-15T14:29:00Z", "2025-01-15T14:30:00Z", 0, "success",
                             window=md.Window(None, watermark))
    return md.after_stream_run(doc, record=record, written=[], columns=(),
                               watermark_ms=watermark, now=NOW)


def _on_store(store: LossyStore) -> md.StreamMetadata | None:
    path = layout.metadata_path(FEED)
    return None if not store.exists(path) else decode(store.read_bytes(path))  # type: ignore[return-value]


def _committed(store: LossyStore) -> md.MetadataStore:
    """A metadata store that loaded a first committed document (run r1)."""
    meta = md.MetadataStore(store)
    assert meta.load(FEED) is None
    meta.commit(FEED, _doc("r1", 1000))
    return meta


@pytest.mark.parametrize("step", ["land_then_timeout", "land_then_refuse"])
def test_a_commit_that_landed_is_a_commit_whatever_its_answer(store: LossyStore, step: str) -> None:
    """The write landed and its answer was lost (or a retry was refused by it): reading our
    own bytes back settles it as committed, logged, and the next commit goes on from it."""
    meta = _committed(store)
    store.plan = [step]
    with capture_logs() as logs:
        meta.commit(FEED, _doc("r2", 2000))
    on_store = _on_store(store)
    assert on_store is not None and on_store.exports[-1].run_id == "r2"
    settled = [e for e in logs if e["event"] == "metadata.commit_settled"]
    assert len(settled) == 1 and settled[0]["feed"] == "tx" and settled[0]["run_id"] == "r2"
    assert settled[0]["location"] == "memory:///lake/streams/tx/_metadata.json"
    assert store.publishes == 2  # r1 and r2: nothing published again
    meta.commit(FEED, _doc("r3", 3000))  # the settled signature is the one this store expects
    assert _on_store(store).exports[-1].run_id == "r3"  # type: ignore[union-attr]


def test_the_first_create_if_absent_commit_is_settled_too(store: LossyStore) -> None:
    """The first run's create-if-absent commit lands and a retry meets it: committed."""
    meta = md.MetadataStore(store)
    assert meta.load(FEED) is None
    store.plan = ["land_then_refuse"]
    meta.commit(FEED, _doc("r1", 1000))
    assert _on_store(store).exports[-1].run_id == "r1"  # type: ignore[union-attr]


def test_a_commit_that_did_not_land_is_published_once_more_under_the_same_condition(
    store: LossyStore,
) -> None:
    """Not landed and the document unchanged: the same bytes go once more If-Match, so a
    lost PUT can never land after this run gave up on it."""
    meta = _committed(store)
    store.plan = ["timeout"]
    with capture_logs() as logs:
        meta.commit(FEED, _doc("r2", 2000))
    assert _on_store(store).exports[-1].run_id == "r2"  # type: ignore[union-attr]
    assert store.publishes == 3
    assert [e["hint"] for e in logs if e["event"] == "metadata.commit_settled"] == [
        "the commit did not land; published again"]


def test_a_commit_landing_late_is_found_by_the_second_publish(store: LossyStore) -> None:
    """The lost PUT lands right before the second one: that one is refused, the read-back
    finds our bytes, and the commit is settled once, not twice."""
    meta = _committed(store)
    store.plan = ["late"]
    with capture_logs() as logs:
        meta.commit(FEED, _doc("r2", 2000))
    assert _on_store(store).exports[-1].run_id == "r2"  # type: ignore[union-attr]
    assert [e["hint"] for e in logs if e["event"] == "metadata.commit_settled"] == [
        "the commit landed; its answer was lost"]


def test_another_writers_document_fails_the_commit_and_says_so(store: LossyStore) -> None:
    """Another writer replaced the document: the run's commit is refused, naming the feed and
    saying another writer changed it; the other writer's document stays."""
    meta = _committed(store)
    other = md.MetadataStore(store)
    other.load(FEED)
    other.commit(FEED, _doc("intruder", 5000))
    store.plan = ["timeout"]  # whatever the answer was, the read-back decides
    with pytest.raises(LakeStateError, match="another writer changed the feed") as failure:
        meta.commit(FEED, _doc("r2", 2000))
    assert "feed 'tx'" in str(failure.value)
    assert not isinstance(failure.value, CommitOutcomeUnknown)
    assert _on_store(store).exports[-1].run_id == "intruder"  # type: ignore[union-attr]


def test_a_failed_read_back_is_an_unknown_outcome(store: LossyStore) -> None:
    """The answer is lost and the store cannot be read either: ``CommitOutcomeUnknown``, which
    says so and that the next run settles it (the write did land here)."""
    meta = _committed(store)
    store.plan = ["land_then_timeout"]
    original = store.publish

    def publish_then_go_away(path: PurePath, data: bytes, **kwargs: Any) -> Signature:
        try:
            return original(path, data, **kwargs)
        finally:
            store.fail_reads = True

    store.publish = publish_then_go_away  # type: ignore[method-assign]
    with pytest.raises(CommitOutcomeUnknown, match="whether it landed is unknown") as failure:
        meta.commit(FEED, _doc("r2", 2000))
    assert "feed 'tx'" in str(failure.value) and "next run" in str(failure.value)
    store.fail_reads = False
    assert _on_store(store).exports[-1].run_id == "r2"  # type: ignore[union-attr]
    with pytest.raises(LakeStateError, match="never loaded"):  # load first, then commit
        meta.commit(FEED, _doc("r3", 3000))


def test_a_store_that_fails_both_publishes_leaves_the_outcome_unknown(store: LossyStore) -> None:
    """Both PUTs fail without an answer while reads work: either could still land, so the
    outcome is unknown (the run keeps its files for the next run to judge)."""
    meta = _committed(store)
    store.plan = ["timeout", "timeout"]
    with pytest.raises(CommitOutcomeUnknown, match="a lost request may still land"):
        meta.commit(FEED, _doc("r2", 2000))
    assert _on_store(store).exports[-1].run_id == "r1"  # type: ignore[union-attr]


def test_on_local_disk_a_failed_commit_is_not_published_again(tmp_path: Path) -> None:
    """A local publish is a rename: its failure is final, nothing is read back or retried."""
    meta = md.MetadataStore()
    assert meta.load(tmp_path) is None
    meta.commit(tmp_path, _doc("r1", 1000))
    other = md.MetadataStore()
    other.load(tmp_path)
    other.commit(tmp_path, _doc("intruder", 5000))
    with pytest.raises(LakeStateError, match="changed since it was loaded"):
        meta.commit(tmp_path, _doc("r2", 2000))


@pytest.mark.parametrize(("kind", "order"), [
    ("s3", "race"), ("s3", "late_refuses_the_second"),
    ("azure", "late_refuses_the_second"), ("azure", "second_refuses_the_late"),
])
def test_on_real_servers_a_commit_landing_late_is_settled_once(
    kind: str, order: str, request: pytest.FixtureRequest,
) -> None:
    """Through a proxy in front of moto or Azurite, the commit PUT is held until the client
    gives up (a timeout) and forwarded only then: racing the read-back, or landing between
    the read-back and the second publish (which the server then refuses), or after the
    second publish (and the server refuses it). Each way the commit returns, the document is
    this run's, exactly one PUT of it was accepted, and the next commit goes on from it."""
    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    with FaultProxy(str(bucket.config["endpoint"])) as proxy:
        options = {k: str(v) for k, v in bucket.config.items()}
        options.update(endpoint=proxy.endpoint, allow_http="true", timeout="2s",
                       max_retries="0")
        lake = open_lake(f"{bucket.url}/lake", options)
        feed_dir = Path(lake.root) / "streams" / "tx"
        meta = md.MetadataStore(lake.storage)
        assert meta.load(feed_dir) is None
        meta.commit(feed_dir, _doc("r1", 1000))
        path = r"/lake/streams/tx/_metadata\.json"
        gate = None if order == "race" else threading.Event()
        late = Rule("PUT", path, "late", gate=gate)
        second = Rule("PUT", path, "hook")
        if order == "late_refuses_the_second":  # the second publish lets the late one land first
            second.hook = lambda: (gate.set(), late.forwarded.wait(10))  # type: ignore[union-attr]
        proxy.add(late, second)
        with capture_logs() as logs:
            meta.commit(feed_dir, _doc("r2", 2000))
        if gate is not None:
            gate.set()  # second_refuses_the_late: only now does the late PUT go to the server
        assert late.forwarded.wait(10) and late.fired == 1
        assert [e["event"] for e in logs] == ["metadata.commit_settled"]
        accepted = [s for s in late.answered + second.answered if s < 300]
        assert len(accepted) == 1, (late.answered, second.answered)
        if order == "late_refuses_the_second":
            assert late.answered[0] < 300 and second.answered == [412]
        elif order == "second_refuses_the_late":
            assert second.answered[0] < 300 and late.answered == [412]
        meta.commit(feed_dir, _doc("r3", 3000))
        direct = {k: str(v) for k, v in bucket.config.items()} | {"allow_http": "true"}
        doc = md.MetadataStore(open_lake(f"{bucket.url}/lake", direct).storage).load(feed_dir)
        assert doc is not None and doc.exports[-1].run_id == "r3"
