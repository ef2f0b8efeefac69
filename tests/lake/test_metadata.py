from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from lakeexportd.errors import LakeStateError, SchemaError
from lakeexportd.ksqldb.types import arrow_schema, parse_type
from lakeexportd.lake import metadata as md

NOW = dt.datetime(2025, 1, 15, 14, 30, tzinfo=dt.UTC)


def _schema(*cols: tuple[str, str]) -> pa.Schema:
    return arrow_schema([n for n, _ in cols], [parse_type(t) for _, t in cols])


def _record(run: str, records: int = 0, status: str = "success") -> md.ExportRecord:
    return md.ExportRecord(
        run, "2025-01-15T14:29:00Z", "2025-01-15T14:30:00Z", records, status,
        window=md.Window(None, 1736951370000),
    )


def _stream_doc() -> md.StreamMetadata:
    doc = md.new_document("stream", feed="tx", source="TX")
    assert isinstance(doc, md.StreamMetadata)
    written = [
        md.WrittenFile("year=2025/month=01/day=15", "data_20250115_143000.parquet", 3000, 1000),
        md.WrittenFile("year=2025/month=01/day=15", "data_20250115_143000_01.parquet", 2000, 500,
                       1736899200000, 1736985599999),
        md.WrittenFile("year=2025/month=01/day=14", "data_20250115_143000.parquet", 7, 48_576),
    ]
    columns = md.columns_of(_schema(("AMOUNT", "DECIMAL(10, 2)"), ("ROWTIME", "BIGINT")), feed="tx")
    return md.after_stream_run(
        doc, record=_record("r1", 5007), written=written, columns=columns,
        watermark_ms=1736951370000, now=NOW,
    )


def test_stream_document_has_design_keys_and_totals() -> None:
    """A stream document carries the section 5 keys, totals summed from the files."""
    raw = md.to_json(_stream_doc())
    assert raw["format_version"] == 1 and raw["kind"] == "stream" and raw["mode"] == "append"
    assert raw["total_records"] == 5007
    assert raw["total_size_bytes"] == 50_076
    assert raw["total_size_mb"] == 0.0  # 50,076 / 1,048,576 rounded to one decimal
    assert raw["watermark"] == {"rowtime_ms": 1736951370000}
    assert [p["path"] for p in raw["partitions"]] == [
        "year=2025/month=01/day=14", "year=2025/month=01/day=15",
    ]
    assert raw["partitions"][1]["records"] == 5000
    assert raw["schema"] == [
        {"name": "AMOUNT", "ksql_type": "DECIMAL(10, 2)", "arrow_type": "decimal128(10, 2)"},
        {"name": "ROWTIME", "ksql_type": "BIGINT", "arrow_type": "int64"},
    ]
    assert raw["exports"][0]["window"] == {"from_ms": None, "to_ms": 1736951370000}
    assert raw["last_export"] == "2025-01-15T14:30:00Z" and raw["last_status"] == "success"


def test_round_trip_through_disk(tmp_path: Path) -> None:
    """commit then load gives back an equal document, unknown keys included."""
    store = md.MetadataStore()
    assert store.load(tmp_path) is None
    doc = dataclasses.replace(_stream_doc(), extra={"owner": "team-a"})
    store.commit(tmp_path, doc)
    assert md.MetadataStore().load(tmp_path) == doc
    assert json.loads((tmp_path / "_metadata.json").read_text())["owner"] == "team-a"


def test_totals_recomputed_not_trusted(tmp_path: Path) -> None:
    """Totals on disk are ignored on load and recomputed from the file list on commit."""
    store = md.MetadataStore()
    store.load(tmp_path)
    store.commit(tmp_path, _stream_doc())
    path = tmp_path / "_metadata.json"
    raw = json.loads(path.read_text())
    raw["total_records"] = 999_999_999
    raw["partitions"][0]["files"][0]["size_bytes"] = 2 * 1_048_576
    raw["partitions"][1]["files"].pop()
    path.write_text(json.dumps(raw))
    doc = store.load(tmp_path)
    assert doc is not None
    store.commit(tmp_path, doc)
    again = json.loads(path.read_text())
    assert again["total_records"] == 7 + 3000
    assert again["total_size_bytes"] == 2 * 1_048_576 + 1000
    assert again["total_size_mb"] == 2.0
    assert again["partitions"][1]["records"] == 3000


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"format_version": 1}', b'{"format_version": 2}', b"\xff\xfe"],
)
def test_corrupt_metadata_clear_error_and_untouched(tmp_path: Path, content: bytes) -> None:
    """Unreadable metadata names the file and the fix, and is never overwritten."""
    path = tmp_path / "_metadata.json"
    path.write_bytes(content)
    store = md.MetadataStore()
    with pytest.raises(LakeStateError, match=r"_metadata\.json.*(backup|repair)"):
        store.load(tmp_path)
    with pytest.raises(LakeStateError, match="refusing to overwrite"):
        store.commit(tmp_path, _stream_doc())
    assert path.read_bytes() == content
    assert sorted(os.listdir(tmp_path)) == ["_metadata.json"]


