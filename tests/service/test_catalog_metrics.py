"""`lakeexportd_catalog_behind` and `lakeexportd_catalog_syncs_total` from the real daemon: its
own exporter (built from the config) runs the feed against the sandbox, with a SQLite catalog
that first cannot be opened and then can.

Truth: whether the catalog lists the lake's files, read with pyiceberg's own SqlCatalog and the
feed's `_metadata.json` read as JSON here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pyiceberg.catalog.sql import SqlCatalog
from scrape import value

from lakeexportd.config.load import load_config
from lakeexportd.sandbox import Sandbox
from lakeexportd.service.backends import backend_key
from lakeexportd.service.daemon import Daemon

YEARLY = {"cron": "0 0 1 1 *"}  # never fires during the test: runs are started by hand


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=29, preload=200, preload_days=2) as sb:
        yield sb


def lake_uris(feed_dir: Path) -> list[str]:
    doc = json.loads((feed_dir / "_metadata.json").read_text())
    return sorted(f"file://{feed_dir / p['path'] / f['name']}"
                  for p in doc["partitions"] for f in p["files"])


def test_catalog_metrics_follow_each_run(sandbox: Sandbox, tmp_path: Path) -> None:
    """A run whose catalog cannot be opened: behind 1, one failed sync, the lake committed.
    Once the catalog's folder exists, the next run levels it: behind 0, one successful sync,
    and the table lists exactly the lake's files. A feed without a catalog has neither."""
    blocker = tmp_path / "catalog"
    blocker.write_text("a file where the catalog's folder should be")
    config = tmp_path / "lakeexportd.yaml"
    config.write_text(yaml.safe_dump({
        "ksqldb": {"url": sandbox.url, "max_retries": 1},
        "lake": {"root": str(tmp_path / "lake")},
        "logging": {"dir": str(tmp_path / "logs")},
        "catalog": {"type": "sql", "uri": f"sqlite:///{blocker / 'catalog.db'}",
                    "timeout": "5s"},
        "scheduler": {"workers": 1, "stop_grace": "1s"},
        "feeds": [{"name": "tx", "source": "TRANSACTION_FLATTENED", "kind": "stream",
                   "schedule": YEARLY},
                  {"name": "tx_delta", "source": "TRANSACTION_FLATTENED", "kind": "stream",
                   "format": "delta", "schedule": YEARLY}],
    }))
    daemon = Daemon(load_config(config), serve_metrics=False)
    daemon.start()
    try:
        tx, tx_delta = daemon.feeds["tx"], daemon.feeds["tx_delta"]
        registry = daemon.metrics.registry
        assert value(registry, "lakeexportd_catalog_behind", feed="tx") is None  # no run yet
        assert daemon.run_feed(tx) == "success"
        assert daemon.run_feed(tx_delta) == "success"
        assert lake_uris(tmp_path / "lake/streams/tx")  # the lake committed all the same
        assert value(registry, "lakeexportd_catalog_behind", feed="tx") == 1
        assert value(registry, "lakeexportd_catalog_syncs_total", feed="tx",
                     outcome="failed") == 1
        assert value(registry, "lakeexportd_catalog_syncs_total", feed="tx",
                     outcome="success") == 0
        assert value(registry, "lakeexportd_catalog_behind", feed="tx_delta") is None

        blocker.unlink()
        blocker.mkdir()
        assert daemon.run_feed(tx) == "success"
        assert value(registry, "lakeexportd_catalog_behind", feed="tx") == 0
        assert value(registry, "lakeexportd_catalog_syncs_total", feed="tx",
                     outcome="success") == 1
        assert value(registry, "lakeexportd_catalog_syncs_total", feed="tx",
                     outcome="failed") == 1
        assert value(registry, "lakeexportd_catalog_syncs_total", feed="tx_delta",
                     outcome="success") is None
    finally:
        daemon.stop()
    catalog = SqlCatalog("lakeexportd", uri=f"sqlite:///{blocker / 'catalog.db'}",
                         warehouse=(tmp_path / "lake/_catalog").as_uri())
    table = catalog.load_table(("lake", "tx"))
    assert sorted(t.file.file_path for t in table.scan().plan_files()) == \
        lake_uris(tmp_path / "lake/streams/tx")


def test_a_reload_that_changes_the_catalog_builds_a_new_exporter(tmp_path: Path) -> None:
    """The catalog is part of what the daemon's exporter is built from: a reload that points
    `catalog:` elsewhere (or adds it) gets a new backend, one that leaves it alone does not."""
    def config(catalog: str | None, timeout: str = "10s") -> Path:
        path = tmp_path / f"c{len(list(tmp_path.iterdir()))}.yaml"
        data: dict[str, object] = {"ksqldb": {"url": "http://127.0.0.1:1"},
                                   "lake": {"root": str(tmp_path / "lake")},
                                   "feeds": [{"name": "tx", "source": "S", "kind": "stream"}]}
        if catalog is not None:
            data["catalog"] = {"type": "sql", "uri": catalog, "timeout": timeout}
        path.write_text(yaml.safe_dump(data))
        return path

    first = load_config(config(f"sqlite:///{tmp_path / 'a.db'}"))
    assert backend_key(first) == backend_key(load_config(config(f"sqlite:///{tmp_path / 'a.db'}")))
    for other in (config(f"sqlite:///{tmp_path / 'b.db'}"), config(None),
                  config(f"sqlite:///{tmp_path / 'a.db'}", timeout="3s")):
        assert backend_key(load_config(other)) != backend_key(first)
