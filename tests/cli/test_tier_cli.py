"""``lakeexportd tier`` on real object stores: moto's S3 server and Azurite, the real CLI.

A stream exported over six days is tiered with ``after: 2d``; each object's class is read back
from the server itself (moto's ListObjectsV2 ``StorageClass``, Azurite's HEAD
``x-ms-access-tier``), never from lakeexportd. The days that must move are computed here from
the calendar. Readers read every row afterwards, straight from the objects.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import obstore
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lakecheck import assert_consistent, assert_exactly_once, read_listed
from objectstores import Azurite, Bucket, MotoS3

from lakeexportd.lake.storage import Lake, open_lake
from lakeexportd.sandbox import Sandbox

SOURCE = "TRANSACTION_FLATTENED"
CLASS = {"s3": "STANDARD_IA", "azure": "Cool"}
DEFAULT = {"s3": "STANDARD", "azure": "Hot"}
_DAY = re.compile(r"year=(\d{4})/month=(\d{2})/day=(\d{2})/")


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with Sandbox.start(seed=31, preload=900, preload_days=6) as sb:
        yield sb


def setup(kind: str, bucket: Bucket, sandbox: Sandbox, tmp_path: Path,
          storage_class: str | None = None) -> tuple[Path, dict[str, str], Lake]:
    """A config with one stream ``tx`` tiered after 2 days, its environment and its lake."""
    secret_key = "secret_access_key" if kind == "s3" else "account_key"
    plain = {k: v for k, v in bucket.config.items() if k != secret_key}
    options = ", ".join(f"{k}: '{v}'" for k, v in plain.items())
    config = tmp_path / "lakeexportd.yaml"
    config.write_text(
        f"ksqldb: {{url: '{sandbox.url}', max_retries: 1}}\n"
        f"lake:\n  root: {bucket.url}/lake\n"
        f"  storage: {{{options}, allow_http: true, {secret_key}_env: LAKE_SECRET}}\n"
        "  lease_ttl: 2s\n"  # a killed run's lease is taken over quickly
        f"logging: {{dir: '{tmp_path / 'logs'}'}}\n"
        "scheduler: {lock_wait: 60s}\n"
        "defaults: {settle_delay: 0s}\n"
        "feeds:\n"
        f"  - {{name: tx, source: {SOURCE}, kind: stream, max_rows_per_file: 150,\n"
        f"     tiering: {{after: 2d, class: {storage_class or CLASS[kind]}}}}}\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "LAKEEXPORTD_FAILPOINT"}
    env["LAKE_SECRET"] = str(bucket.config[secret_key])
    store_options = {k: str(v) for k, v in {**bucket.config, "allow_http": "true"}.items()}
    return config, env, open_lake(f"{bucket.url}/lake", store_options)


def cli(env: dict[str, str], *args: str, failpoint: str | None = None,
        ) -> subprocess.CompletedProcess[str]:
    if failpoint:
        env = {**env, "LAKEEXPORTD_FAILPOINT": failpoint}
    return subprocess.run([sys.executable, "-m", "lakeexportd", *args], env=env,
                          capture_output=True, text=True, timeout=180)


def server_classes(kind: str, bucket: Bucket, request: pytest.FixtureRequest) -> dict[str, str]:
    """Data object key (under lake/streams/tx/) -> its class as the server keeps it."""
    prefix = "lake/streams/tx/"
    if kind == "s3":
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        listing = moto.storage_classes(bucket.name)
        return {k[len(prefix):]: v for k, v in listing.items()
                if k.startswith(prefix) and k.endswith(".parquet")}
    azurite: Azurite = request.getfixturevalue("azurite")
    out = {}
    for chunk in obstore.list(bucket.store, prefix):
        for meta in chunk:
            if meta["path"].endswith(".parquet"):
                status, headers = azurite.request("HEAD", f"{bucket.name}/{meta['path']}")
                assert status == 200 and isinstance(headers, dict)
                out[meta["path"][len(prefix):]] = headers["x-ms-access-tier"]
    return out


def day_of(key: str) -> dt.date:
    match = _DAY.match(key)
    assert match, key
    return dt.date(int(match[1]), int(match[2]), int(match[3]))


def old_enough(key: str, today: dt.date) -> bool:
    """``after: 2d``: a day before today - 2 (UTC); today is the watermark's day, so open."""
    return day_of(key) < today - dt.timedelta(days=2)


def metadata(lake: Lake) -> dict[str, object]:
    data = lake.storage.read_bytes(Path(lake.root) / "streams/tx/_metadata.json")
    parsed: dict[str, object] = json.loads(data)
    return parsed


