"""Delta feeds: the log, not ``_metadata.json``, decides where a run starts (issue 13, req. 2).

Scenarios on a stream feed, each with rows generated after a committed run (so appending
twice would show): a run killed right after its log commit, then rerun; ``_metadata.json``
deleted, or restored from an older copy; and two writers racing for one commit. The table
is read with delta-rs and compared with the sandbox's rows (tests/deltacheck.py); the
exports run as real ``lakeexportd export`` processes (the ones paused or killed) or in
process (plain setup runs).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import obstore
import pytest
from deltacheck import (
    Cli,
    Place,
    assert_rows_exactly_once,
    check_feed,
    config_text,
    log_files,
    run_cli,
    start_cli,
)
from objectlake import store_config
from objectstores import Bucket

from export.test_crash import setup_run
from lakeexportd.sandbox import Sandbox

SOURCE = "TRANSACTION_STREAM"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=17, preload=600, preload_days=3) as sb:
        yield sb


@pytest.fixture(params=["local", "s3"])
def place(request: pytest.FixtureRequest, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Place:
    return make_place(request.param, request, tmp_path, monkeypatch)


def make_place(where: str, request: pytest.FixtureRequest | None, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch, bucket: Bucket | None = None) -> Place:
    if where == "local":
        return Place(root=str(tmp_path / "lake"))
    if bucket is None:
        assert request is not None
        bucket = request.getfixturevalue("s3_bucket")
    flow, options, secret, root = store_config(bucket)
    monkeypatch.setenv("LAKE_SECRET", secret)
    return Place(root=root, lake_extra=f", lease_ttl: 1s, storage: {flow}", bucket=bucket,
                 options=options)


def configure(tmp_path: Path, sandbox: Sandbox, place: Place, lock_wait: str = "2s") -> Path:
    """settle_delay 0s: rows generated just after a run are in the next run's window."""
    config = tmp_path / f"lakeexportd-{lock_wait}.yaml"
    config.write_text(config_text(sandbox.url, place, tmp_path / "logs", settle="0s",
                                  lock_wait=lock_wait))
    return config


def more_rows(sandbox: Sandbox, place: Place, rows: int = 120) -> None:
    """Rows the next run must export: stamped after the log's watermark, before now."""
    mark = place.table("stream", "tx").transaction_version("lakeexportd:tx")
    assert mark is not None
    sandbox.generate(rows, (mark + 1, mark + 2))


def export(config: Path, name: str, failpoint: str | None = None) -> Cli:
    return run_cli(["export", "-c", str(config), "tx"], config.parent / f"{name}.out", failpoint)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def state(pid: int) -> str:
    """The process state letter from /proc/<pid>/stat (``T``: stopped)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def writes(place: Place) -> list[dict[str, object]]:
    """lakeexportd's append commits in the log, oldest first."""
    history = place.table("stream", "tx").history()
    return sorted((h for h in history if "lakeexportd.run_id" in h and h["operation"] == "WRITE"),
                  key=lambda h: int(str(h["version"])))


def test_a_run_killed_after_its_log_commit_is_not_appended_again(
    sandbox: Sandbox, tmp_path: Path, place: Place,
) -> None:
    """Killed at delta.after_log_commit, the summary still names the old watermark; the rerun
    starts from the log's and appends nothing twice."""
    config = configure(tmp_path, sandbox, place)
    setup_run(config, "tx")
    more_rows(sandbox, place)
    before = place.summary("stream", "tx")["watermark"]["rowtime_ms"]
    killed = export(config, "killed", "delta.after_log_commit")
    assert killed.wait() == -signal.SIGKILL, killed.stderr
    committed = place.table("stream", "tx").transaction_version("lakeexportd:tx")
    assert committed is not None and committed > before
    assert place.summary("stream", "tx")["watermark"]["rowtime_ms"] == before  # stale
    rerun = export(config, "rerun")
    assert rerun.wait() == 0, rerun.stderr
    check_feed(place, "stream", "tx", sandbox.arrow(SOURCE))
    # the killed run's commit holds the new rows; the rerun's window started after it
    assert [int(str(w["lakeexportd.rows"])) for w in writes(place)][-2:] == [120, 0]
    assert place.summary("stream", "tx")["watermark"]["rowtime_ms"] >= committed


def read_summary(place: Place) -> bytes:
    if place.bucket is None:
        return (Path(place.uri("stream", "tx")) / "_metadata.json").read_bytes()
    return bytes(obstore.get(place.bucket.store, "lake/streams/tx/_metadata.json").bytes())


