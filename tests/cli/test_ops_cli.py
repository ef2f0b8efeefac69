"""`lakeexportd feeds | metadata | verify` end to end: a sandbox lake exported with `lakeexportd export`."""

from __future__ import annotations

import csv
import html.parser
import io
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from lakeexportd.cli import commands as cli
from lakeexportd.lake import layout
from lakeexportd.sandbox import Sandbox

FEEDS = """
feeds:
  - {name: tx, source: TRANSACTION_FLATTENED, kind: stream, settle_delay: 2s}
  - {name: users, source: USER_SUMMARY, kind: table, security: aggregated}
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
    with Sandbox.start(seed=11, preload=400, preload_days=3) as sb:
        yield sb


@pytest.fixture(scope="module")
def exported(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake with one export of each feed, made by `lakeexportd export --all`."""
    base = tmp_path_factory.mktemp("template")
    config = write_config(base, sandbox.url, base / "lake")
    assert cli.main(["export", "-c", str(config), "--all"]) == 0
    return base / "lake"


@pytest.fixture
def config(sandbox: Sandbox, exported: Path, tmp_path: Path) -> Path:
    """A private copy of the exported lake, and a config file pointing at it."""
    shutil.copytree(exported, tmp_path / "lake")
    return write_config(tmp_path, sandbox.url, tmp_path / "lake")


def test_every_operations_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`-h` works for feeds/metadata/verify and each of their actions."""
    commands = [["verify"], ["feeds"], ["metadata"]] + [
        ["feeds", a] for a in ("list", "show", "add", "update", "enable", "disable", "archive",
                               "restore", "delete", "sync")] + [
        ["metadata", a] for a in ("list", "show", "stats", "partitions", "report", "export-csv")] + [["files"]]
    for command in commands:
        with pytest.raises(SystemExit) as exit_:
            cli.main([*command, "-h"])
        assert exit_.value.code == 0, command
        assert "usage:" in capsys.readouterr().out


def _registry(lake: Path) -> dict[str, bytes]:
    return {str(p.relative_to(lake)): p.read_bytes() for p in sorted((lake / "feeds").rglob("*")) if p.is_file()}


def test_feeds_list_only_looks_and_sync_applies_the_yaml(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """list (and a failing add) change nothing and say the YAML is not applied; sync applies it;
    list then prints a table of the synced YAML feeds; --json gives entries scripts can parse."""
    lake = config.parent / "lake"
    before = _registry(lake)
    code, out, err = run(capsys, "feeds", "list", "-c", str(config))
    assert code == 0 and out.splitlines()[0].split()[:4] == ["FEED", "STATE", "ORIGIN", "KIND"]
    assert "not applied" in err and "added tx, users" in err and "feeds sync" in err
    assert run(capsys, "feeds", "add", "café", "--source", "S", "--kind", "stream", "-c", str(config))[0] == 2
    assert _registry(lake) == before
    code, out, _ = run(capsys, "feeds", "sync", "-c", str(config), "--json")
    assert code == 0 and json.loads(out)["added"] == ["tx", "users"]
    code, out, err = run(capsys, "feeds", "list", "-c", str(config))
    assert code == 0 and "tx" in out and "users" in out and "not applied" not in err
    code, out, _ = run(capsys, "feeds", "show", "users", "-c", str(config), "--json")
    assert code == 0 and json.loads(out)["definition"]["security"] == "aggregated"
    code, out, _ = run(capsys, "feeds", "sync", "-c", str(config), "--json")
    assert code == 0 and json.loads(out)["unchanged"] == ["tx", "users"]


def test_feeds_add_update_disable_enable_archive_restore(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A cli feed goes through every state; each step prints its new state."""
    c = ["-c", str(config)]
    code, out, _ = run(capsys, "feeds", "add", "anon", "--source", "transaction_anonymized",
                       "--kind", "stream", "--every", "1m", "--security", "anonymized", *c)
    assert code == 0 and "state active (cli)" in out
    assert run(capsys, "feeds", "update", "anon", "--every", "2m", *c)[0] == 0
    for action, state in (("disable", "disabled"), ("enable", "active"), ("archive", "archived"),
                          ("restore", "active")):
        code, out, _ = run(capsys, "feeds", action, "anon", "--reason", "test", *c)
        assert code == 0 and f"state {state}" in out, action
    entry = json.loads(run(capsys, "feeds", "show", "anon", "--json", *c)[1])
    assert entry["definition"]["schedule"] == {"every": "2m"} and entry["definition"]["source"] == "TRANSACTION_ANONYMIZED"
    code, _, err = run(capsys, "feeds", "enable", "anon", *c)
    assert code == 0


