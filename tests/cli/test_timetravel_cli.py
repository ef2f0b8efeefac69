"""Time travel on Parquet feeds end to end: `lakeexportd export` three times against the sandbox
with rows added between runs, then `history` and `files --as-of | --version` as operators run
them. The files they name are read with pyarrow and Polars and compared with the rows the
sandbox held at each run (ground truth from the sandbox, never from lakeexportd)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lakecheck import assert_exactly_once
from objectstores import Bucket

from lakeexportd.cli import commands as cli
from lakeexportd.sandbox import Sandbox

README = Path(__file__).resolve().parents[2] / "README.md"
STREAM, TABLE = "TRANSACTION_FLATTENED", "USER_SUMMARY"
ADDED = (30, 20, 10)  # rows inserted before runs 1, 2 and 3
FEEDS = """
feeds:
  - {name: transaction_stream, source: TRANSACTION_FLATTENED, kind: stream, settle_delay: 0s}
  - {name: user_summary, source: USER_SUMMARY, kind: table, retention_versions: 2}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def next_second() -> None:
    """Sleep past the next whole second: commit times are whole seconds, so a later run's
    commit is then strictly after any moment taken before the sleep."""
    time.sleep(1.05 - time.time() % 1)


@dataclass
class Travelled:
    config: Path
    lake: Path
    before: float  # epoch seconds before the first run
    after: list[float] = field(default_factory=list)  # epoch seconds after run k (k = 0, 1, 2)
    streams: list[pa.Table] = field(default_factory=list)  # the stream's rows after run k
    tables: list[pa.Table] = field(default_factory=list)  # the table's rows at run k

    def c(self) -> list[str]:
        return ["-c", str(self.config)]


def _export_three_times(sb: Sandbox, config: Path, lake: Path) -> Travelled:
    travelled = Travelled(config, lake, before=time.time())
    next_second()
    for k, rows in enumerate(ADDED):
        if k:
            next_second()
        assert sb.generate(rows) == rows
        assert cli.main(["export", "-c", str(config), "--all"]) == 0
        travelled.after.append(time.time())
        travelled.streams.append(sb.arrow(STREAM))
        travelled.tables.append(sb.arrow(TABLE).drop_columns(["ROWTIME"]))
    return travelled


# max_disorder_ms=0: the sandbox pulls no row back behind a committed watermark (a late row,
# which no run exports), so each run holds exactly the rows inserted before it.
@pytest.fixture(scope="module")
def travelled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Travelled]:
    base = tmp_path_factory.mktemp("timetravel")
    with Sandbox.start(seed=13, preload=0, max_disorder_ms=0) as sb:
        config = base / "lakeexportd.yaml"
        config.write_text(f"ksqldb: {{url: '{sb.url}', max_retries: 1}}\n"
                          f"lake: {{root: '{base / 'lake'}'}}\n{FEEDS}")
        yield _export_three_times(sb, config, base / "lake")


def _lake_state(lake: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in lake.rglob("*") if p.is_file()}


