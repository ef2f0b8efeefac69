"""`verify`, `repair`, `metadata` and `status` on Delta feeds, with the real CLI against the sandbox.

The truth is the Delta log as delta-rs reads it and the sandbox's rows, never lakeexportd's
own summary: a lake of two ``format: delta`` feeds (a stream and a table exported twice, so
the table has an older version readers may still time-travel to) is damaged in the ways an
operator meets (a lost data file, a stale or missing ``_metadata.json``, an interrupted run's
leftovers, a stranger's file), and the commands must say so, fix only what is lakeexportd's,
and change nothing on ``--dry-run``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import obstore
import pytest
from deltalake import DeltaTable
from objectlake import store_config
from objectstores import Bucket

from lakeexportd.cli import commands as cli
from lakeexportd.sandbox import Sandbox

FEEDS = """
feeds:
  - {name: tx, source: TRANSACTION_FLATTENED, kind: stream, settle_delay: 2s, format: delta}
  - {name: users, source: USER_SUMMARY, kind: table, format: delta}
"""


def write_config(directory: Path, url: str, lake: Path) -> Path:
    path = directory / "lakeexportd.yaml"
    path.write_text(f"ksqldb: {{url: '{url}', max_retries: 1}}\nlake: {{root: '{lake}'}}\n{FEEDS}")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=17, preload=500, preload_days=3) as sb:
        yield sb


@pytest.fixture(scope="module")
def exported(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two `lakeexportd export --all` runs: the stream committed twice, the table two versions."""
    base = tmp_path_factory.mktemp("template")
    config = write_config(base, sandbox.url, base / "lake")
    for _ in range(2):
        assert cli.main(["export", "-c", str(config), "--all"]) == 0
    return base / "lake"


@pytest.fixture
def lake(exported: Path, tmp_path: Path) -> Path:
    shutil.copytree(exported, tmp_path / "lake")
    return tmp_path / "lake"


@pytest.fixture
def config(sandbox: Sandbox, lake: Path, tmp_path: Path) -> Path:
    return write_config(tmp_path, sandbox.url, lake)


def ids(table_dir: Path, version: int | None = None) -> list[str]:
    """TRANSACTION_IDs (stream) or USER_IDs (table) as delta-rs reads the table."""
    table = DeltaTable(str(table_dir), version=version).to_pyarrow_table()
    key = "TRANSACTION_ID" if "TRANSACTION_ID" in table.column_names else "USER_ID"
    return sorted(table.column(key).to_pylist())


def snapshot(lake: Path) -> dict[str, bytes]:
    """Every file of the lake and its bytes (what a read-only command must not change)."""
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted(lake.rglob("*"))
            if p.is_file() and p.name not in (".lock",)}


