"""What ksqlDB says about itself and its sources, read from its JSON answers.

``SHOW STREAMS; SHOW TABLES;`` lists the sources (``SourceInfo``), ``DESCRIBE`` gives one
source's columns with their types (``SourceDescription``; SchemaInfo objects become
``KsqlType``) and ``GET /info`` the server's version (``ServerInfo``). The client sends the
requests; these functions only read the answers, so the shapes ksqlDB answers in are known
in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from lakeexportd.errors import KsqlDBProtocolError
from lakeexportd.ksqldb.types import KsqlType, parse_type


@dataclass(frozen=True)
class SourceInfo:
    """One entry of ``SHOW STREAMS`` / ``SHOW TABLES``."""

    name: str
    kind: Literal["stream", "table"]
    topic: str
    key_format: str
    value_format: str
    is_windowed: bool


@dataclass(frozen=True)
class SourceDescription:
    """What ``DESCRIBE`` says about a source: its columns (key columns first) and more."""

    name: str
    kind: Literal["stream", "table"]
    columns: tuple[tuple[str, KsqlType], ...]
    key_columns: tuple[str, ...]
    topic: str
    timestamp_column: str | None
    window_type: str | None
    statement: str


@dataclass(frozen=True)
class ServerInfo:
    version: str
    kafka_cluster_id: str
    service_id: str
    status: str | None


def sources(entities: list[dict[str, Any]]) -> list[SourceInfo]:
    """Every stream and table in the entity list of ``SHOW STREAMS; SHOW TABLES;``."""
    found: list[SourceInfo] = []
    for entity in entities:
        for key in ("streams", "tables"):
            for s in entity.get(key) or []:
                found.append(
                    SourceInfo(
                        name=s["name"],
                        kind="stream" if s.get("type") == "STREAM" else "table",
                        topic=s.get("topic", ""),
                        key_format=s.get("keyFormat", ""),
                        value_format=s.get("valueFormat", ""),
                        is_windowed=bool(s.get("isWindowed")),
                    )
                )
    return found


def description(entities: list[dict[str, Any]], *, source: str) -> SourceDescription:
    """The entity list of ``DESCRIBE <source>;`` as a ``SourceDescription``."""
    desc = entities[0].get("sourceDescription") if entities else None
    if not isinstance(desc, dict):
        raise KsqlDBProtocolError(f"DESCRIBE {source}: answer has no sourceDescription")
    columns: list[tuple[str, KsqlType]] = []
    keys: list[str] = []
    for f in desc.get("fields", []):
        columns.append((f["name"], schema_info_type(f["schema"], column=f["name"])))
        if f.get("type") == "KEY":
            keys.append(f["name"])
    return SourceDescription(
        name=desc["name"],
        kind="table" if desc.get("type") == "TABLE" else "stream",
        columns=tuple(columns),
        key_columns=tuple(keys),
        topic=desc.get("topic", ""),
        timestamp_column=desc.get("timestamp") or None,
        window_type=desc.get("windowType"),
        statement=desc.get("statement", ""),
    )


def server_info(data: Any) -> ServerInfo:
    """The JSON of ``GET /info`` as a ``ServerInfo`` (missing fields empty)."""
    info = data.get("KsqlServerInfo", {}) if isinstance(data, dict) else {}
    return ServerInfo(
        version=str(info.get("version", "")),
        kafka_cluster_id=str(info.get("kafkaClusterId", "")),
        service_id=str(info.get("ksqlServiceId", "")),
        status=info.get("serverStatus"),
    )


def schema_info_type(schema: dict[str, Any], *, column: str) -> KsqlType:
    """A ``DESCRIBE`` SchemaInfo object as a ``KsqlType`` (MAP keys are not exposed: STRING)."""
    base = str(schema.get("type", ""))
    if base == "DECIMAL":
        params = schema.get("parameters") or {}
        return parse_type(
            f"DECIMAL({params.get('precision')}, {params.get('scale')})", column=column
        )
    if base == "ARRAY":
        return KsqlType("ARRAY", element=schema_info_type(schema["memberSchema"], column=column))
    if base == "MAP":
        value = schema_info_type(schema["memberSchema"], column=column)
        return KsqlType("MAP", key=KsqlType("STRING"), element=value)
    if base == "STRUCT":
        fields = tuple(
            (f["name"], schema_info_type(f["schema"], column=f"{column}.{f['name']}"))
            for f in schema.get("fields") or []
        )
        return KsqlType("STRUCT", fields=fields)
    return parse_type(base, column=column)
