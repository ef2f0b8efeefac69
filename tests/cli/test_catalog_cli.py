"""`lakeexportd catalog list|show|sync|drop`, `verify`, `metadata`, `status`, `validate` and the
HTML report with a SQLite Iceberg catalog: the real CLI in a subprocess, against a lake the
sandbox's rows were exported into.

Truth: the lake's `_metadata.json` read as JSON here and its Parquet files read with pyarrow,
the feed definitions of the YAML below, and the catalog read with pyiceberg's own SqlCatalog
(never `LakeCatalog`, the code under test).
"""

from __future__ import annotations

import fcntl
import html.parser
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from lakeexportd.cli import commands as cli
from lakeexportd.sandbox import Sandbox

FEEDS = """
feeds:
  - {name: tx, source: TRANSACTION_FLATTENED, kind: stream, compaction: null,
     description: "Card payments, one row each", owner: payments-team, tags: [finance, pii]}
  - {name: users, source: USER_SUMMARY, kind: table}
  - {name: wide, source: WIDE_DECIMALS, kind: stream, compaction: null}
  - {name: tx_delta, source: TRANSACTION_FLATTENED, kind: stream, format: delta}
"""


def write_config(directory: Path, url: str, catalog: str | None) -> Path:
    path = directory / "lakeexportd.yaml"
    section = f"catalog: {{type: sql, uri: '{catalog}', timeout: 5s}}\n" if catalog else ""
    path.write_text(f"ksqldb: {{url: '{url}', max_retries: 1}}\n"
                    f"lake: {{root: '{directory / 'lake'}'}}\n"
                    f"scheduler: {{lock_wait: 300ms}}\n{section}{FEEDS}")
    return path


def lakeexportd(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI, in a process of its own, with no terminal to ask on."""
    return subprocess.run([sys.executable, "-m", "lakeexportd", *args], capture_output=True,
                          text=True, env=dict(os.environ), timeout=120, stdin=subprocess.DEVNULL)


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The same CLI in this process (quicker), where a separate process proves nothing more."""
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=5, preload=300, preload_days=3) as sb:
        yield sb


@pytest.fixture
def config(sandbox: Sandbox, tmp_path: Path) -> Path:
    """A lake and its catalog after `lakeexportd export --all` (the wide feed's table is
    refused: a DECIMAL(76, 20) column). Not copied from a template: the catalog records
    absolute paths, so each test exports its own."""
    path = write_config(tmp_path, sandbox.url, f"sqlite:///{tmp_path / 'catalog.db'}")
    assert cli.main(["export", "-c", str(path), "--all"]) == 0
    return path


def iceberg(config: Path) -> SqlCatalog:
    """The catalog as any pyiceberg user opens it (lakeexportd's catalog name: a SQL catalog
    keeps the tables of each name apart)."""
    return SqlCatalog("lakeexportd", uri=f"sqlite:///{config.parent / 'catalog.db'}",
                      warehouse=(config.parent / "lake" / "_catalog").as_uri())


def listed_by_catalog(table: Table) -> list[str]:
    table.refresh()
    return sorted(task.file.file_path for task in table.scan().plan_files())


def lake_files(config: Path, folder: str) -> dict[str, int]:
    """URI -> rows of each file the feed's `_metadata.json` lists now (a table: its current
    version), rows from the file's own footer."""
    feed_dir = config.parent / "lake" / folder
    doc = json.loads((feed_dir / "_metadata.json").read_text())
    if "partitions" in doc:
        paths = [feed_dir / p["path"] / f["name"] for p in doc["partitions"] for f in p["files"]]
    else:
        paths = [feed_dir / v["path"] / f["name"] for v in doc["versions"]
                 if v["version"] == doc["current_version"] for f in v["files"]]
    return {f"file://{p}": pq.ParquetFile(p).metadata.num_rows for p in paths}


def snapshot_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