def _urls(capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    code, out, err = run(capsys, "files", *args, "--json")
    assert code == 0, err
    return [f["url"] for f in json.loads(out)]


def test_history_of_a_stream_lists_each_run_with_its_rows(
    travelled: Travelled, capsys: pytest.CaptureFixture[str],
) -> None:
    """Three runs, newest first, as `append` commits with the rows inserted before each; the
    text table has the same; --limit keeps the newest; nothing in the lake changes."""
    before = _lake_state(travelled.lake)
    code, out, _ = run(capsys, "history", "transaction_stream", "--json", *travelled.c())
    assert code == 0
    entries = json.loads(out)
    assert [set(e) for e in entries] == [{"version", "time", "operation", "rows", "bytes",
                                          "files", "run_id", "current", "readable"}] * 3
    assert [e["rows"] for e in entries] == list(reversed(ADDED))
    assert {(e["version"], e["operation"]) for e in entries} == {(None, "append")}
    times = [e["time"] for e in entries]
    assert times == sorted(times, reverse=True) and len(set(times)) == 3
    assert all(e["files"] >= 1 and e["bytes"] > 0 for e in entries)
    code, out, _ = run(capsys, "history", "transaction_stream", *travelled.c())
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["VERSION", "TIME", "OPERATION", "ROWS", "FILES",
                                              "BYTES", "RUN", "NOTE"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["-", e["time"], "append", str(e["rows"])] for e in entries]
    code, out, _ = run(capsys, "history", "transaction_stream", "--limit", "1", "--json", *travelled.c())
    assert code == 0 and json.loads(out) == entries[:1]
    assert _lake_state(travelled.lake) == before


def test_files_as_of_a_moment_between_runs_gives_exactly_the_rows_committed_by_then(
    travelled: Travelled, capsys: pytest.CaptureFixture[str],
) -> None:
    """--as-of after run k (before run k+1) lists run 1..k's files; pyarrow and Polars read
    exactly the rows the sandbox held then; a future TIME gives every file."""
    for k in (0, 1):
        stamp = str(int(travelled.after[k] * 1000))
        urls = _urls(capsys, "transaction_stream", "--as-of", stamp, *travelled.c())
        assert_exactly_once(pq.read_table(urls), travelled.streams[k])
        assert pl.read_parquet(urls).height == sum(ADDED[:k + 1])
    everything = _urls(capsys, "transaction_stream", "--as-of", "2099-01-01T00:00:00Z", *travelled.c())
    assert everything == _urls(capsys, "transaction_stream", *travelled.c())
    assert_exactly_once(pq.read_table(everything), travelled.streams[2])


def test_a_stream_refuses_version_and_a_time_before_its_first_commit(
    travelled: Travelled, capsys: pytest.CaptureFixture[str],
) -> None:
    """--version on a Parquet stream and an --as-of before the first run exit 1 saying why."""
    code, _, err = run(capsys, "files", "transaction_stream", "--version", "1", *travelled.c())
    assert code == 1 and "is a Parquet stream: it has no numbered versions; use --as-of" in err
    early = str(int(travelled.before * 1000) - 60_000)
    code, out, err = run(capsys, "files", "transaction_stream", "--as-of", early, *travelled.c())
    assert code == 1 and out == "" and "feed 'transaction_stream' has no commit at or before" in err
    assert "its first known commit is at" in err


def test_a_tables_history_and_past_versions_hold_the_table_as_it_was(
    travelled: Travelled, capsys: pytest.CaptureFixture[str],
) -> None:
    """history lists v3 (current), v2 and v1 (pruned by retention_versions: 2, not readable);
    --version 2 and --as-of between runs 2 and 3 give the rows the table held at run 2."""
    code, out, _ = run(capsys, "history", "user_summary", "--json", *travelled.c())
    entries = json.loads(out)
    assert code == 0 and [(e["version"], e["current"], e["readable"]) for e in entries] == [
        (3, True, True), (2, False, True), (1, False, False)]
    assert [e["rows"] for e in entries] == [t.num_rows for t in reversed(travelled.tables)]
    assert {e["operation"] for e in entries} == {"overwrite"}
    code, out, _ = run(capsys, "history", "user_summary", *travelled.c())
    lines = out.splitlines()
    assert lines[1].split()[0] == "v3" and lines[1].endswith("current")
    assert lines[3].split()[0] == "v1" and lines[3].endswith("not readable (retention)")
    for args in (["--version", "2"], ["--as-of", str(int(travelled.after[1] * 1000))]):
        urls = _urls(capsys, "user_summary", *args, *travelled.c())
        assert all("/version=v2/" in u for u in urls), args
        assert_exactly_once(pq.read_table(urls), travelled.tables[1], key="USER_ID")
    assert travelled.tables[1] != travelled.tables[2]  # the table changed between the runs
    code, _, err = run(capsys, "files", "user_summary", "--version", "1", *travelled.c())
    assert code == 1 and "keeps no version 1 (kept: 2, 3; older versions were removed" in err
    code, _, err = run(capsys, "files", "user_summary", "--as-of", str(int(travelled.after[0] * 1000)),
                       *travelled.c())
    assert code == 1 and "has no version committed at or before" in err


def test_history_help_and_an_unknown_feed(travelled: Travelled,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`history -h` says what it lists and its bounds; an unknown feed or a bad --limit exit 2."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["history", "-h"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Only the last 100 runs are recorded" in text and "not readable" in text
    assert run(capsys, "history", "nope", *travelled.c())[0] == 2
    with pytest.raises(SystemExit) as exit_:
        cli.main(["history", "transaction_stream", "--limit", "0", *travelled.c()])
    assert exit_.value.code == 2


def test_time_travel_on_an_s3_lake(s3_bucket: Bucket, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """On S3 (moto) too: two runs, history shows both, --as-of between them gives the first
    run's objects, and Polars reads exactly its rows from the store."""
    cfg = s3_bucket.config
    monkeypatch.setenv("LAKE_KEY_ID", str(cfg["access_key_id"]))
    monkeypatch.setenv("LAKE_SECRET", str(cfg["secret_access_key"]))
    with Sandbox.start(seed=14, preload=0, max_disorder_ms=0) as sb:
        config = tmp_path / "lakeexportd.yaml"
        config.write_text(
            f"ksqldb: {{url: '{sb.url}', max_retries: 1}}\n"
            f"lake:\n  root: {s3_bucket.url}/lake\n"
            f"  storage: {{endpoint: '{cfg['endpoint']}', region: '{cfg['region']}', "
            "access_key_id_env: LAKE_KEY_ID, secret_access_key_env: LAKE_SECRET, "
            "allow_http: true}\n"
            f"logging: {{dir: '{tmp_path / 'logs'}'}}\n"
            "feeds:\n  - {name: transaction_stream, source: TRANSACTION_FLATTENED, kind: stream, "
            "settle_delay: 0s}\n")
        sb.generate(25)
        assert cli.main(["export", "-c", str(config), "transaction_stream"]) == 0
        between = time.time()
        first = sb.arrow(STREAM)
        next_second()
        sb.generate(15)
        assert cli.main(["export", "-c", str(config), "transaction_stream"]) == 0
    capsys.readouterr()
    code, out, _ = run(capsys, "history", "transaction_stream", "--json", "-c", str(config))
    assert code == 0 and [e["rows"] for e in json.loads(out)] == [15, 25]
    urls = _urls(capsys, "transaction_stream", "--as-of", str(int(between * 1000)), "-c", str(config))
    assert urls and all(u.startswith(f"{s3_bucket.url}/lake/streams/transaction_stream/year=") for u in urls)
    storage = {"aws_access_key_id": cfg["access_key_id"],
               "aws_secret_access_key": cfg["secret_access_key"],
               "aws_region": cfg["region"], "aws_endpoint_url": cfg["endpoint"],
               "aws_allow_http": "true"}
    then = pl.read_parquet(urls, storage_options=storage)
    assert then.height == 25 == first.num_rows
    assert sorted(then["TRANSACTION_ID"]) == sorted(first.column("TRANSACTION_ID").to_pylist())


def test_the_readmes_time_travel_snippet_reads_a_past_state(
    travelled: Travelled, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The README's snippet, run as written (only its config and TIME pointed at this lake):
    the stream and the table as they were between runs 2 and 3, and the table's version 2."""
    section = README.read_text().split("\n## Time travel\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.S)
    between = dt.datetime.fromtimestamp(travelled.after[1], dt.UTC)
    code, replaced = re.subn(r'then = "[^"]+"', f'then = "{between:%Y-%m-%dT%H:%M:%S.%fZ}"', code)
    assert replaced == 1
    code = code.replace('"lakeexportd.yaml"', repr(str(travelled.config)))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)
    transactions = namespace["transactions_then"]
    assert isinstance(transactions, pl.DataFrame)
    assert sorted(transactions["TRANSACTION_ID"]) == sorted(
        travelled.streams[1].column("TRANSACTION_ID").to_pylist())
    users_then, users_v2 = namespace["users_then"], namespace["users_v2"]
    assert isinstance(users_then, pl.DataFrame) and isinstance(users_v2, pa.Table)
    assert_exactly_once(users_v2, travelled.tables[1], key="USER_ID")
    assert sorted(users_then["USER_ID"]) == sorted(travelled.tables[1].column("USER_ID").to_pylist())
