"""What a lake file is in Iceberg: the table's schema made from the files' own, and each
file's entry (row count, column bounds) read from its Parquet footer, never rewritten.

A stream's ``year``/``month``/``day`` are no columns of its files: the table declares them as
``int`` columns with identity partitioning and each entry carries its folder's values (the
Iceberg spec's projection of identity partitions absent from a file, as Hive tables migrated
to Iceberg have them).
"""

from __future__ import annotations

from typing import Final

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io.pyarrow import (
    compute_statistics_plan,
    data_file_statistics_from_parquet_metadata,
    parquet_path_to_id_mapping,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import Table
from pyiceberg.typedef import Record

from lakeexportd.config.model import Feed
from lakeexportd.errors import CatalogError
from lakeexportd.lake import layout

PARTITION_COLUMNS: Final = ("year", "month", "day")
MAX_DECIMAL_DIGITS: Final = 38


def catalog_schema(feed: Feed, file_schema: pa.Schema) -> pa.Schema:
    """The Arrow schema the table is made from: the files' columns (field metadata dropped),
    then a stream's partition columns. Types Iceberg cannot hold exactly are refused here."""
    for field in file_schema:
        problem = _unrepresentable(field.type)
        if problem:
            raise CatalogError(
                f"feed {feed.name!r}: column {field.name} is {problem}, which an Iceberg table "
                f"cannot hold (decimals have at most {MAX_DECIMAL_DIGITS} digits). The feed "
                "stays in the lake, uncatalogued: export it through a ksqlDB stream that "
                "casts or drops that column to register it, or set `catalog: false` on it")
        if field.name.lower() in PARTITION_COLUMNS and feed.kind == "stream":
            raise CatalogError(
                f"feed {feed.name!r}: column {field.name} clashes with the partition column "
                f"{field.name.lower()} the catalog adds: rename it in ksqlDB (AS) to register "
                "the feed, or set `catalog: false` on it")
    fields = [pa.field(f.name, f.type, nullable=f.nullable) for f in file_schema]
    if feed.kind == "stream":
        fields += [pa.field(name, pa.int32()) for name in PARTITION_COLUMNS]
    return pa.schema(fields)


def _unrepresentable(kind: pa.DataType) -> str | None:
    if pa.types.is_decimal(kind) and kind.precision > MAX_DECIMAL_DIGITS:
        return f"DECIMAL({kind.precision}, {kind.scale})"
    children: list[pa.DataType] = []
    if pa.types.is_struct(kind):
        children = [kind.field(i).type for i in range(kind.num_fields)]
    elif pa.types.is_map(kind):
        children = [kind.key_type, kind.item_type]
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        children = [kind.value_type]
    for child in children:
        problem = _unrepresentable(child)
        if problem:
            return f"{problem} inside {kind}"
    return None


def data_file(table: Table, footer: pq.FileMetaData, *, uri: str, folder: str,
              size_bytes: int) -> DataFile:
    """The Iceberg entry of the lake file at ``uri`` (in ``folder`` of its feed)."""
    schema = table.schema()
    stats = data_file_statistics_from_parquet_metadata(
        parquet_metadata=footer,
        stats_columns=compute_statistics_plan(schema, table.metadata.properties),
        parquet_column_mapping=parquet_path_to_id_mapping(schema),
    )
    spec = table.spec()
    partition = Record(*partition_values(folder)) if spec.fields else Record()
    return DataFile.from_args(
        content=DataFileContent.DATA,
        file_path=uri,
        file_format=FileFormat.PARQUET,
        partition=partition,
        file_size_in_bytes=size_bytes,
        sort_order_id=None,
        spec_id=spec.spec_id,
        equality_ids=None,
        key_metadata=None,
        **stats.to_serialized_dict(),
    )


def partition_values(folder: str) -> tuple[int, int, int]:
    day = layout.partition_day(folder)
    return day.year, day.month, day.day