def test_list_and_show_tell_the_lake_and_catalog_truth_and_change_nothing(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """list: each Parquet feed (not the Delta one) with its table, state, snapshot, files and
    rows as pyiceberg and the lake say; the refused feed says why. show: schema with Iceberg
    types, partitioning, the YAML's description/owner/tags, snapshots. Neither changes a byte
    of the catalog file or the lake."""
    before = snapshot_bytes(config.parent)
    c = ["-c", str(config)]
    listing = lakeexportd("catalog", "list", "--json", *c)
    assert listing.returncode == 0, listing.stderr
    rows = {r["feed"]: r for r in json.loads(listing.stdout)["feeds"]}
    assert set(rows) == {"tx", "users", "wide"}
    catalog = iceberg(config)
    for name, folder in (("tx", "streams/tx"), ("users", "tables/users")):
        table = catalog.load_table(("lake", name))
        truth = lake_files(config, folder)
        assert listed_by_catalog(table) == sorted(truth)
        assert rows[name]["state"] == "level" and rows[name]["table"] == f"lake.{name}"
        assert rows[name]["files"] == len(truth) and rows[name]["records"] == sum(truth.values())
        assert rows[name]["snapshot_id"] == table.current_snapshot().snapshot_id
    assert rows["wide"]["state"].startswith("refused: feed 'wide': column HUGE is DECIMAL(76, 20)")
    assert not catalog.table_exists(("lake", "wide"))
    code, text, _ = in_process(capsys, "catalog", "list", *c)
    assert code == 0 and text.splitlines()[1].split()[:3] == ["FEED", "TABLE", "STATE"]
    assert "wide: refused: feed 'wide': column HUGE" in text

    shown = lakeexportd("catalog", "show", "tx", "--json", *c)
    assert shown.returncode == 0, shown.stderr
    view = json.loads(shown.stdout)["view"]
    columns = {col["name"]: col["type"] for col in view["columns"]}
    assert columns["year"] == columns["month"] == columns["day"] == "int"
    assert columns["AMOUNT"] == "decimal(10, 2)" and columns["TRANSACTION_TIME"] == "timestamptz"
    assert view["partitioning"] == ["year: identity(year)", "month: identity(month)",
                                    "day: identity(day)"]
    props = view["properties"]
    assert (props["comment"], props["owner"], props["lakeexportd.tags"]) == \
        ("Card payments, one row each", "payments-team", "finance,pii")
    table = catalog.load_table(("lake", "tx"))
    assert [s["snapshot_id"] for s in view["snapshots"]] == \
        [s.snapshot_id for s in table.metadata.snapshots]
    assert view["metadata_location"] == table.metadata_location
    human = in_process(capsys, "catalog", "show", "tx", *c)[1]
    for line in ("state:            level", "owner:            payments-team",
                 "tags:             finance, pii", "description:      Card payments, one row each"):
        assert line in human
    assert in_process(capsys, "catalog", "show", "tx_delta", *c)[0] == 2
    assert snapshot_bytes(config.parent) == before


def test_drop_asks_keeps_the_files_and_sync_registers_again(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """drop refuses without --yes on a non-terminal; with it the table is gone and the lake
    untouched. verify then reports the feed not registered (exit 1) and list says so; sync
    registers exactly the lake's files and verify is clean again."""
    c = ["-c", str(config)]
    catalog = iceberg(config)
    lake_before = snapshot_bytes(config.parent / "lake" / "streams")
    refused = lakeexportd("catalog", "drop", "tx", *c)
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    assert catalog.table_exists(("lake", "tx"))
    dropped = lakeexportd("catalog", "drop", "tx", "--yes", *c)
    assert dropped.returncode == 0 and "files are kept" in dropped.stdout
    assert not catalog.table_exists(("lake", "tx"))
    assert snapshot_bytes(config.parent / "lake" / "streams") == lake_before
    truth = lake_files(config, "streams/tx")
    checked = lakeexportd("verify", *c)
    assert checked.returncode == 1
    assert "tx: catalog: lake.tx is not registered in sql catalog sqlite:///" in checked.stdout
    assert f"though the lake lists {len(truth)} files; run `lakeexportd catalog sync tx`" in \
        checked.stdout
    wide = len(lake_files(config, "streams/wide"))  # its days depend on the clock's hour
    assert f"though the lake lists {wide} files; the catalog refuses it: feed 'wide': column " \
        "HUGE" in checked.stdout
    listing = json.loads(in_process(capsys, "catalog", "list", "--json", *c)[1])
    states = {r["feed"]: r["state"] for r in listing["feeds"]}
    assert states["tx"] == f"not registered ({len(truth)} files in the lake)"
    synced = lakeexportd("catalog", "sync", *c)  # every Parquet feed; wide's is refused
    assert synced.returncode == 1, synced.stderr
    assert "catalog sync wide: failed: feed 'wide': column HUGE is DECIMAL(76, 20)" in \
        synced.stderr
    assert f"catalog sync tx: lake.tx created and level: added {len(truth)} files" in synced.stdout
    assert "catalog sync users: lake.users was already level" in synced.stdout
    assert listed_by_catalog(catalog.load_table(("lake", "tx"))) == sorted(truth)
    code, again, _ = in_process(capsys, "verify", "tx", "-c", str(config))
    assert code == 0, again
    assert again.startswith("tx: ok (") and "catalog lake.tx level)" in again


def test_verify_finds_a_file_listed_twice_a_missing_one_and_the_row_counts(config: Path) -> None:
    """A catalog that lists a lake file twice and a file the lake does not hold (both added
    with pyiceberg behind lakeexportd's back): verify names each, and the row counts."""
    table = iceberg(config).load_table(("lake", "users"))
    (listed,) = lake_files(config, "tables/users")
    table.add_files([listed], check_duplicate_files=False)
    ghost = config.parent / "lake" / "tables" / "users" / "ghost.parquet"
    shutil.copy(Path(listed.removeprefix("file://")), ghost)
    table.add_files([f"file://{ghost}"])
    ghost.unlink()
    checked = lakeexportd("verify", "users", "--json", "-c", str(config))
    assert checked.returncode == 1
    problems = json.loads(checked.stdout)[0]["mismatches"]
    rel = listed.split("/tables/users/", 1)[1]
    assert any(p.startswith(f"users: {rel}: listed 2 times by lake.users's current snapshot")
               for p in problems), problems
    assert "users: ghost.parquet: listed by the catalog but not in the lake: readers through " \
        "the catalog fail on it; `lakeexportd catalog sync users` removes it" in problems
    rows = pq.ParquetFile(Path(listed.removeprefix("file://"))).metadata.num_rows
    assert f"users: catalog: lake.users counts {3 * rows:,} rows, the lake {rows:,}: run " \
        "`lakeexportd catalog sync users`" in problems


def test_sync_waits_for_the_feeds_lock(config: Path) -> None:
    """A sync while another process holds the feed's lock (an export) is skipped: exit 75."""
    with (config.parent / "lake" / "streams" / "tx" / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = lakeexportd("catalog", "sync", "tx", "-c", str(config))
    assert done.returncode == 75, done.stderr
    assert "catalog sync tx: failed: feed 'tx' is locked by another lakeexportd process" in \
        done.stderr


def test_unreachable_catalog_shows_in_metadata_and_status_without_failing_them(
        config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A catalog that cannot be opened (its file under a regular file): metadata list/show and
    status still exit 0 and say `catalog unreachable`; catalog list exits 75."""
    (tmp_path / "not_a_dir").write_text("")
    broken = write_config(tmp_path, "http://127.0.0.1:1",
                          f"sqlite:///{tmp_path / 'not_a_dir' / 'catalog.db'}")
    c = ["-c", str(broken)]
    code, listed, _ = in_process(capsys, "metadata", "list", "--json", *c)
    assert code == 0
    states = {r["feed"]: r.get("catalog") for r in json.loads(listed)}
    assert states["tx"]["state"].startswith("catalog unreachable: sql catalog sqlite:///")
    assert states["tx_delta"] is None  # not catalogued
    code, shown, _ = in_process(capsys, "metadata", "show", "tx", *c)
    assert code == 0 and "catalog:         lake.tx catalog unreachable" in shown
    code, status, _ = in_process(capsys, "status", "--json", *c)
    assert code == 0
    assert {r["feed"]: (r["catalog"] or {}).get("state", "")[:20]
            for r in json.loads(status)["feeds"]}["users"] == "catalog unreachable:"
    assert lakeexportd("catalog", "list", *c).returncode == 75


def test_metadata_status_validate_and_report_with_a_level_catalog(
        config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """metadata list and status have a CATALOG column (level); validate names the catalog;
    the HTML report shows each feed's description, owner and tags as the YAML has them."""
    c = ["-c", str(config)]
    listed = in_process(capsys, "metadata", "list", *c)[1].splitlines()
    assert listed[0].split()[-1] == "CATALOG"
    assert next(line for line in listed if line.startswith("tx ")).split()[-1] == "level"
    status = json.loads(in_process(capsys, "status", "--json", *c)[1])
    assert {r["feed"]: r["catalog"] and r["catalog"]["state"] for r in status["feeds"]} == \
        {"tx": "level", "users": "level", "tx_delta": None,
         "wide": "refused: feed 'wide': column HUGE is DECIMAL(76, 20), which an Iceberg table "
                 "cannot hold (decimals have at most 38 digits). The feed stays in the lake, "
                 "uncatalogued: export it through a ksqlDB stream that casts or drops that "
                 "column to register it, or set `catalog: false` on it"}
    validated = in_process(capsys, "validate", *c)[1]
    assert f"catalog: sql catalog sqlite:///{config.parent / 'catalog.db'}, namespace lake, " \
        f"Iceberg metadata in {config.parent / 'lake'}/_catalog: 3 Parquet feeds as tables" \
        in validated
    code, report, _ = in_process(capsys, "metadata", "report", "--format", "html", *c)
    assert code == 0
    about = _about_rows(report)
    assert about["tx"] == ["Card payments, one row each", "payments-team", "finance, pii"]
    assert about["users"] == ["-", "-", "-"]


def test_no_catalog_configured_is_a_clear_configuration_error(
        sandbox: Sandbox, tmp_path: Path) -> None:
    """Without `catalog:` every catalog command exits 78 and names the fix."""
    config = write_config(tmp_path, sandbox.url, None)
    done = lakeexportd("catalog", "list", "-c", str(config))
    assert done.returncode == 78
    assert "has no `catalog:` section" in done.stderr and "catalog: {type: sql" in done.stderr


def test_every_catalog_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`-h` works for `catalog` and each action, and names what it does."""
    for command in (["catalog"], *(["catalog", a] for a in ("list", "show", "sync", "drop"))):
        with pytest.raises(SystemExit) as exit_:
            cli.main([*command, "-h"])
        assert exit_.value.code == 0, command
        assert "usage:" in capsys.readouterr().out


def _about_rows(page: str) -> dict[str, list[str]]:
    """FEED -> [DESCRIPTION, OWNER, TAGS] from the report's "About the feeds" table."""

    class About(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.inside = False
            self.rows: list[list[str]] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag == "table":
                self.inside = ("class", "about") in attrs
            elif tag == "tr" and self.inside:
                self.rows.append([])

        def handle_data(self, data: str) -> None:
            if self.inside and self.rows and self.lasttag == "td" and data.strip():
                self.rows[-1].append(data)

    parser = About()
    parser.feed(page)
    return {row[0]: row[1:] for row in parser.rows if row}

