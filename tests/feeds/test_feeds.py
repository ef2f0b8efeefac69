"""FeedManager and the feed registry: states, sync rules, overrides, atomic files, bad input."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import pytest

from lakeexportd.config.load import parse_config
from lakeexportd.config.model import Config, Feed, Schedule
from lakeexportd.errors import ConfigError, FeedError, LakeStateError
from lakeexportd.feeds.manager import FeedManager, FeedUsageError, UnknownFeed
from lakeexportd.feeds.registry import KEEP_HISTORY, feed_from_options, feed_options
from lakeexportd.lake import layout

NOW = dt.datetime(2025, 1, 15, 14, 30, tzinfo=dt.UTC)


def config(root: Path, *feeds: dict[str, Any]) -> Config:
    return parse_config({"ksqldb": {"url": "http://127.0.0.1:1"}, "lake": {"root": str(root)},
                         "feeds": list(feeds)}, path=root.parent / "lakeexportd.yaml")


ORDERS = {"name": "orders", "source": "ORDERS", "kind": "stream"}
TOTALS = {"name": "totals", "source": "TOTALS", "kind": "table",
          "schedule": {"cron": "0 * * * *"}, "security": "aggregated"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "lake"


@pytest.fixture
def manager(root: Path) -> FeedManager:
    return FeedManager(root, now=lambda: NOW)


def names(feeds: list[Feed]) -> list[str]:
    return [f.name for f in feeds]


def cli_feed(name: str = "clicks", source: str = "CLICKS") -> Feed:
    return Feed(name=name, source=source, kind="stream", schedule=Schedule(every=60.0))


def test_sync_registers_yaml_feeds_in_active_with_origin_config(manager: FeedManager, root: Path) -> None:
    """New YAML feeds become feeds/active/<feed>.json holding the resolved definition."""
    report = manager.sync_from_config(config(root, ORDERS, TOTALS))
    assert report.added == ["orders", "totals"]
    data = json.loads((root / "feeds/active/totals.json").read_text())
    assert (data["origin"], data["state"], data["changed"]) == ("config", "active", "2025-01-15T14:30:00Z")
    assert data["definition"]["schedule"] == {"cron": "0 * * * *"}
    assert data["definition"]["security"] == "aggregated"
    assert manager.sync_from_config(config(root, ORDERS, TOTALS)).unchanged == ["orders", "totals"]


def test_definition_round_trips_through_the_yaml_validator() -> None:
    """feed_options -> feed_from_options gives back the same frozen Feed (streams and tables)."""
    cfg = config(Path("/tmp/lake"), {**ORDERS, "settle_delay": "1m30s", "retention_days": 3,
                                     "event_time": "ts", "timezone": "Europe/Paris"}, TOTALS)
    for feed in cfg.feeds:
        assert feed_from_options(feed_options(feed), where="test") == feed


def test_sync_archives_config_feeds_that_left_the_yaml_and_keeps_data(manager: FeedManager, root: Path) -> None:
    """A config feed removed from the YAML moves to feeds/archived/; its data folder stays."""
    manager.sync_from_config(config(root, ORDERS, TOTALS))
    data = layout.feed_dir(root, "stream", "orders") / "x.parquet"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"data")
    report = manager.sync_from_config(config(root, TOTALS))
    assert report.archived == ["orders"]
    assert (root / "feeds/archived/orders.json").exists()
    assert not (root / "feeds/active/orders.json").exists()
    assert data.read_bytes() == b"data"
    assert names(manager.effective_feeds(config(root, TOTALS))) == ["totals"]
    back = manager.sync_from_config(config(root, ORDERS, TOTALS))
    assert back.restored == ["orders"] and manager.get("orders").state == "active"


def test_sync_never_archives_cli_feeds(manager: FeedManager, root: Path) -> None:
    """A feed added with the CLI is not in the YAML, and sync leaves it active."""
    manager.add(cli_feed(), "ad hoc")
    report = manager.sync_from_config(config(root, ORDERS))
    assert report.archived == []
    assert manager.get("clicks").state == "active" and manager.get("clicks").origin == "cli"
    assert names(manager.effective_feeds(config(root, ORDERS))) == ["orders", "clicks"]


def test_reusing_an_archived_name_with_another_source_is_a_config_error(manager: FeedManager, root: Path) -> None:
    """The error names the file, the feed and what to do; the registry is unchanged."""
    manager.sync_from_config(config(root, ORDERS))
    manager.sync_from_config(config(root))
    with pytest.raises(ConfigError) as err:
        manager.sync_from_config(config(root, {**ORDERS, "source": "PAYMENTS"}))
    message = str(err.value)
    assert "lakeexportd.yaml" in message and "'orders'" in message and "ORDERS" in message
    assert "choose another name" in message and "--purge" in message
    assert manager.get("orders").state == "archived"
    assert names(manager.effective_feeds(config(root, {**ORDERS, "source": "PAYMENTS"}))) == []


def test_operator_disable_survives_sync_until_the_yaml_entry_changes(manager: FeedManager, root: Path) -> None:
    """disable wins over YAML enabled across syncs; editing the feed's YAML entry hands control back."""
    cfg = config(root, ORDERS, TOTALS)
    manager.sync_from_config(cfg)
    manager.disable("orders", "upstream incident")
    for _ in range(2):
        manager.sync_from_config(cfg)
        assert manager.get("orders").state == "disabled"
        assert names(manager.effective_feeds(cfg)) == ["totals"]
    edited = config(root, {**ORDERS, "schedule": {"every": "1m"}}, TOTALS)
    assert names(manager.effective_feeds(edited)) == ["orders", "totals"]  # even before sync
    assert manager.sync_from_config(edited).updated == ["orders"]
    entry = manager.get("orders")
    assert (entry.state, entry.override) == ("active", None)


