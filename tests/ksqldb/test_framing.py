"""Framing of query answers: chunk boundaries, truncation, error objects, legacy /query."""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa
import pytest

from lakeexportd.errors import KsqlDBProtocolError, KsqlDBStreamError
from lakeexportd.ksqldb.framing import DelimitedStream, StreamedRowStream, parse_schema_string

# Byte-exact from the wire-format reference, section 2.3.
DELIMITED = (
    b'{"queryId":"query_1655152127973","columnNames":["COUNT","USERID"],'
    b'"columnTypes":["BIGINT","STRING"]}\n'
    b'[1,"USER_0"]\n'
    b'[2,"USER_2"]\n'
)
# Byte-exact from the reference, section 3.3 (stream pull over /query).
STREAMED = (
    b'[{"header":{"queryId":"transient_PAGEVIEW_KSTREAM_1","schema":'
    b'"`USERID` STRING, `PAGEID` STRING, `VIEWTIME` BIGINT"}},\n'
    b'{"row":{"columns":["USER_1","PAGE_1",1]}},\n'
    b'{"finalMessage":"Query Completed"}]'
)


def run(stream: DelimitedStream | StreamedRowStream, chunks: Iterable[bytes]) -> pa.Table:
    tables = []
    for chunk in chunks:
        tables.extend(stream.feed(chunk))
    tables.extend(stream.finish())
    assert stream.decoder is not None
    return pa.concat_tables(tables) if tables else stream.decoder.schema.empty_table()


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000])
def test_delimited_answer_decodes_whatever_the_chunk_boundaries(size: int) -> None:
    """Chunks split anywhere (mid-line, mid-UTF-8) give the same header and rows."""
    stream = DelimitedStream(block_bytes=16)
    table = run(stream, split_every(DELIMITED, size))
    assert stream.header is not None and stream.header.query_id == "query_1655152127973"
    assert table.to_pylist() == [{"COUNT": 1, "USERID": "USER_0"}, {"COUNT": 2, "USERID": "USER_2"}]
    assert table.schema.field("COUNT").type == pa.int64()


def test_header_only_answer_is_an_empty_complete_result() -> None:
    """A query with no rows is a header line and nothing else: zero rows, typed schema."""
    stream = DelimitedStream()
    table = run(stream, [DELIMITED.split(b"\n")[0] + b"\n"])
    assert table.num_rows == 0 and table.schema.names == ["COUNT", "USERID"]


@pytest.mark.parametrize("cut", [len(DELIMITED) - 1, len(DELIMITED) - 5, 60, 0])
def test_answer_broken_off_before_its_final_newline_raises(cut: int) -> None:
    """A body that stops mid-line (or before the header) is never taken as complete."""
    with pytest.raises(KsqlDBStreamError, match="broke off|ended before its header"):
        run(DelimitedStream(), [DELIMITED[:cut]])


def test_mid_stream_error_object_fails_the_answer() -> None:
    """An error object after rows (HTTP 200) raises with ksqlDB's code and message."""
    body = DELIMITED + (
        b'{"@type":"generic_error","error_code":50000,'
        b'"message":"java.lang.RuntimeException: Failure in processing"}\n'
    )
    with pytest.raises(KsqlDBStreamError, match="Failure in processing") as info:
        run(DelimitedStream(), split_every(body, 5))
    assert info.value.error_code == 50000
    assert "after 2 rows" in str(info.value)


def test_error_object_instead_of_a_header_fails_the_answer() -> None:
    """An error object as the first line is a failure, not an empty result."""
    body = b'{"@type":"generic_error","error_code":50000,"message":"boom"}\n'
    with pytest.raises(KsqlDBStreamError, match="boom"):
        run(DelimitedStream(), [body])


def test_continuation_token_lines_are_skipped() -> None:
    """Token lines between rows carry no row and do not end the answer."""
    body = DELIMITED + b'{"continuationToken":"abc"}\n[3,"USER_3"]\n'
    assert run(DelimitedStream(), [body]).column("COUNT").to_pylist() == [1, 2, 3]