def test_metadata_and_status_show_the_format_and_the_delta_version(
        config: Path, lake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`metadata list --json`, the text report and `status` say delta and the log's version."""
    c = ["-c", str(config)]
    code, out, _ = run(capsys, "metadata", "list", "--json", *c)
    assert code == 0
    rows = {s["feed"]: s for s in json.loads(out)}
    for name, kind in (("tx", "streams"), ("users", "tables")):
        version = DeltaTable(str(lake / kind / name)).version()
        assert rows[name]["format"] == "delta"
        assert rows[name]["delta_version"] == version
    code, out, _ = run(capsys, "metadata", "report", *c)
    assert code == 0 and out.splitlines()[0].split()[:3] == ["FEED", "KIND", "FORMAT"]
    users_version = DeltaTable(str(lake / "tables/users")).version()
    assert any(line.split()[:4] == ["users", "table", "delta", f"v{users_version}"]
               for line in out.splitlines())
    code, out, _ = run(capsys, "status", "--json", *c)
    assert code == 0
    status = {r["feed"]: r for r in json.loads(out)["feeds"]}
    assert status["users"]["format"] == "delta"
    assert status["users"]["delta_version"] == users_version


def test_verify_a_consistent_delta_lake_and_a_file_the_log_lists_but_is_gone(
        config: Path, lake: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """A fresh Delta lake verifies clean (against the sandbox's rows too, with --source); a
    deleted file of the log's current version is one line naming it, and exit 1."""
    c = ["-c", str(config)]
    truth = sorted(sandbox.arrow("TRANSACTION_FLATTENED").column("TRANSACTION_ID").to_pylist())
    assert ids(lake / "streams/tx") == truth
    code, out, _ = run(capsys, "verify", "--source", "--deep", *c)
    assert code == 0, out
    assert "tx: ok" in out and "users: ok" in out and "Delta version" in out
    victim = sorted((lake / "streams/tx").rglob("data_*.parquet"))[0]
    victim.unlink()
    code, out, _ = run(capsys, "verify", "tx", *c)
    rel = victim.relative_to(lake / "streams/tx").as_posix()
    assert code == 1
    assert [line for line in out.splitlines() if rel in line] == [
        line for line in out.splitlines() if "listed by the Delta log" in line]
    assert f"tx: {rel}: listed by the Delta log" in out


def test_a_stale_summary_is_reported_and_repair_rewrites_it_from_the_log(
        config: Path, lake: Path, sandbox: Sandbox, capsys: pytest.CaptureFixture[str]) -> None:
    """_metadata.json that lost a file and its watermark is reported against the log;
    `repair --dry-run` says it would rewrite it and changes nothing; `repair` rewrites it to
    what the log says, keeping its export history; verify is clean again."""
    c = ["-c", str(config)]
    path = lake / "streams/tx/_metadata.json"
    good = json.loads(path.read_text())
    bad = json.loads(path.read_text())
    lost = bad["partitions"][0]["files"].pop(0)
    bad["watermark"]["rowtime_ms"] -= 1000
    path.write_text(json.dumps(bad))
    code, out, _ = run(capsys, "verify", "tx", *c)
    assert code == 1
    assert f"{lost['name']}: in the Delta log but not listed in _metadata.json" in out
    assert "watermark is" in out and "lakeexportd repair tx" in out
    before = snapshot(lake)
    code, out, _ = run(capsys, "repair", "--dry-run", "tx", *c)
    assert code == 0 and "would rewrite _metadata.json from the Delta log" in out
    assert snapshot(lake) == before
    code, out, _ = run(capsys, "repair", "tx", *c)
    assert code == 0 and "rewrote _metadata.json from the Delta log" in out
    fixed = json.loads(path.read_text())
    log_table = DeltaTable(str(lake / "streams/tx"))
    assert fixed["watermark"]["rowtime_ms"] == log_table.transaction_version("lakeexportd:tx")
    assert fixed["total_records"] == log_table.to_pyarrow_table().num_rows \
        == sandbox.arrow("TRANSACTION_FLATTENED").num_rows
    assert fixed["partitions"] == good["partitions"] and fixed["exports"] == good["exports"]
    assert run(capsys, "verify", "tx", *c)[0] == 0


def test_repair_writes_a_missing_summary_and_refuses_rebuild_from_files(
        config: Path, lake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A Delta feed without _metadata.json: verify says so; `repair --rebuild` (the Parquet
    rebuild from files) is refused with the way that works; `repair` writes it from the log,
    the newest retention_versions snapshots listed."""
    c = ["-c", str(config)]
    path = lake / "tables/users/_metadata.json"
    path.unlink()
    code, out, _ = run(capsys, "verify", "users", *c)
    assert code == 1 and "users: _metadata.json: missing" in out
    code, _, err = run(capsys, "repair", "--rebuild", "--yes", "users", *c)
    assert code == 1 and "is a Delta table" in err and "without --rebuild" in err
    assert not path.exists()
    code, out, _ = run(capsys, "repair", "users", *c)
    assert code == 0 and "it missing" in out
    doc = json.loads(path.read_text())
    log_table = DeltaTable(str(lake / "tables/users"))
    assert doc["delta_version"] == log_table.version()
    assert doc["current_version"] == log_table.version()
    assert doc["total_records"] == log_table.to_pyarrow_table().num_rows
    assert len(doc["versions"]) == 2
    assert run(capsys, "verify", "users", *c)[0] == 0


def test_repair_removes_only_lakeexportds_leftovers_and_keeps_time_travel(
        config: Path, lake: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Leftovers of an interrupted run (an unlisted data file, a temp file) and a stranger's
    file: verify names all three; --dry-run lists and keeps them; repair removes lakeexportd's
    two, leaves the stranger's (exit 1 until it is moved), and the table's older version still
    reads as before (its files are tombstones, not leftovers)."""
    c = ["-c", str(config)]
    table_dir = lake / "tables/users"
    old_version = DeltaTable(str(table_dir)).version() - 1
    old_ids = ids(table_dir, old_version)
    current_ids = ids(table_dir)
    some = sorted(table_dir.rglob("snapshot_*.parquet"))[0]
    leftover = some.parent / "snapshot_20200101_000000.parquet"
    shutil.copyfile(some, leftover)
    temp = some.parent / ".snapshot_20200101_000001.parquet.tmp"
    temp.write_bytes(b"half a file")
    foreign = table_dir / "notes.txt"
    foreign.write_text("someone's notes")
    code, out, _ = run(capsys, "verify", "users", *c)
    assert code == 1
    for p in (leftover, temp):
        assert f"{p.relative_to(table_dir).as_posix()}: in the table's folder but no Delta " \
               "commit lists it" in out
    assert "notes.txt: in the table's folder, not written by lakeexportd" in out
    before = snapshot(lake)
    code, out, _ = run(capsys, "repair", "--dry-run", "users", *c)
    assert code == 1 and "would remove 2 unlisted files" in out and "notes.txt" in out
    assert snapshot(lake) == before
    code, out, _ = run(capsys, "repair", "users", *c)
    assert code == 1 and "removed 2 unlisted files" in out
    assert not leftover.exists() and not temp.exists() and foreign.exists()
    assert ids(table_dir, old_version) == old_ids and ids(table_dir) == current_ids
    foreign.unlink()
    assert run(capsys, "verify", "users", *c)[0] == 0


def test_verify_and_repair_a_delta_feed_on_s3(
        sandbox: Sandbox, s3_bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """On S3 (moto): an interrupted run's object is reported by verify, kept by repair while
    younger than orphan_grace (a paused writer may still commit it), removed once the grace
    is 0, and the table reads the sandbox's rows throughout."""
    flow, _, secret, root = store_config(s3_bucket)
    monkeypatch.setenv("LAKE_SECRET", secret)

    def configured(grace: str) -> list[str]:
        path = tmp_path / f"lakeexportd-{grace}.yaml"
        path.write_text(
            f"ksqldb: {{url: '{sandbox.url}', max_retries: 1}}\n"
            f"lake: {{root: '{root}', storage: {flow}, orphan_grace: {grace}}}\n"
            f"logging: {{dir: '{tmp_path / 'logs'}'}}\n"
            "feeds:\n  - {name: tx, source: TRANSACTION_FLATTENED, kind: stream, "
            "format: delta}\n")
        return ["-c", str(path)]

    hour, now = configured("1h"), configured("0s")
    assert run(capsys, "export", "tx", *hour)[0] == 0
    prefix = "lake/streams/tx/"
    keys = [o["path"] for batch in obstore.list(s3_bucket.store, prefix=prefix) for o in batch]
    data = sorted(k for k in keys if k.endswith(".parquet") and "/data_" in k)[0]
    stray = data.rsplit("/", 1)[0] + "/data_20200101_000000.parquet"
    obstore.put(s3_bucket.store, stray, bytes(obstore.get(s3_bucket.store, data).bytes()))
    code, out, _ = run(capsys, "verify", "tx", *hour)
    assert code == 1 and "no Delta commit lists it" in out and "orphan_grace" in out
    code, out, _ = run(capsys, "repair", "tx", *hour)
    assert code == 0 and "removed 0 unlisted files" in out and "kept 1 unlisted files" in out
    obstore.head(s3_bucket.store, stray)  # still there
    code, out, _ = run(capsys, "repair", "tx", *now)
    assert code == 0 and "removed 1 unlisted files" in out
    with pytest.raises(FileNotFoundError):
        obstore.head(s3_bucket.store, stray)
    assert run(capsys, "verify", "tx", *now)[0] == 0
    code, out, _ = run(capsys, "metadata", "list", "--json", *now)
    (row,) = json.loads(out)
    assert row["format"] == "delta"
    assert row["records"] == sandbox.arrow("TRANSACTION_FLATTENED").num_rows