def test_operator_enable_wins_over_yaml_enabled_false(manager: FeedManager, root: Path) -> None:
    """A feed the YAML disables runs after `enable`, with enabled=True in the Feed handed out."""
    cfg = config(root, {**ORDERS, "enabled": False})
    manager.sync_from_config(cfg)
    assert manager.effective_feeds(cfg) == []
    manager.enable("orders", "catch up")
    manager.sync_from_config(cfg)
    [feed] = manager.effective_feeds(cfg)
    assert feed.name == "orders" and feed.enabled


def test_archive_restore_and_bounded_history(manager: FeedManager, root: Path) -> None:
    """Archive moves the file, enable of an archived feed is refused, history stays bounded."""
    manager.add(cli_feed())
    manager.archive("clicks", "retired")
    assert (root / "feeds/archived/clicks.json").exists() and not (root / "feeds/active/clicks.json").exists()
    with pytest.raises(FeedError, match="restore"):
        manager.enable("clicks")
    manager.restore("clicks")
    for i in range(KEEP_HISTORY):
        manager.disable("clicks", f"d{i}")
    entry = manager.get("clicks")
    assert len(entry.history) == KEEP_HISTORY and entry.history[-1].reason == f"d{KEEP_HISTORY - 1}"


def test_restoring_a_feed_that_left_the_yaml_makes_it_a_cli_feed(manager: FeedManager, root: Path) -> None:
    """Otherwise the next sync would archive it again."""
    manager.sync_from_config(config(root, ORDERS))
    manager.sync_from_config(config(root))
    entry = manager.restore("orders")
    assert (entry.origin, entry.state) == ("cli", "active")
    manager.sync_from_config(config(root))
    assert manager.get("orders").state == "active"


