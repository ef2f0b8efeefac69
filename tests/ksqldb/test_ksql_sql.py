"""The SQL texts of ksqldb/sql.py, pinned: the sandbox and ksqlDB parse exactly these."""

from __future__ import annotations

import pytest

from lakeexportd.errors import FeedError
from lakeexportd.ksqldb import sql


def test_catalog_statements() -> None:
    assert sql.list_sources() == "SHOW STREAMS; SHOW TABLES;"
    assert sql.describe("TRANSACTION_STREAM") == "DESCRIBE TRANSACTION_STREAM;"


def test_stream_window_is_half_open_with_rowtime_first() -> None:
    assert sql.stream_window("S", 1700000000000, 1700000060000) == (
        "SELECT ROWTIME, * FROM S WHERE ROWTIME > 1700000000000 AND ROWTIME <= 1700000060000;"
    )


def test_a_first_window_has_no_lower_bound() -> None:
    assert sql.stream_window("S", None, 5) == "SELECT ROWTIME, * FROM S WHERE ROWTIME <= 5;"
    assert sql.stream_window("S", 0, 5) == (
        "SELECT ROWTIME, * FROM S WHERE ROWTIME > 0 AND ROWTIME <= 5;"
    )


def test_recount_asks_for_rowtime_only() -> None:
    assert sql.window_rowtimes("S", 10, 20) == (
        "SELECT ROWTIME FROM S WHERE ROWTIME > 10 AND ROWTIME <= 20;"
    )
    assert sql.window_rowtimes("S", None, 20) == "SELECT ROWTIME FROM S WHERE ROWTIME <= 20;"


def test_table_scan() -> None:
    assert sql.table_scan("USERS_TABLE") == "SELECT * FROM USERS_TABLE;"


def test_names_are_written_as_given() -> None:
    """No quoting or case folding: ksqlDB reads an unquoted name in upper case itself."""
    assert sql.table_scan("users_table") == "SELECT * FROM users_table;"
    assert sql.describe("`Mixed Case`") == "DESCRIBE `Mixed Case`;"


@pytest.mark.parametrize(
    "name", ["S1; DROP STREAM S2", "", "1ABC", "S-1", "S1 WHERE 1=1", "`a`b`", "S1;"]
)
def test_what_is_not_a_name_never_becomes_sql(name: str) -> None:
    for build in (sql.describe, sql.table_scan,
                  lambda s: sql.stream_window(s, None, 1), lambda s: sql.window_rowtimes(s, 0, 1)):
        with pytest.raises(FeedError, match="is not a ksqlDB source name"):
            build(name)


def test_push_after_nothing_committed_reads_everything() -> None:
    """No offsets and no watermark: no WHERE, pseudo columns first."""
    assert sql.push_after("S", {}, None) == (
        "SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM S EMIT CHANGES;"
    )


def test_push_after_a_watermark_only() -> None:
    """A feed switched from batch mode starts after its watermark in every partition."""
    assert sql.push_after("S", {}, 1700000000000) == (
        "SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM S WHERE ROWTIME > 1700000000000 "
        "EMIT CHANGES;"
    )


def test_push_after_offsets_in_partition_order_and_the_rest_in_full() -> None:
    """Committed partitions after their offset; any other partition from its start."""
    assert sql.push_after("S", {1: 7, 0: 41}, None) == (
        "SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM S WHERE "
        "(ROWPARTITION = 0 AND ROWOFFSET > 41) OR (ROWPARTITION = 1 AND ROWOFFSET > 7) "
        "OR (ROWPARTITION <> 0 AND ROWPARTITION <> 1) EMIT CHANGES;"
    )
    assert sql.push_after("S", {3: 0}, None) == (
        "SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM S WHERE "
        "(ROWPARTITION = 3 AND ROWOFFSET > 0) OR ROWPARTITION <> 3 EMIT CHANGES;"
    )


def test_push_after_offsets_and_a_start_time() -> None:
    """The start time holds in every partition, committed ones too: a row older than it
    that comes after a committed offset is left out on each reconnection alike."""
    assert sql.push_after("S", {0: 5}, 99) == (
        "SELECT ROWPARTITION, ROWOFFSET, ROWTIME, * FROM S WHERE ROWTIME > 99 AND "
        "((ROWPARTITION = 0 AND ROWOFFSET > 5) OR ROWPARTITION <> 0) EMIT CHANGES;"
    )


def test_push_after_refuses_negative_points_and_bad_names() -> None:
    with pytest.raises(ValueError, match="never negative"):
        sql.push_after("S", {0: -1}, None)
    with pytest.raises(FeedError):
        sql.push_after("S; DROP STREAM T", {}, None)