def listed_tiers(lake: Lake) -> dict[str, str | None]:
    """partition/name -> the tier _metadata.json records for it."""
    doc = metadata(lake)
    return {f"{p['path']}/{f['name']}": f.get("tier")  # type: ignore[index]
            for p in doc["partitions"] for f in p["files"]}  # type: ignore[attr-defined]


def read_every_object(lake: Lake) -> pa.Table:
    """A reader that globs: every Parquet object under the feed, opened by pyarrow."""
    tables = []
    for entry in lake.storage.walk_files(Path(lake.root) / "streams/tx"):
        if entry.name.endswith(".parquet"):
            with lake.storage.open_read(entry.path) as source:
                tables.append(pq.read_table(source))
    return pa.concat_tables(tables, promote_options="default")


@pytest.mark.parametrize("kind", ["s3", "azure"])
def test_tier_moves_old_days_in_place_and_readers_keep_reading(
    kind: str, sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """Dry run changes nothing; the run moves exactly the closed days older than 2 days (class
    read back per object from the server), records it, and every row still reads once."""
    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    config, env, lake = setup(kind, bucket, sandbox, tmp_path)
    done = cli(env, "export", "-c", str(config), "tx")
    assert done.returncode == 0, done.stderr
    today = dt.datetime.now(dt.UTC).date()
    before = server_classes(kind, bucket, request)
    assert set(before.values()) == {DEFAULT[kind]}
    assert any(old_enough(k, today) for k in before) and not all(old_enough(k, today)
                                                                  for k in before)
    document = lake.storage.read_bytes(Path(lake.root) / "streams/tx/_metadata.json")

    dry = cli(env, "tier", "-c", str(config), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    moving = sorted(k for k in before if old_enough(k, today))
    assert f"tier tx: would move {len({day_of(k) for k in moving})} partitions, " \
        f"{len(moving)} files" in dry.stdout and "(--dry-run: nothing changed)" in dry.stdout
    assert server_classes(kind, bucket, request) == before
    assert lake.storage.read_bytes(Path(lake.root) / "streams/tx/_metadata.json") == document

    moved = cli(env, "tier", "-c", str(config), "tx")
    assert moved.returncode == 0, moved.stderr
    assert f"tier tx: moved {len({day_of(k) for k in moving})} partitions, {len(moving)} " \
        f"files" in moved.stdout
    after = server_classes(kind, bucket, request)
    assert after == {k: CLASS[kind] if old_enough(k, today) else DEFAULT[kind] for k in before}
    assert listed_tiers(lake) == {k: CLASS[kind] if old_enough(k, today) else None
                                  for k in before}
    partitions = metadata(lake)["partitions"]
    assert {p["path"]: p["tier"] for p in partitions} == {  # type: ignore[union-attr,index]
        f"{day:year=%Y/month=%m/day=%d}": CLASS[kind] if day < today - dt.timedelta(days=2)
        else None for day in {day_of(k) for k in before}}
    truth = sandbox.arrow(SOURCE)
    assert_exactly_once(read_listed(Path(lake.root), "stream", "tx", lake.storage), truth)
    assert_exactly_once(read_every_object(lake), truth)
    assert_consistent(Path(lake.root), "stream", "tx", lake.storage)

    if kind == "azure":
        return  # what metadata prints does not depend on the store: shown once, on S3
    shown = cli(env, "metadata", "show", "tx", "-c", str(config), "--json")
    assert shown.returncode == 0, shown.stderr
    sizes = {k: lake.storage.size(Path(lake.root) / "streams/tx" / k) for k in before}
    assert json.loads(shown.stdout)["bytes_per_tier"] == {
        "default": sum(s for k, s in sizes.items() if not old_enough(k, today)),
        CLASS[kind]: sum(s for k, s in sizes.items() if old_enough(k, today))}
    table = cli(env, "metadata", "partitions", "tx", "-c", str(config))
    assert table.returncode == 0 and "TIER" in table.stdout and CLASS[kind] in table.stdout


@pytest.mark.parametrize(("kind", "point"), [("s3", "tier.after_object"),
                                             ("s3", "tier.before_commit"),
                                             ("azure", "tier.after_commit")])
def test_tier_killed_then_run_again_ends_with_every_old_object_moved_and_recorded(
    kind: str, point: str, sandbox: Sandbox, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    """SIGKILL between rewriting and recording: objects already in the new class may be
    listed in the old one; the rerun rewrites them again and records everything; no row lost."""
    bucket: Bucket = request.getfixturevalue("s3_bucket" if kind == "s3" else "azure_container")
    config, env, lake = setup(kind, bucket, sandbox, tmp_path)
    assert cli(env, "export", "-c", str(config), "tx").returncode == 0
    today = dt.datetime.now(dt.UTC).date()
    killed = cli(env, "tier", "-c", str(config), failpoint=point)
    assert killed.returncode == -signal.SIGKILL, f"{point} was never reached:\n{killed.stderr}"
    classes = server_classes(kind, bucket, request)
    tiers = listed_tiers(lake)
    moved = {k for k, c in classes.items() if c == CLASS[kind]}
    recorded = {k for k, t in tiers.items() if t == CLASS[kind]}
    assert moved and recorded <= moved  # nothing is recorded that was not moved
    if point != "tier.after_commit":
        assert recorded == set()  # the first batch was not committed
    assert_exactly_once(read_listed(Path(lake.root), "stream", "tx", lake.storage),
                        sandbox.arrow(SOURCE))
    rerun = cli(env, "tier", "-c", str(config))
    assert rerun.returncode == 0, rerun.stderr
    want = {k: CLASS[kind] if old_enough(k, today) else DEFAULT[kind] for k in classes}
    assert server_classes(kind, bucket, request) == want
    assert listed_tiers(lake) == {k: CLASS[kind] if old_enough(k, today) else None
                                  for k in classes}
    assert_exactly_once(read_every_object(lake), sandbox.arrow(SOURCE))
    assert_consistent(Path(lake.root), "stream", "tx", lake.storage)


def test_tier_and_export_of_the_same_feed_at_once_both_succeed_without_disturbing(
    sandbox: Sandbox, tmp_path: Path, s3_bucket: Bucket, request: pytest.FixtureRequest,
) -> None:
    """A tiering run and an export appending today's new rows, started together: each waits
    for the feed's lease in turn; every row is in the lake once, today's objects keep the
    default class, and the old days are moved and recorded."""
    config, env, lake = setup("s3", s3_bucket, sandbox, tmp_path)
    assert cli(env, "export", "-c", str(config), "tx").returncode == 0
    mark = metadata(lake)["watermark"]["rowtime_ms"]  # type: ignore[index]
    now_ms = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    # new rows after the watermark, up to now: the export appends them to today's partition
    sandbox.generate(400, (mark + 1, now_ms - 1))
    base = [sys.executable, "-m", "lakeexportd"]
    tier = subprocess.Popen([*base, "tier", "-c", str(config)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    export = subprocess.Popen([*base, "export", "-c", str(config), "tx"], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tier_out, tier_err = tier.communicate(timeout=180)
    export_out, export_err = export.communicate(timeout=180)
    today = dt.datetime.now(dt.UTC).date()
    assert tier.returncode == 0, tier_err
    assert export.returncode == 0, export_err
    classes = server_classes("s3", s3_bucket, request)
    assert classes == {k: "STANDARD_IA" if old_enough(k, today) else "STANDARD" for k in classes}
    assert any(day_of(k) == today for k in classes)
    assert listed_tiers(lake) == {k: "STANDARD_IA" if old_enough(k, today) else None
                                  for k in classes}
    assert "export tx: 400 rows" in export_out
    assert_exactly_once(read_listed(Path(lake.root), "stream", "tx", lake.storage),
                        sandbox.arrow(SOURCE))
    assert_consistent(Path(lake.root), "stream", "tx", lake.storage)


def test_tier_refuses_a_feed_without_tiering_and_says_what_to_add(
    sandbox: Sandbox, tmp_path: Path, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The CLI's function in process: a named feed without tiering is a usage error (2)."""
    from lakeexportd import cli as main_cli

    config, env, _ = setup("s3", s3_bucket, sandbox, tmp_path)
    text = config.read_text().replace("tiering: {after: 2d, class: STANDARD_IA}", "")
    config.write_text(text.replace("max_rows_per_file: 150,", "max_rows_per_file: 150"))
    monkeypatch.setenv("LAKE_SECRET", env["LAKE_SECRET"])
    assert main_cli.main(["tier", "-c", str(config), "tx"]) == 2
    assert "feed 'tx' has no `tiering:`; add `tiering: {after: 30d, class: ...}`" in \
        capsys.readouterr().err
    assert main_cli.main(["tier", "-c", str(config)]) == 0
    assert "no feed has `tiering:`; nothing to do" in capsys.readouterr().out