def test_update_changes_cli_feeds_only_and_validates(manager: FeedManager, root: Path) -> None:
    """update validates like the YAML, refuses config feeds and source changes."""
    manager.sync_from_config(config(root, ORDERS))
    manager.add(cli_feed())
    assert manager.update("clicks", batch_size=500).feed.batch_size == 500
    with pytest.raises(ConfigError, match="too small"):
        manager.update("clicks", batch_size=0)
    with pytest.raises(FeedError, match="cannot change"):
        manager.update("clicks", source="OTHER")
    with pytest.raises(FeedError, match="configuration file"):
        manager.update("orders", batch_size=5)


def test_unknown_and_unsafe_names_are_usage_errors(manager: FeedManager) -> None:
    """Unknown feeds and names like ../x raise a usage error (exit 2) and touch nothing."""
    with pytest.raises(UnknownFeed, match="unknown feed 'nope'"):
        manager.get("nope")
    for bad in ("../etc", "a/b", "Orders", ".hidden"):
        with pytest.raises(FeedUsageError, match="not a feed name"):
            manager.disable(bad)
    with pytest.raises(FeedUsageError):
        manager.add(cli_feed(name="../x"))
    assert UnknownFeed("x").exit_code == 2


def test_invalid_json_in_a_registry_file_is_reported_and_never_overwritten(manager: FeedManager, root: Path) -> None:
    """A hand-broken entry raises LakeStateError naming the file and the fix; sync keeps its bytes."""
    cfg = config(root, ORDERS)
    manager.sync_from_config(cfg)
    path = root / "feeds/active/orders.json"
    path.write_text('{"feed": "orders", oops')
    for action in (lambda: manager.get("orders"), lambda: manager.sync_from_config(cfg),
                   lambda: manager.disable("orders"), lambda: manager.effective_feeds(cfg)):
        with pytest.raises(LakeStateError) as err:
            action()
        assert str(path) in str(err.value) and "mv " in str(err.value)
    assert path.read_text() == '{"feed": "orders", oops'


def test_delete_and_purge_remove_only_that_feeds_data(manager: FeedManager, root: Path) -> None:
    """purge removes tables/<feed>/ and .staging/<feed>/, never a neighbour's files."""
    manager.add(Feed(name="snap", source="SNAP", kind="table", schedule=Schedule(every=60.0)))
    mine = [layout.feed_dir(root, "table", "snap") / "version=v1/snapshot_20250101_000000.parquet",
            layout.staging_dir(root, "snap") / "x"]
    others = [layout.feed_dir(root, "table", "snap2") / "_metadata.json",
              layout.feed_dir(root, "stream", "snap") / "_metadata.json",
              layout.staging_dir(root, "snap2") / "y"]
    for path in mine + others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    removed = manager.delete("snap", purge=True)
    assert sorted(removed) == sorted([layout.feed_dir(root, "table", "snap"), layout.staging_dir(root, "snap")])
    assert not any(p.exists() for p in mine) and all(p.exists() for p in others)
    with pytest.raises(UnknownFeed):
        manager.get("snap")


def test_delete_of_a_live_config_feed_is_refused(manager: FeedManager, root: Path) -> None:
    """A YAML feed must leave the YAML (or be archived) before its entry can be deleted."""
    manager.sync_from_config(config(root, ORDERS))
    with pytest.raises(FeedError, match="archive"):
        manager.delete("orders")
    manager.archive("orders")
    assert manager.delete("orders") == []


def test_registry_writes_leave_no_temp_files_and_interrupted_moves_resolve(manager: FeedManager, root: Path) -> None:
    """Atomic writes leave only <feed>.json; if a move left two copies, the newer (seq) wins."""
    manager.add(cli_feed())
    stale = (root / "feeds/active/clicks.json").read_bytes()
    manager.archive("clicks")
    (root / "feeds/active/clicks.json").write_bytes(stale)  # as if the unlink never happened
    assert manager.get("clicks").state == "archived"
    files = sorted(p.name for d in ("active", "archived") for p in (root / "feeds" / d).iterdir())
    assert files == ["clicks.json", "clicks.json"]
    assert oct(os.stat(root / "feeds/archived/clicks.json").st_mode & 0o777) == "0o640"
