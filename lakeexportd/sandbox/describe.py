"""``POST /ksql`` entities: SHOW/LIST, DESCRIBE [EXTENDED] and ALTER (wire reference section 5).

Key order follows ksqlDB's Jackson creators; text is built with ``json.dumps`` on ordered dicts.
"""

from __future__ import annotations

import json
from typing import Any

from lakeexportd.sandbox.sources import Source, StreamSource, TableSource
from lakeexportd.sandbox.sqltypes import SqlType

KEY_FORMAT = "KAFKA"
VALUE_FORMAT = "JSON"


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def schema_info(t: SqlType) -> dict[str, Any]:
    info: dict[str, Any] = {"type": t.base, "fields": None, "memberSchema": None}
    if t.base == "STRUCT":
        info["fields"] = [{"name": n, "schema": schema_info(ft)} for n, ft in t.fields]
    elif t.base in ("ARRAY", "MAP"):
        assert t.member is not None
        info["memberSchema"] = schema_info(t.member)
    elif t.base == "DECIMAL":
        info["parameters"] = {"precision": t.precision, "scale": t.scale}
    return info


def source_info(source: Source) -> dict[str, Any]:
    return {"type": source.kind, "name": source.name, "topic": source.topic,
            "keyFormat": KEY_FORMAT, "valueFormat": VALUE_FORMAT, "isWindowed": False}


def query_ids(sources: dict[str, Source]) -> dict[str, str]:
    """The persistent query writing each derived source (CSAS_/CTAS_<NAME>_<n>)."""
    ids = {}
    for n, source in enumerate(sources.values(), start=1):
        if source.query_text:
            prefix = "CSAS" if source.is_stream else "CTAS"
            ids[source.name] = f"{prefix}_{source.name}_{n}"
    return ids


def _reads_from(source: Source) -> str:
    text = source.query_text
    return text.split(" FROM ", 1)[1].split(" ", 1)[0] if " FROM " in text else ""


def _create_as(source: Source) -> str:
    return (f"CREATE {source.kind} {source.name} WITH (KAFKA_TOPIC='{source.topic}', "
            f"PARTITIONS={source.partitions}, REPLICAS=1) AS {source.query_text};")


def ddl(source: Source) -> str:
    """The server-normalised CREATE statement DESCRIBE shows."""
    if source.query_text:
        return _create_as(source)
    columns = ", ".join(
        f"{c.name} {c.type}{' KEY' if c.key else ''}" for c in source.columns
    )
    ts = f", TIMESTAMP='{source.timestamp_column}'" if source.timestamp_column else ""
    return (f"CREATE {source.kind} {source.name} ({columns}) WITH (KAFKA_TOPIC='{source.topic}', "
            f"KEY_FORMAT='{KEY_FORMAT}', PARTITIONS={source.partitions}{ts}, "
            f"VALUE_FORMAT='{VALUE_FORMAT}');")


def _query_entry(writer: Source, ids: dict[str, str]) -> dict[str, Any]:
    return {"queryString": _create_as(writer), "sinks": [writer.name],
            "sinkKafkaTopics": [writer.topic], "id": ids[writer.name],
            "statusCount": {"RUNNING": 1}, "queryType": "PERSISTENT", "state": "RUNNING"}


def _end_offsets(source: Source) -> list[int]:
    if isinstance(source, StreamSource):
        return source.end_offsets()
    assert isinstance(source, TableSource)
    # Changelog records land in partitions by key; an even split is close enough here.
    total = source.changes
    return [total // source.partitions + (p < total % source.partitions)
            for p in range(source.partitions)]


def source_description(source: Source, sources: dict[str, Source],
                       extended: bool) -> dict[str, Any]:
    ids = query_ids(sources)
    readers = [s for s in sources.values() if s.query_text and _reads_from(s) == source.name]
    fields = []
    for c in source.columns:
        field: dict[str, Any] = {"name": c.name, "schema": schema_info(c.type)}
        if c.key:
            field["type"] = "KEY"
        fields.append(field)
    summaries = []
    if extended:
        offsets = _end_offsets(source)
        for reader in readers:
            summaries.append({
                "groupId": f"_confluent-ksql-default_query_{ids[reader.name]}",
                "topicSummaries": [{"kafkaTopic": source.topic, "offsets": [
                    {"partition": p, "logStartOffset": 0, "logEndOffset": end,
                     "consumerOffset": end} for p, end in enumerate(offsets)]}],
            })
    return {
        "name": source.name, "windowType": None,
        "readQueries": [_query_entry(r, ids) for r in readers],
        "writeQueries": [_query_entry(source, ids)] if source.query_text else [],
        "fields": fields, "type": source.kind, "timestamp": source.timestamp_column,
        "statistics": "", "errorStats": "", "extended": extended,
        "keyFormat": KEY_FORMAT, "valueFormat": VALUE_FORMAT, "topic": source.topic,
        "partitions": source.partitions, "replication": 1, "statement": ddl(source),
        "queryOffsetSummaries": summaries, "sourceConstraints": [],
        "clusterStatistics": [], "clusterErrorStats": [],
    }


def show(what: str, statement_text: str, sources: dict[str, Source],
         extended: bool) -> dict[str, Any]:
    kind = what[:-1]  # STREAMS -> STREAM
    chosen = [s for s in sources.values() if s.kind == kind]
    if extended:
        return {"@type": "source_descriptions", "statementText": statement_text,
                "sourceDescriptions": [source_description(s, sources, True) for s in chosen],
                "warnings": []}
    key = what.lower()
    return {"@type": key, "statementText": statement_text,
            key: [source_info(s) for s in chosen], "warnings": []}


def describe(source: Source, statement_text: str, sources: dict[str, Source],
             extended: bool) -> dict[str, Any]:
    return {"@type": "sourceDescription", "statementText": statement_text,
            "sourceDescription": source_description(source, sources, extended), "warnings": []}


def altered(source: Source, statement_text: str, sequence: int) -> dict[str, Any]:
    noun = "Stream" if source.is_stream else "Table"
    return {"@type": "currentStatus", "statementText": statement_text,
            "commandId": f"{source.kind.lower()}/`{source.name}`/alter",
            "commandStatus": {"status": "SUCCESS", "message": f"{noun} altered", "queryId": None},
            "commandSequenceNumber": sequence, "warnings": []}
