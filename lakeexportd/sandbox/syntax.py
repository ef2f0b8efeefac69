"""Syntax tree of the statements the sandbox understands (built by ``sql.parse``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Col:
    name: str


@dataclass(frozen=True)
class Lit:
    value: Any


@dataclass(frozen=True)
class Cmp:
    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Logic:
    op: str  # AND, OR
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Not:
    operand: Expr


@dataclass(frozen=True)
class IsNull:
    operand: Expr
    negated: bool


Expr = Col | Lit | Cmp | Logic | Not | IsNull


@dataclass(frozen=True)
class SelectItem:
    column: str | None  # None means "*"
    alias: str | None = None


@dataclass(frozen=True)
class Select:
    items: tuple[SelectItem, ...]
    source: str
    where: Expr | None
    push: bool
    limit: int | None


@dataclass(frozen=True)
class Show:
    what: str  # STREAMS or TABLES
    extended: bool


@dataclass(frozen=True)
class Describe:
    source: str
    extended: bool


@dataclass(frozen=True)
class Alter:
    kind: str
    source: str
    additions: tuple[tuple[str, str], ...]  # column name, type text


Statement = Select | Show | Describe | Alter


def columns_in(expr: Expr | None) -> set[str]:
    if expr is None or isinstance(expr, Lit):
        return set()
    if isinstance(expr, Col):
        return {expr.name}
    if isinstance(expr, Cmp | Logic):
        return columns_in(expr.left) | columns_in(expr.right)
    return columns_in(expr.operand)
