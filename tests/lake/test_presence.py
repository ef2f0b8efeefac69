"""Daemon presence entries (``<lake>/.daemons/``) on an object store, where each is a lease.

A lease proves its holder dead only to a process that has watched it unchanged for a whole
ttl, so a starting daemon keeps every entry; ``Presence.sweep``, which a running daemon calls
every ttl, then removes the entries of daemons that stopped renewing, and never a live one.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import obstore
from obstore.store import MemoryStore

from lakeexportd.lake.presence import Presence, live_daemons
from lakeexportd.lake.storage import ObjectStorage

ROOT = Path("/bucket/lake")
TTL = 30.0
NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def plant_entry(store: MemoryStore, name: str, pid: int, renewal: int) -> str:
    """An entry as another daemon's lease would look (``renewal`` makes each write differ)."""
    key = f".daemons/otherhost_{pid}.json"
    note = {"host": "otherhost", "pid": pid, "started": "2026-12-06T11:00:00Z",
            "config": "/etc/lakeexportd/lakeexportd.yaml", "metrics": "127.0.0.1:9464",
            "version": "test"}
    lease = {"lease": "lakeexportd", "owner": f"otherhost:{pid}:{name}", "epoch": 1,
             "ttl_s": TTL, "renewed": renewal, "released": False, "token": f"{name}{renewal}",
             "note": json.dumps(note)}
    obstore.put(store, key, json.dumps(lease).encode())
    return key


def test_a_dead_daemons_entry_is_swept_after_one_ttl_and_a_renewing_one_is_kept() -> None:
    store = MemoryStore()
    clock = Clock()
    storage = ObjectStorage(store, url="s3://bucket/lake", root=ROOT, lease_ttl=TTL,
                            monotonic=clock)
    dead = plant_entry(store, "dead", 111, 0)
    live = plant_entry(store, "live", 222, 0)
    presence = Presence(ROOT, config="c.yaml", metrics="127.0.0.1:1", version="test", now=NOW,
                        storage=storage)
    others = presence.claim()
    try:
        # At start both look alive: this process has not watched them for a ttl yet.
        assert sorted(d.pid for d in others) == [111, 222]
        assert presence.sweep() == []
        clock.now += TTL / 2
        plant_entry(store, "live", 222, 1)  # the live daemon renews (ttl/3 in real life)
        assert presence.sweep() == []
        clock.now += TTL / 2 + 1  # the dead entry now unchanged for more than a ttl
        plant_entry(store, "live", 222, 2)
        removed = presence.sweep()
        assert [p.name for p in removed] == [Path(dead).name]
        keys = {m["path"] for m in obstore.list(store, ".daemons").collect()}
        assert dead not in keys and live in keys
        # (this process's own entry renews on real time, not on the test's clock: left out)
        assert {d.pid for d in live_daemons(ROOT, storage)} - {presence.info.pid} == {222}
    finally:
        presence.release()
