"""``lakeexportd export`` and ``repair`` as an operator runs them: real processes, real exit codes."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lakecheck import assert_consistent

from lakeexportd.cli.commands import build_parser
from lakeexportd.lake.locking import FeedLock
from lakeexportd.sandbox import Sandbox


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=4, preload=3000, preload_days=3, user="ops", password="pw-xyz") as sb:
        yield sb


def config(tmp_path: Path, url: str, *, password_env: str = "KSQL_PW", extra: str = "") -> Path:
    path = tmp_path / "lakeexportd.yaml"
    path.write_text(
        f"""
ksqldb: {{url: "{url}", username: ops, password_env: {password_env}, max_retries: 1}}
lake: {{root: lake}}
scheduler: {{lock_wait: 1s}}
defaults: {{batch_size: 100}}
feeds:
  - {{name: tx, source: TRANSACTION_FLATTENED, kind: stream}}
  - {{name: users, source: USER_SUMMARY, kind: table}}
{extra}"""
    )
    return path


def cli(*args: str, env_password: str = "pw-xyz") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KSQL_PW": env_password}
    return subprocess.run(
        [sys.executable, "-m", "lakeexportd", *args], capture_output=True, text=True, env=env, timeout=120
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_export_all_succeeds_and_reports_each_feed(sandbox: Sandbox, tmp_path: Path) -> None:
    """--all exports every feed, prints one line each on stdout (log events on stderr), exit 0."""
    result = cli("export", "-c", str(config(tmp_path, sandbox.url)), "--all")
    assert result.returncode == 0, result.stderr
    assert "export tx: 3,000 rows" in result.stdout and "watermark" in result.stdout
    assert "export users:" in result.stdout and "version v1 current" in result.stdout
    assert "metadata.committed" in result.stderr and "metadata.committed" not in result.stdout
    assert_consistent(tmp_path / "lake", "stream", "tx")
    assert "pw-xyz" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [((), "name one or more feeds, or --all"), (("nope",), "unknown feed 'nope'"), (("tx", "--all"), "not both")],
)
def test_usage_errors_exit_2(sandbox: Sandbox, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    """Missing, unknown or conflicting feed arguments are usage errors (exit 2) that say why."""
    result = cli("export", "-c", str(config(tmp_path, sandbox.url)), *args)
    assert result.returncode == 2 and message in result.stderr
    if args == ("nope",):
        assert "known feeds: tx, users" in result.stderr


def test_ksqldb_down_is_transient_exit_75(tmp_path: Path) -> None:
    """With no server listening, the export fails as transient (75) naming the URL."""
    url = f"http://127.0.0.1:{free_port()}"
    result = cli("export", "-c", str(config(tmp_path, url)), "tx")
    assert result.returncode == 75
    assert f"cannot reach ksqlDB at {url}" in result.stderr and "tx" in result.stderr


def test_wrong_password_is_a_configuration_error_78(sandbox: Sandbox, tmp_path: Path) -> None:
    """ksqlDB's 401 exits 78 with a hint, and never shows the password."""
    result = cli("export", "-c", str(config(tmp_path, sandbox.url)), "tx", env_password="wrong-secret")
    assert result.returncode == 78
    assert "HTTP 401" in result.stderr and "password" in result.stderr
    assert "wrong-secret" not in result.stderr


def test_invalid_config_exits_78_naming_the_key(sandbox: Sandbox, tmp_path: Path) -> None:
    """A bad config file stops before any export with exit 78 and the key path."""
    path = config(tmp_path, sandbox.url, extra="  - {name: bad, source: X, kind: stream, schedule: {every: soon}}\n")
    result = cli("export", "-c", str(path), "tx")
    assert result.returncode == 78 and "$.feeds[2].schedule.every" in result.stderr


def test_failed_feed_exits_1_and_others_still_run(sandbox: Sandbox, tmp_path: Path) -> None:
    """One feed failing (unknown source) exits 1 after the other feeds ran."""
    path = config(tmp_path, sandbox.url, extra="  - {name: ghost, source: NO_SUCH_STREAM, kind: stream}\n")
    result = cli("export", "-c", str(path), "ghost", "users")
    assert result.returncode == 1
    assert "export ghost: failed" in result.stderr and "40001" in result.stderr
    assert "export users:" in result.stdout and "version v1" in result.stdout


def test_locked_feed_is_skipped_with_exit_75(sandbox: Sandbox, tmp_path: Path) -> None:
    """While another process holds the feed's lock, export skips it and exits 75."""
    path = config(tmp_path, sandbox.url)
    with FeedLock(tmp_path / "lake/streams/tx", feed="tx", wait=0):
        result = cli("export", "-c", str(path), "tx")
    assert result.returncode == 75 and "export tx: skipped" in result.stderr and "locked" in result.stderr


def test_progress_line_on_a_terminal(sandbox: Sandbox, tmp_path: Path) -> None:
    """On a terminal, export shows rows and rows/s while it runs."""
    path = config(tmp_path, sandbox.url)
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI with its stderr on the pseudo-terminal
        os.environ["KSQL_PW"] = "pw-xyz"
        os.execv(sys.executable, [sys.executable, "-m", "lakeexportd", "export", "-c", str(path), "tx"])
    output = b""
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        output += data
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, text
    assert "rows/s" in text and "\r" in text and "export tx: 3,000 rows" in text


