"""The bad-configuration corpus against the daemon: exit 78 at start, old config kept on SIGHUP."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import structlog
import yaml
from scrape import value

from lakeexportd.cli.commands import main
from lakeexportd.config.load import load_config
from lakeexportd.export.exporter import ExportResult
from lakeexportd.service.daemon import Daemon

BAD_CONFIGS = sorted((Path(__file__).parents[1] / "data" / "bad_configs").glob("*.yaml"))


def expectation(path: Path) -> str:
    match = re.fullmatch(r"# expect: (.+)", path.read_text().splitlines()[0])
    assert match, f"{path.name} must start with '# expect: ...'"
    return match.group(1)


@pytest.fixture
def corpus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment the corpus is written for: X set, LAKEEXPORTD_TEST_UNSET unset."""
    monkeypatch.setenv("X", "set")
    monkeypatch.delenv("LAKEEXPORTD_TEST_UNSET", raising=False)


@pytest.mark.parametrize("path", BAD_CONFIGS, ids=lambda p: p.stem)
def test_daemon_refuses_to_start_with_exit_78(
    path: Path, corpus_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """`lakeexportd run -c BAD` exits 78 with the file and the expected message, no traceback."""
    assert main(["run", "-c", str(path)]) == 78
    err = capsys.readouterr().err
    assert expectation(path) in err and path.name in err and "Traceback" not in err


@pytest.mark.parametrize("path", BAD_CONFIGS[::16], ids=lambda p: p.stem)
def test_daemon_process_exits_78(path: Path) -> None:
    """The same through a real process, for a sample of the corpus."""
    done = subprocess.run(
        [sys.executable, "-m", "lakeexportd", "run", "-c", str(path)],
        capture_output=True, text=True, timeout=60, env={"X": "set", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 78 and expectation(path) in done.stderr


class NullExporter:
    def export(self, *args: object, **kwargs: object) -> ExportResult:
        raise AssertionError("no export runs in this test")


def test_every_bad_file_on_sighup_keeps_the_old_feeds(tmp_path: Path, corpus_env: None) -> None:
    """Reloading each bad file fails, is logged with its reason and counted; the feeds stay."""
    corpus = tmp_path / "corpus"  # beside the corpus: files it names resolve as there
    shutil.copytree(BAD_CONFIGS[0].parent, corpus)
    config = corpus / "lakeexportd.yaml"
    good = {
        "ksqldb": {"url": "http://127.0.0.1:1"},
        "lake": {"root": str(tmp_path / "lake")},
        "feeds": [{"name": "orders", "source": "ORDERS", "kind": "stream",
                   "schedule": {"cron": "0 0 1 1 *"}}],
    }
    config.write_text(yaml.safe_dump(good))
    daemon = Daemon(load_config(config), exporter_factory=lambda c, o: (NullExporter(), lambda: None),
                    serve_metrics=False)
    daemon.start()
    try:
        for number, path in enumerate(BAD_CONFIGS, start=1):
            config.write_text(path.read_text())
            with structlog.testing.capture_logs() as logs:
                assert not daemon.reload(), path.name
            (failed,) = [e for e in logs if e["event"] == "config.reload_failed"]
            assert expectation(path) in failed["reason"], path.name
            assert sorted(daemon.feeds) == ["orders"] and daemon.scheduler.get_job("orders")
            assert value(daemon.metrics.registry, "lakeexportd_config_reloads_total", result="error") == number
    finally:
        daemon.stop()