def test_commit_refuses_when_file_changed_since_load(tmp_path: Path) -> None:
    """A commit over a file another process replaced after our load is refused."""
    a, b = md.MetadataStore(), md.MetadataStore()
    a.load(tmp_path)
    b.load(tmp_path)
    a.commit(tmp_path, _stream_doc())
    with pytest.raises(LakeStateError, match="changed since it was loaded"):
        b.commit(tmp_path, _stream_doc())


def test_commit_leaves_no_temp_and_sets_mode(tmp_path: Path) -> None:
    """The temp file never survives a commit; the file gets the requested mode."""
    store = md.MetadataStore()
    store.load(tmp_path)
    store.commit(tmp_path, _stream_doc(), file_mode=0o644)
    assert os.listdir(tmp_path) == ["_metadata.json"]
    assert (tmp_path / "_metadata.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("point", ["metadata.after_tmp_write", "metadata.after_tmp_fsync"])
def test_crash_before_replace_keeps_old_document(tmp_path: Path, point: str) -> None:
    """SIGKILL before os.replace leaves the previous _metadata.json intact."""
    store = md.MetadataStore()
    store.load(tmp_path)
    store.commit(tmp_path, _stream_doc())
    before = (tmp_path / "_metadata.json").read_bytes()
    code = (
        "import sys, pathlib; from lakeexportd.lake import metadata as md\n"
        "s = md.MetadataStore(); p = pathlib.Path(sys.argv[1]); d = s.load(p)\n"
        "s.commit(p, md.with_export(d, md.ExportRecord('r2', 'a', 'b', 0, 'failed')))\n"
    )
    env = {**os.environ, "LAKEEXPORTD_FAILPOINT": point}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, check=False)
    assert proc.returncode == -9
    assert (tmp_path / "_metadata.json").read_bytes() == before
    assert md.MetadataStore().load(tmp_path) == _stream_doc()


def test_exports_history_bounded_and_failures_kept() -> None:
    """exports keeps the last 100 runs, failed ones with their error."""
    doc: md.FeedMetadata = md.new_document("table", feed="t", source="T")
    for i in range(150):
        status = "failed" if i % 2 else "success"
        rec = dataclasses.replace(_record(f"r{i}", status=status), error="boom" if i % 2 else None)
        doc = md.with_export(doc, rec)
    assert len(doc.exports) == 100
    assert doc.exports[0].run_id == "r50" and doc.exports[-1].run_id == "r149"
    assert doc.last_status == "failed"
    assert md.to_json(doc)["exports"][-1]["error"] == "boom"


def test_table_versions_retention_and_totals() -> None:
    """Tables get versions last_version+1, keep the newest N, totals of the current one."""
    doc = md.new_document("table", feed="t", source="T")
    assert isinstance(doc, md.TableMetadata)
    dropped_all = []
    for n in range(1, 5):
        version = md.next_version(doc)
        assert version == n
        files = [md.WrittenFile(f"version=v{n}", "snapshot_20250115_120000.parquet", n * 10, n)]
        doc, dropped = md.after_table_run(
            doc, record=_record(f"r{n}", n * 10), version=version, files=files,
            columns=(), retention_versions=2, now=NOW,
        )
        dropped_all += [v.version for v in dropped]
    raw = md.to_json(doc)
    assert raw["mode"] == "overwrite"
    assert [v["version"] for v in raw["versions"]] == [3, 4]
    assert raw["versions"][1]["path"] == "version=v4"
    assert raw["current_version"] == 4 and raw["last_version"] == 4
    assert raw["total_records"] == 40 and raw["total_size_bytes"] == 4
    assert dropped_all == [1, 2]
    assert "partitions" not in raw and "watermark" not in raw
    with pytest.raises(LakeStateError):
        md.with_table_version(doc, version=4, files=[], created=NOW, retention_versions=2)


def test_stream_watermark_never_moves_back() -> None:
    """A window ending before the committed watermark is refused."""
    with pytest.raises(LakeStateError, match="backwards"):
        md.with_stream_files(_stream_doc(), [], watermark_ms=1)


def test_schema_history_records_added_columns() -> None:
    """Adding a column appends to schema_history; streams keep the union of columns."""
    doc = _stream_doc()
    wider = md.columns_of(_schema(("AMOUNT", "DECIMAL(10, 2)"), ("ROWTIME", "BIGINT"),
                                  ("NOTE", "STRING")), feed="tx")
    later = NOW + dt.timedelta(hours=1)
    step = md.with_schema(doc, wider, later)
    assert [c.name for c in step.schema] == ["AMOUNT", "ROWTIME", "NOTE"]
    assert md.to_json(step)["schema_history"] == [
        {"changed": "2025-01-15T15:30:00Z", "added": ["NOTE"]}
    ]
    narrower = md.columns_of(_schema(("ROWTIME", "BIGINT")), feed="tx")
    assert [c.name for c in md.with_schema(step, narrower, later).schema] == [
        "AMOUNT", "ROWTIME", "NOTE",
    ]