def test_repair_lists_then_removes_unlisted_files(sandbox: Sandbox, tmp_path: Path) -> None:
    """repair --dry-run lists what an interrupted run left; repair removes exactly that."""
    path = config(tmp_path, sandbox.url)
    assert cli("export", "-c", str(path), "--all").returncode == 0
    partition = next((tmp_path / "lake/streams/tx").glob("year=*/month=*/day=*"))
    stray = partition / "data_20200101_000000.parquet"
    stray.write_bytes(b"PAR1")
    dry = cli("repair", "-c", str(path), "--dry-run", "tx")
    assert dry.returncode == 0 and "would remove 1 unlisted files" in dry.stdout and str(stray) in dry.stdout
    assert stray.exists()
    done = cli("repair", "-c", str(path))
    assert done.returncode == 0 and "repair tx: removed 1" in done.stdout and "repair users: removed 0" in done.stdout
    assert not stray.exists()
    assert_consistent(tmp_path / "lake", "stream", "tx")


def test_repair_rebuild_shows_asks_then_writes_a_lost_metadata(sandbox: Sandbox, tmp_path: Path) -> None:
    """A lost _metadata.json: export fails and deletes nothing; repair --rebuild shows the
    document, writes nothing without an answer, writes it with --yes, and exports go on."""
    path = config(tmp_path, sandbox.url)
    assert cli("export", "-c", str(path), "tx").returncode == 0
    meta = tmp_path / "lake/streams/tx/_metadata.json"
    files = sorted(p.name for p in meta.parent.rglob("*.parquet"))
    meta.unlink()
    stopped = cli("export", "-c", str(path), "tx")
    assert stopped.returncode == 1 and "repair --rebuild tx" in stopped.stderr
    assert sorted(p.name for p in meta.parent.rglob("*.parquet")) == files
    checked = cli("verify", "-c", str(path), "tx")
    assert checked.returncode == 1 and "repair --rebuild tx" in checked.stdout
    dry = cli("repair", "-c", str(path), "--rebuild", "--dry-run", "tx")
    assert dry.returncode == 0 and "3000 rows" in dry.stdout and "nothing written" in dry.stdout
    asked = subprocess.run(
        [sys.executable, "-m", "lakeexportd", "repair", "-c", str(path), "--rebuild", "tx"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
        env={**os.environ, "KSQL_PW": "pw-xyz"},
    )
    assert asked.returncode == 1 and "run again with --yes" in asked.stdout and not meta.exists()
    written = cli("repair", "-c", str(path), "--rebuild", "--yes", "tx")
    assert written.returncode == 0 and "wrote _metadata.json" in written.stdout, written.stderr
    assert cli("export", "-c", str(path), "tx").returncode == 0
    assert_consistent(tmp_path / "lake", "stream", "tx")
    again = cli("repair", "-c", str(path), "--rebuild", "--yes", "tx")
    assert again.returncode == 1 and "exists" in again.stderr


def test_validate_source_checks_each_feeds_kind_in_ksqldb(sandbox: Sandbox, tmp_path: Path) -> None:
    """validate --source names a feed whose declared kind is not its source's, and exits 1."""
    path = config(tmp_path, sandbox.url, extra="  - {name: wrong, source: USER_SUMMARY, kind: stream}\n")
    result = cli("validate", "-c", str(path), "--source")
    assert result.returncode == 1
    assert "feed 'wrong' declares kind 'stream', but ksqlDB says USER_SUMMARY is a TABLE" in result.stderr
    assert "feed tx: TRANSACTION_FLATTENED is a STREAM, as declared" in result.stdout
    assert cli("validate", "-c", str(config(tmp_path, sandbox.url)), "--source").returncode == 0


def test_backfill_restores_a_deleted_file_that_verify_points_at(sandbox: Sandbox, tmp_path: Path) -> None:
    """verify names backfill for a lost file; backfill --dry-run changes nothing; backfill
    --yes over the run's window brings the rows back and verify is clean again."""
    path = config(tmp_path, sandbox.url)
    assert cli("export", "-c", str(path), "tx").returncode == 0
    lake = tmp_path / "lake/streams/tx"
    mark = json.loads((lake / "_metadata.json").read_text())["watermark"]["rowtime_ms"]
    next(lake.rglob("*.parquet")).unlink()
    checked = cli("verify", "-c", str(path), "tx")
    assert checked.returncode == 1 and "lakeexportd backfill tx" in checked.stdout
    refused = cli("backfill", "-c", str(path), "tx", "--from", "2020-01-01T00:00:00", "--to", str(mark), "--yes")
    assert refused.returncode == 1 and f"--from -1 --to {mark}" in refused.stderr
    dry = cli("backfill", "-c", str(path), "tx", "--from", "-1", "--to", str(mark), "--dry-run")
    assert dry.returncode == 0 and "drop missing" in dry.stdout and "nothing changed" in dry.stdout
    done = cli("backfill", "-c", str(path), "tx", "--from", "-1", "--to", str(mark), "--yes")
    assert done.returncode == 0 and "3000 rows of the window from ksqlDB" in done.stdout, done.stderr
    assert cli("verify", "-c", str(path), "tx").returncode == 0
    assert_consistent(tmp_path / "lake", "stream", "tx")
    assert cli("backfill", "-c", str(path), "tx", "--from", "soon", "--to", "1").returncode == 2


def test_every_command_has_help() -> None:
    """Each subcommand answers --help with a description and exit 0."""
    listing = cli("--help")
    assert listing.returncode == 0
    parser = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    commands = list(actions[0].choices)
    assert {"export", "repair", "sandbox", "validate"} <= set(commands)
    listed = re.findall(r"^    (\S+)", listing.stdout, re.MULTILINE)
    assert set(commands) <= set(listed)
    for command in commands:
        result = cli(command, "--help")
        assert result.returncode == 0 and "usage: lakeexportd" in result.stdout, command