def put_summary(place: Place, data: bytes | None) -> None:
    """Replace (or with None delete) ``_metadata.json`` as an operator's restore would."""
    if place.bucket is None:
        path = Path(place.uri("stream", "tx")) / "_metadata.json"
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
    elif data is None:
        obstore.delete(place.bucket.store, "lake/streams/tx/_metadata.json")
    else:
        obstore.put(place.bucket.store, "lake/streams/tx/_metadata.json", data)


@pytest.mark.parametrize(("where", "damage"), [
    ("local", "deleted"), ("local", "restored_from_backup"), ("s3", "restored_from_backup")])
def test_a_lost_or_old_summary_does_not_move_the_watermark_back(
    sandbox: Sandbox, tmp_path: Path, where: str, damage: str, request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``_metadata.json`` deleted, or put back from a copy taken two runs earlier: the next
    run starts at the log's watermark (no row exported again) and rewrites the summary.
    (The run reads the watermark from the log the same way on every store: S3 once.)"""
    place = make_place(where, request, tmp_path, monkeypatch)
    config = configure(tmp_path, sandbox, place)
    setup_run(config, "tx")
    backup = read_summary(place)
    for _ in range(2):
        more_rows(sandbox, place)
        setup_run(config, "tx")
    commits = len(writes(place))
    put_summary(place, None if damage == "deleted" else backup)
    more_rows(sandbox, place)
    after = export(config, "after")
    assert after.wait() == 0, after.stderr
    check_feed(place, "stream", "tx", sandbox.arrow(SOURCE))
    assert len(writes(place)) == commits + 1


def test_a_local_writer_paused_before_its_commit_holds_the_feed_lock(
    sandbox: Sandbox, tmp_path: Path,
) -> None:
    """On a local lake two writers of a feed serialize on its flock: a second export while
    the first is frozen before its commit gives up after lock_wait and writes nothing; the
    first, resumed, commits; each row is in the table once."""
    place = Place(root=str(tmp_path / "lake"))
    config = configure(tmp_path, sandbox, place)
    setup_run(config, "tx")
    more_rows(sandbox, place)
    first = start_cli(["export", "-c", str(config), "tx"], tmp_path / "first.out",
                      "export.before_commit:stop")
    try:
        wait_for(lambda: state(first.pid) == "T", "the first writer frozen before its commit")
        files = place.keys("stream", "tx")
        second = export(config, "second")
        assert second.wait() != 0
        assert f"is locked by another lakeexportd process (pid {first.pid})" in second.stderr, \
            second.stderr
        assert place.keys("stream", "tx") == files, "the refused writer wrote files"
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait() == 0, first.stderr
    check_feed(place, "stream", "tx", sandbox.arrow(SOURCE))


def foreign_commit(place: Place) -> None:
    """Another Delta writer's commit (an operator's property change): moves the log's
    version, not the feed's transaction."""
    place.table("stream", "tx").alter.set_table_properties(
        {"delta.logRetentionDuration": "interval 30 days"})


@pytest.mark.parametrize("point", ["export.before_commit", "delta.before_log_commit"])
def test_a_paused_writer_loses_the_race_for_the_log_and_publishes_nothing(
    sandbox: Sandbox, tmp_path: Path, place: Place, point: str,
) -> None:
    """A writer frozen right before its commit (before its fence, or after it, right before
    the log's put-if-absent) while another commit lands: resumed, its commit is refused and
    none of its rows is in the table; the next run exports them, once. On S3 the other
    commit is a second lakeexportd that took the lease over (ttl 1s); on the local disk,
    where the flock keeps a second lakeexportd out, a foreign Delta writer's commit."""
    config = configure(tmp_path, sandbox, place)
    racer = configure(tmp_path, sandbox, place, lock_wait="5s")
    setup_run(config, "tx")
    more_rows(sandbox, place)
    first = start_cli(["export", "-c", str(config), "tx"], tmp_path / "first.out",
                      f"{point}:stop")
    try:
        wait_for(lambda: state(first.pid) == "T", "the first writer frozen before its commit")
        commits = len(writes(place))
        if place.bucket is None:
            foreign_commit(place)
        else:
            second = export(racer, "second")
            assert second.wait() == 0, second.stderr
            assert len(writes(place)) == commits + 1
            check_feed(place, "stream", "tx", sandbox.arrow(SOURCE))
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait() not in (0, -signal.SIGKILL), first.stderr
    refusal = ("another commit reached" if point == "delta.before_log_commit"
               or place.bucket is None else "this run stops before its commit")
    assert refusal in first.stderr, first.stderr
    table = place.table("stream", "tx")
    version = table.version()
    # the refused run removed every file it wrote: only the log's files are left
    assert place.keys("stream", "tx") == set(log_files(table))
    assert len(writes(place)) == commits + (0 if place.bucket is None else 1)
    if place.bucket is None:  # the refused run's rows are exported by the next run
        assert export(config, "next").wait() == 0
        assert place.table("stream", "tx").version() == version + 1
    check_feed(place, "stream", "tx", sandbox.arrow(SOURCE))


