"""``POST /ksql`` statements: SHOW/LIST, DESCRIBE and ALTER against the catalog (reference 5).

Each statement gives one entity; the first bad statement fails the whole request, as ksqlDB
validates every statement before it executes any.
"""

from __future__ import annotations

from typing import Any

from lakeexportd.sandbox import describe, errors, sql, syntax
from lakeexportd.sandbox.catalog import Catalog
from lakeexportd.sandbox.errors import KsqlError
from lakeexportd.sandbox.sqltypes import SqlType, TypeSyntaxError, parse


def run(catalog: Catalog, text: str) -> list[dict[str, Any]]:
    """The entities of every statement in ``text``."""
    parsed = []
    for statement_text in sql.split_statements(text):
        try:
            parsed.append((sql.parse(statement_text), statement_text))
        except sql.SqlError as exc:
            raise errors.bad_statement(str(exc), statement_text) from exc
    checked = [(_check(catalog, s, t), s, t) for s, t in parsed]
    return [_execute(catalog, s, t, additions) for additions, s, t in checked]


def _check(catalog: Catalog, statement: syntax.Statement,
           text: str) -> list[tuple[str, SqlType]]:
    """Validate one statement; for ALTER, return the parsed columns to add."""
    if isinstance(statement, syntax.Select):
        raise KsqlError(400, errors.statement(40002, errors.QUERY_ENDPOINT, text))
    if isinstance(statement, syntax.Show):
        return []
    source = catalog.sources.get(statement.source)
    if source is None:
        raise errors.bad_statement(
            f"Could not find STREAM/TABLE '{statement.source}' in the Metastore", text)
    if isinstance(statement, syntax.Describe):
        return []
    if source.kind != statement.kind:
        raise errors.bad_statement(
            f"Incompatible data source type is {source.kind}, but statement was ALTER "
            f"{statement.kind}", text)
    additions: list[tuple[str, SqlType]] = []
    for name, type_text in statement.additions:
        if source.column(name) is not None or name in (n for n, _ in additions):
            raise errors.bad_statement(
                f"Cannot add column `{name}` to schema. A column with the same name "
                "already exists.", text)
        try:
            additions.append((name, parse(type_text)))
        except TypeSyntaxError as exc:
            raise errors.bad_statement(str(exc), text) from exc
    return additions


def _execute(catalog: Catalog, statement: syntax.Statement, text: str,
             additions: list[tuple[str, SqlType]]) -> dict[str, Any]:
    sources = catalog.sources
    if isinstance(statement, syntax.Show):
        with catalog.lock:
            return describe.show(statement.what, text, sources, statement.extended)
    assert isinstance(statement, syntax.Describe | syntax.Alter)
    source = sources[statement.source]
    with catalog.lock:
        if isinstance(statement, syntax.Describe):
            return describe.describe(source, text, sources, statement.extended)
        for name, ksql_type in additions:
            source.add_column(name, ksql_type)
        catalog.command_sequence += 1
        return describe.altered(source, text, catalog.command_sequence)