@pytest.mark.parametrize(("args", "message"), [
    (["add", "x", "--source", "S", "--kind", "stream", "--every", "5"], "--every (feed 'x'): bad duration '5'"),
    (["add", "x", "--source", "S", "--kind", "stream", "--every", "99999999999d"], "is out of range"),
    (["add", "x", "--source", "S", "--kind", "stream", "--every", "1ms"], "give 1s to 366d"),
    (["add", "x", "--source", "S", "--kind", "table", "--settle-delay", "5s"], "does not apply to a table"),
    (["add", "../x", "--source", "S", "--kind", "stream"], "is not a safe feed name"),
    (["add", "café", "--source", "S", "--kind", "stream"], "FEED: 'café' is not a safe feed name"),
    (["add", "tx", "--source", "S", "--kind", "stream"], "already registered"),
    (["show", "nope"], "unknown feed 'nope'"),
    (["disable", "../tx"], "not a feed name"),
    (["update", "tx", "--every", "1m"], "declared in the configuration file"),
])
def test_feeds_bad_input_is_a_usage_error_or_refusal(config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    """Bad flags, unsafe names and unknown feeds exit 2; refused actions exit 1; each says why."""
    run(capsys, "feeds", "sync", "-c", str(config))
    code, _, err = run(capsys, "feeds", *args, "-c", str(config))
    assert message in err
    assert code == (1 if message.startswith(("already", "declared")) else 2)


def test_export_and_repair_follow_the_registry(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """export --all skips disabled and archived feeds and exports `feeds add` ones; a named
    stopped feed is refused with the fix; repair knows cli feeds too."""
    c = ["-c", str(config)]
    run(capsys, "feeds", "sync", *c)
    run(capsys, "feeds", "add", "anon", "--source", "transaction_anonymized", "--kind", "stream", *c)
    run(capsys, "feeds", "disable", "users", *c)
    code, out, _ = run(capsys, "export", "--all", *c)
    assert code == 0 and "export anon:" in out and "export tx:" in out and "users" not in out
    code, _, err = run(capsys, "export", "users", *c)
    assert code == 2 and "users (disabled) is not active" in err and "feeds enable" in err
    assert run(capsys, "export", "anon", *c)[0] == 0
    code, out, _ = run(capsys, "repair", *c)
    assert code == 0 and all(f"repair {n}: removed 0" in out for n in ("tx", "users", "anon"))


def test_feeds_update_offers_no_source_or_kind(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Source and kind never change, so `feeds update` has no such flags (help or parser)."""
    with pytest.raises(SystemExit):
        cli.main(["feeds", "update", "--help"])
    assert "--source" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["feeds", "update", "tx", "--source", "OTHER", "-c", str(config)])
    assert exit_.value.code == 2 and "unrecognized arguments: --source" in capsys.readouterr().err


def test_help_texts_show_no_rst_markup(capsys: pytest.CaptureFixture[str]) -> None:
    """Module docstrings reach --help without reST's double backquotes."""
    for command in (["feeds"], ["metadata"], ["verify"], ["status"]):
        with pytest.raises(SystemExit):
            cli.main([*command, "--help"])
        assert "``" not in capsys.readouterr().out, command


def test_feeds_delete_refuses_without_yes_on_a_non_tty(config: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """No confirmation possible and no --yes: exit 2, entry and data untouched."""
    c = ["-c", str(config)]
    run(capsys, "feeds", "sync", *c)
    run(capsys, "feeds", "archive", "tx", *c)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, _, err = run(capsys, "feeds", "delete", "tx", "--purge", *c)
    assert code == 2 and "--yes" in err
    assert (config.parent / "lake/feeds/archived/tx.json").exists()
    assert (config.parent / "lake/streams/tx/_metadata.json").exists()


def test_feeds_delete_purge_yes_removes_only_that_feeds_data(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--purge --yes removes streams/tx/ and the entry; the table's data and entry stay."""
    lake = config.parent / "lake"
    c = ["-c", str(config)]
    run(capsys, "feeds", "sync", *c)
    run(capsys, "feeds", "archive", "tx", *c)
    code, out, _ = run(capsys, "feeds", "delete", "tx", "--purge", "--yes", *c)
    assert code == 0 and f"removed {lake / 'streams/tx'}" in out
    assert not (lake / "streams/tx").exists() and (lake / "streams").exists()
    assert (lake / "tables/users/_metadata.json").exists() and (lake / "feeds/active/users.json").exists()
    assert run(capsys, "verify", "users", *c)[0] == 0


def test_metadata_list_show_stats_partitions(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Per-feed records, size, files, partitions/versions, status, freshness and lag."""
    c = ["-c", str(config)]
    code, out, _ = run(capsys, "metadata", "list", "--json", *c)
    feeds = {f["feed"]: f for f in json.loads(out)}
    assert code == 0 and set(feeds) == {"tx", "users"}
    tx, users = feeds["tx"], feeds["users"]
    assert tx["records"] == 400 and tx["partitions"] >= 3 and tx["files"] == tx["partitions"]
    assert tx["last_status"] == "success" and tx["lag_s"] >= 2 and tx["freshness_s"] >= tx["lag_s"]
    assert users["versions"] == 1 and users["current_version"] == 1 and users["records"] > 0
    code, out, _ = run(capsys, "metadata", "show", "tx", *c)
    assert code == 0 and "records:         400" in out and "recent exports:" in out
    code, out, _ = run(capsys, "metadata", "stats", "--json", *c)
    assert json.loads(out)["records"] == 400 + users["records"]
    code, out, _ = run(capsys, "metadata", "partitions", "tx", "--json", *c)
    assert sum(p["records"] for p in json.loads(out)) == 400
    code, out, _ = run(capsys, "metadata", "partitions", "users", *c)
    assert code == 0 and "version=v1" in out and "yes" in out
    assert run(capsys, "metadata", "show", "nope", *c)[0] == 2
    assert run(capsys, "metadata", "partitions", "../tx", *c)[0] == 2


def test_corrupted_metadata_is_reported_and_left_byte_identical(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """show/list/report/verify exit 1 naming the file and the fix; the file is not rewritten."""
    path = layout.metadata_path(layout.feed_dir(config.parent / "lake", "stream", "tx"))
    broken = path.read_bytes()[:200]
    path.write_bytes(broken)
    c = ["-c", str(config)]
    for command in (["metadata", "show", "tx"], ["metadata", "list"],
                    ["metadata", "report", "--format", "json"], ["verify"], ["verify", "tx", "--source"]):
        code, out, err = run(capsys, *command, *c)
        assert code == 1, command
        assert str(path) in out + err and "will not overwrite" in out + err, command
    assert path.read_bytes() == broken


def test_registry_file_with_invalid_json_fails_feeds_commands_clearly(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hand-broken registry entry: exit 1 naming the file; the file keeps its bytes."""
    c = ["-c", str(config)]
    run(capsys, "feeds", "sync", *c)
    path = config.parent / "lake/feeds/active/tx.json"
    path.write_text("{not json")
    code, _, err = run(capsys, "feeds", "list", *c)
    assert code == 1 and str(path) in err and "Fix it by hand" in err
    assert path.read_text() == "{not json"


class _Parser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)


def test_metadata_report_formats(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """table, markdown and json on stdout; html is one self-contained page with an SVG chart."""
    c = ["-c", str(config)]
    _, table, _ = run(capsys, "metadata", "report", *c)
    assert table.splitlines()[0].startswith("FEED") and "2 feeds (1 streams, 1 tables)" in table
    _, md, _ = run(capsys, "metadata", "report", "--format", "markdown", *c)
    assert "| FEED | KIND | FORMAT |" in md and "| tx | stream | parquet |" in md
    _, js, _ = run(capsys, "metadata", "report", "--format", "json", *c)
    assert json.loads(js)["statistics"]["feeds"] == 2
    out = config.parent / "report.html"
    assert run(capsys, "metadata", "report", "--format", "html", "-o", str(out), *c)[0] == 0
    page = out.read_text()
    parser = _Parser()
    parser.feed(page)
    assert {"html", "style", "table", "svg", "polyline"} <= set(parser.tags)
    assert "script" not in parser.tags and "<link" not in page and "src=" not in page
    assert "<svg" in page and "<title>tx</title>" in page


def test_export_csv_columns(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """One row per feed, or per partition/version with --partitions, with stable columns."""
    feeds_csv, parts_csv = config.parent / "feeds.csv", config.parent / "parts.csv"
    assert run(capsys, "metadata", "export-csv", str(feeds_csv), "-c", str(config))[0] == 0
    rows = list(csv.DictReader(io.StringIO(feeds_csv.read_text())))
    assert list(rows[0]) == ["feed", "kind", "source", "state", "records", "size_bytes", "files",
                             "partitions", "versions", "current_version", "last_export",
                             "last_status", "newest_data", "freshness_s", "lag_s", "watermark",
                             "error", "format", "delta_version", "offsets"]
    assert [r["feed"] for r in rows] == ["tx", "users"]
    run(capsys, "metadata", "export-csv", str(parts_csv), "--partitions", "-c", str(config))
    parts = list(csv.DictReader(io.StringIO(parts_csv.read_text())))
    assert list(parts[0]) == ["feed", "kind", "partition", "records", "size_bytes", "files",
                              "min_event", "max_event", "created", "current"]
    assert sum(int(p["records"]) for p in parts if p["feed"] == "tx") == 400


def test_verify_offline_ok_then_reports_a_missing_file(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A consistent lake exits 0; a deleted listed file is one mismatch line and exit 1."""
    c = ["-c", str(config)]
    code, out, _ = run(capsys, "verify", *c)
    assert code == 0 and "tx: ok" in out and "users: ok" in out
    victim = next((config.parent / "lake/streams/tx").rglob("*.parquet"))
    victim.unlink()
    code, out, _ = run(capsys, "verify", *c)
    assert code == 1 and "listed but missing" in out
    assert run(capsys, "verify", "nope", *c)[0] == 2
    assert run(capsys, "verify", "../tx", *c)[0] == 2


def test_verify_source_reports_a_missing_file_and_checks_the_other_feeds(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--source with a listed file gone: a mismatch line for it, no crash, the table still checked."""
    c = ["-c", str(config)]
    next((config.parent / "lake/streams/tx").rglob("*.parquet")).unlink()
    code, out, _ = run(capsys, "verify", "--source", *c)
    assert code == 1 and "listed but missing" in out and "not recounted" in out
    assert "users: ok" in out and "scan match ksqlDB" in out


def _damage_a_data_page(path: Path) -> None:
    """Flip bytes inside the first column chunk's data (not the footer, so the footer reads)."""
    meta = pq.read_metadata(path)
    column = meta.row_group(0).column(1)
    start = column.data_page_offset + (column.total_compressed_size // 2)
    data = bytearray(path.read_bytes())
    for i in range(start, start + 8):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_verify_deep_finds_a_damaged_page_the_footer_check_misses(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bytes flipped inside a data page keep size and footer: plain verify cannot see it,
    --deep decodes with page checksums and reports the file and the row group."""
    c = ["-c", str(config)]
    victim = next((config.parent / "lake/streams/tx").rglob("*.parquet"))
    _damage_a_data_page(victim)
    code, out, _ = run(capsys, "verify", "tx", *c)
    assert code == 0 and "tx: ok" in out  # what the footer alone can tell
    code, out, _ = run(capsys, "verify", "tx", "--deep", *c)
    assert code == 1 and victim.name in out and "damaged data in row group 0" in out


def test_verify_source_matches_right_after_an_export(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Window recounts and the table scan agree with the lake: exit 0."""
    code, out, _ = run(capsys, "verify", "--source", "-c", str(config))
    assert code == 0 and "windows match ksqlDB" in out and "scan match ksqlDB" in out


def test_verify_source_reports_a_late_row_in_its_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A row arriving after its window was exported shows as 1 late row of that window, exit 1."""
    with Sandbox.start(seed=12, preload=200, preload_days=1) as sb:
        config = write_config(tmp_path, sb.url, tmp_path / "lake")
        assert run(capsys, "export", "tx", "-c", str(config))[0] == 0
        code, out, _ = run(capsys, "verify", "tx", "--source", "--json", "-c", str(config))
        [result] = json.loads(out)
        assert code == 0 and result["windows"][0]["late"] == 0
        mark = result["windows"][0]["to_ms"]
        sb.generate(1, (mark - 60_000, mark - 59_000))  # inside the exported window, too late
        code, out, _ = run(capsys, "verify", "tx", "--source", "-c", str(config))
    assert code == 1
    assert "1 late rows: ksqlDB has 201, the lake 200" in out and f"ROWTIME <= {mark})" in out


def test_report_chart_draws_streams_with_equal_counts_as_one_named_line() -> None:
    """Feeds of one source have equal daily counts: one polyline names them all, none hidden."""
    from lakeexportd.audit.report_format import chart

    svg = chart({"a": {"2026-12-01": 5, "2026-12-02": 7}, "b": {"2026-12-01": 5, "2026-12-02": 7},
                 "c": {"2026-12-01": 1}})
    assert svg.count("<polyline") == 2
    assert "<title>a, b (same counts)</title>" in svg and "<title>c</title>" in svg


def test_files_lists_exactly_the_committed_files_readers_can_open(
    config: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`files` prints what _metadata.json lists, and nothing an unlisted upload left."""
    lake = config.parent / "lake"
    stray = lake / "streams/tx/year=2020/month=01/day=01/data_20200101_000000.parquet"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"not committed")  # what a glob would pick up
    code, out, err = run(capsys, "files", "-c", str(config), "tx")
    listed = out.split()
    assert code == 0 and err == "" and listed and str(stray) not in listed
    on_disk = sorted(str(p) for p in (lake / "streams/tx").rglob("*.parquet") if p != stray)
    assert sorted(listed) == on_disk
    rows = sum(pq.read_metadata(p).num_rows for p in listed)
    assert rows == json.loads((lake / "streams/tx/_metadata.json").read_text())["total_records"]
    code, out, _ = run(capsys, "files", "-c", str(config), "users", "--json")
    files = json.loads(out)
    assert code == 0 and {f["partition"] for f in files} == {"version=v1"}
    assert all(Path(f["url"]).is_file() for f in files)
    code, _, err = run(capsys, "files", "-c", str(config), "users", "--version", "7")
    assert code == 1 and "keeps no version 7 (kept: 1; the newest is 1)" in err
    code, _, err = run(capsys, "files", "-c", str(config), "nope")
    assert code == 2 and "unknown feed 'nope'" in err