def test_stream_type_change_is_schema_error() -> None:
    """A stream column that changes type is refused with the column and both types."""
    retyped = md.columns_of(_schema(("AMOUNT", "STRING"), ("ROWTIME", "BIGINT")), feed="tx")
    with pytest.raises(SchemaError, match=r"AMOUNT: DECIMAL\(10, 2\) -> STRING"):
        md.with_schema(_stream_doc(), retyped, NOW)


def test_a_new_storage_type_for_the_same_ksql_type_is_recorded_not_refused() -> None:
    """TIME stored as time32[ms] by an older build, time64[us] now: same ksqlDB type, so the
    stream goes on; the schema takes the new Arrow type and schema_history says so."""
    doc = _stream_doc()
    old_time = md.SchemaColumn("T", "TIME", "time32[ms]")
    doc = dataclasses.replace(doc, schema=(*doc.schema, old_time))
    now_cols = md.columns_of(_schema(("AMOUNT", "DECIMAL(10, 2)"), ("ROWTIME", "BIGINT"), ("T", "TIME")), feed="tx")
    step = md.with_schema(doc, now_cols, NOW)
    assert [c for c in step.schema if c.name == "T"] == [md.SchemaColumn("T", "TIME", "time64[us]")]
    assert md.to_json(step)["schema_history"][-1] == {"changed": "2025-01-15T14:30:00Z", "retyped": ["T"]}


def test_columns_need_ksql_type_metadata() -> None:
    """A schema without ksql_type field metadata (i.e. inferred) is a SchemaError."""
    with pytest.raises(SchemaError, match="ksql_type"):
        md.columns_of(pa.schema([pa.field("A", pa.int64())]), feed="tx")


def test_partition_retention_drops_older_days() -> None:
    """without_partitions_before drops days before the cutoff and returns them."""
    doc, dropped = md.without_partitions_before(_stream_doc(), dt.date(2025, 1, 15))
    assert [p.path for p in doc.partitions] == ["year=2025/month=01/day=15"]
    assert [p.path for p in dropped] == ["year=2025/month=01/day=14"]
    assert doc.total_records == 5000


def test_table_shape_checks_on_load(tmp_path: Path) -> None:
    """A current_version that is not listed is invalid metadata."""
    store = md.MetadataStore()
    store.load(tmp_path)
    doc = md.TableMetadata(feed="t", source="T", current_version=3, last_version=3)
    with pytest.raises(LakeStateError, match="current_version"):
        store.commit(tmp_path, doc)
    raw = md.to_json(md.TableMetadata(feed="t", source="T"))
    raw["current_version"] = 2
    (tmp_path / "_metadata.json").write_text(json.dumps(raw))
    with pytest.raises(LakeStateError, match="current_version"):
        store.load(tmp_path)


def test_docs_metadata_reference_matches_the_code() -> None:
    """docs/metadata.md's example is a valid document, and it names every key the code writes."""
    import re as _re

    from lakeexportd.lake.metadata_codec import from_json, to_json

    text = (Path(__file__).resolve().parents[2] / "docs/metadata.md").read_text()
    example = json.loads(_re.search(r"```json\n(.*?)```", text, _re.S)[1])  # type: ignore[index]
    doc = from_json(example)
    written = to_json(doc)
    assert written["total_records"] == 536  # totals are recomputed from the listed files
    table = to_json(from_json({**example, "kind": "table", "current_version": None, "last_version": 0, "versions": []}))
    for key in {*written, *table}:
        assert f"`{key}" in text, key


def test_a_stream_runs_files_carry_its_commit_time_and_keep_it() -> None:
    """`added` is the run's `finished` on each file it lists; a later run leaves older files'
    `added` alone; it survives the codec; an unparseable one is refused naming where."""
    first = _stream_doc()
    assert {f.added for p in first.partitions for f in p.files} == {"2025-01-15T14:30:00Z"}
    record = md.ExportRecord("r2", "2025-01-15T15:00:00Z", "2025-01-15T15:00:04Z", 1, "success")
    second = md.after_stream_run(
        first, record=record, written=[md.WrittenFile("year=2025/month=01/day=15",
                                                      "data_20250115_150000.parquet", 1, 9)],
        columns=first.schema, watermark_ms=1736953200000, now=NOW)
    added = {f.name: f.added for p in second.partitions for f in p.files if p.path.endswith("15")}
    assert added == {"data_20250115_143000.parquet": "2025-01-15T14:30:00Z",
                     "data_20250115_143000_01.parquet": "2025-01-15T14:30:00Z",
                     "data_20250115_150000.parquet": "2025-01-15T15:00:04Z"}
    raw = md.to_json(second)
    assert raw["partitions"][1]["files"][2]["added"] == "2025-01-15T15:00:04Z"
    assert md.from_json(raw) == second
    raw["partitions"][1]["files"][2]["added"] = "yesterday"
    with pytest.raises(ValueError, match=r"\$\.partitions\[1\]\.files\[2\]\.added 'yesterday' "
                       "is not an ISO time"):
        md.from_json(raw)