def test_row_numbers_in_errors_count_across_blocks() -> None:
    """A bad row deep in a large answer is reported by its number in the whole answer."""
    rows = b"".join(b'[%d,"u"]\n' % i for i in range(1000))
    body = DELIMITED.split(b"\n")[0] + b"\n" + rows + b'[1000,"u",3]\n'
    with pytest.raises(KsqlDBProtocolError, match="row 1001 has 3 values"):
        run(DelimitedStream(block_bytes=512), split_every(body, 300))


def test_header_that_is_not_json_is_a_protocol_error() -> None:
    """Garbage where the header belongs is reported as such."""
    with pytest.raises(KsqlDBProtocolError, match="header line is not JSON"):
        run(DelimitedStream(), [b"<html>oops</html>\n"])


@pytest.mark.parametrize("size", [1, 9, 10_000])
def test_legacy_query_answer_decodes(size: int) -> None:
    """The /query StreamedRow array gives the same rows, ending at finalMessage."""
    stream = StreamedRowStream(block_bytes=32)
    table = run(stream, split_every(STREAMED, size))
    assert table.to_pylist() == [{"USERID": "USER_1", "PAGEID": "PAGE_1", "VIEWTIME": 1}]


def test_legacy_table_pull_without_final_message_and_key_markers() -> None:
    """A table pull on /query has KEY markers and ends at ']' without a finalMessage."""
    body = (
        b'[{"header":{"queryId":"query_1","schema":"`ID` STRING KEY, `N` BIGINT"}},\n'
        b'{"row":{"columns":["a",1]}},\n{"row":{"columns":["b",2]}}]'
    )
    assert run(StreamedRowStream(), [body]).column("ID").to_pylist() == ["a", "b"]


def test_legacy_zero_rows_and_keepalive_newlines() -> None:
    """`[{"header":...}]` is a complete empty answer; old servers' blank lines are ignored."""
    body = b'[{"header":{"queryId":"q","schema":"`A` INTEGER"}}\n\n\n]\n'
    assert run(StreamedRowStream(), split_every(body, 4)).num_rows == 0


def test_legacy_answer_without_closing_bracket_raises() -> None:
    """A /query answer that stops before ']' is incomplete."""
    with pytest.raises(KsqlDBStreamError, match="no closing"):
        run(StreamedRowStream(), [STREAMED[: STREAMED.index(b'{"finalMessage')]])


def test_legacy_answer_cut_inside_its_last_element_is_a_broken_stream() -> None:
    """A /query body that ends inside an element (a stream that just stops) broke off."""
    cut = STREAMED[: STREAMED.index(b'"PAGE_1"')]
    with pytest.raises(KsqlDBStreamError, match="middle of an element after 0 rows"):
        run(StreamedRowStream(), [cut])


def test_flush_decodes_every_complete_line_at_once() -> None:
    """``flush`` hands over the rows a large block would hold back, never a partial line."""
    cases = [(DelimitedStream(), DELIMITED, [1]), (StreamedRowStream(), STREAMED, ["USER_1"])]
    for stream, body, first in cases:
        head = body.index(b"\n") + 1
        cut = len(body) - 5  # inside the last line: the second row, or the finalMessage
        assert list(stream.feed(body[:head])) == []
        assert list(stream.feed(body[head:cut])) == []  # under block_bytes: nothing yet
        rows = [list(r.values())[0] for t in stream.flush() for r in t.to_pylist()]
        assert rows == first
        assert list(stream.flush()) == []


def test_legacy_error_message_element_fails_the_answer() -> None:
    """An errorMessage element (even with the trailing comma) raises with its code."""
    body = STREAMED.split(b'{"finalMessage')[0] + (
        b'{"errorMessage":{"@type":"generic_error","error_code":50000,"message":"bad"}},\n]'
    )
    with pytest.raises(KsqlDBStreamError, match="bad") as info:
        run(StreamedRowStream(), [body])
    assert info.value.error_code == 50000


def test_schema_string_with_nested_types_and_quoted_names() -> None:
    """Commas inside types and back-quoted names do not split columns."""
    names, types = parse_schema_string(
        "`ID` STRING KEY, `M` MAP<STRING, DECIMAL(4, 2)>, `S` STRUCT<`A, B` INTEGER>"
    )
    assert names == ["ID", "M", "S"]
    assert [str(t) for t in types] == [
        "STRING",
        "MAP<STRING, DECIMAL(4, 2)>",
        "STRUCT<`A, B` INTEGER>",
    ]