def test_repair_removes_only_what_no_log_version_lists(sandbox: Sandbox, tmp_path: Path) -> None:
    """After a run killed before its commit (its files unlisted) and one killed right after
    its log commit (``_metadata.json`` now lags the log), `lakeexportd repair` removes the
    first run's files and none the log lists (it once went by the stale summary and deleted
    the committed run's files, leaving a table no reader could read)."""
    place = Place(root=str(tmp_path / "lake"))
    config = configure(tmp_path, sandbox, place)
    setup_run(config, "tx")
    more_rows(sandbox, place)
    assert export(config, "orphans", "append.after_finish").wait() == -signal.SIGKILL
    orphans = place.keys("stream", "tx") - set(log_files(place.table("stream", "tx")))
    assert orphans
    assert export(config, "killed", "delta.after_log_commit").wait() == -signal.SIGKILL
    listed = set(log_files(place.table("stream", "tx")))
    dry = run_cli(["repair", "-c", str(config), "tx", "--dry-run"], tmp_path / "dry.out")
    assert dry.wait() == 0, dry.stderr
    assert place.keys("stream", "tx") == listed | orphans
    repair = run_cli(["repair", "-c", str(config), "tx"], tmp_path / "repair.out")
    assert repair.wait() == 0, repair.stderr
    assert place.keys("stream", "tx") == listed
    assert all(key in repair.stderr for key in orphans), repair.stderr
    setup_run(config, "tx")
    check_feed(place, "stream", "tx", sandbox.arrow(SOURCE))


def test_a_frozen_writer_whose_commit_still_lands_leaves_no_duplicate_on_s3(
    sandbox: Sandbox, tmp_path: Path, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first writer passed its fence and froze right before the log commit; a second
    took the lease over (ttl 1s), read the log and froze before its own commit. The first,
    resumed, commits (nobody took its log version); the second, resumed, is refused by the
    log (its version is taken) and removes its files: every row once."""
    place = make_place("s3", None, tmp_path, monkeypatch, s3_bucket)
    config = configure(tmp_path, sandbox, place)
    racer = configure(tmp_path, sandbox, place, lock_wait="5s")
    setup_run(config, "tx")
    more_rows(sandbox, place)
    first = start_cli(["export", "-c", str(config), "tx"], tmp_path / "first.out",
                      "delta.before_log_commit:stop")
    second: Cli | None = None
    try:
        wait_for(lambda: state(first.pid) == "T", "the first writer frozen before its commit")
        second = start_cli(["export", "-c", str(racer), "tx"], tmp_path / "second.out",
                           "delta.before_log_commit:stop")
        wait_for(lambda: state(second.pid) == "T", "the second writer frozen before its commit")
        os.kill(first.pid, signal.SIGCONT)
        assert first.wait() == 0, first.stderr
    finally:
        for cli in (first, second):
            if cli is not None and cli.process.exitcode is None:
                os.kill(cli.pid, signal.SIGCONT)
    assert second is not None
    assert second.wait() not in (0, -signal.SIGKILL), second.stderr
    assert "another commit reached" in second.stderr, second.stderr
    table = place.table("stream", "tx")
    assert place.keys("stream", "tx") == set(log_files(table))
    assert_rows_exactly_once(table.to_pyarrow_table(), sandbox.arrow(SOURCE), "TRANSACTION_ID")
    # The first writer lost its lease before writing the summary (the log holds its run):
    # the next run rewrites the summary from the log and exports nothing twice.
    assert "delta.summary_not_written" in first.stderr, first.stderr
    setup_run(config, "tx")
    check_feed(place, "stream", "tx", sandbox.arrow(SOURCE))
