"""A tiny parser for the statements the sandbox understands.

SELECT items FROM source [WHERE expr] [EMIT CHANGES] [LIMIT n]; SHOW/LIST STREAMS|TABLES
[EXTENDED]; DESCRIBE source [EXTENDED]; ALTER STREAM|TABLE source ADD [COLUMN] name type, ...
WHERE takes comparisons (= != <> < <= > >=), AND, OR, NOT, parentheses, IS [NOT] NULL, and
numeric, 'string', TRUE/FALSE/NULL literals. Pure: text in, syntax tree out.
"""

from __future__ import annotations

import re
from decimal import Decimal

from lakeexportd.sandbox.syntax import (
    Alter,
    Cmp,
    Col,
    Describe,
    Expr,
    IsNull,
    Lit,
    Logic,
    Not,
    Select,
    SelectItem,
    Show,
    Statement,
)


class SqlError(Exception):
    """A statement the sandbox cannot parse or run (ksqlDB answers these with 40001)."""


class UnsupportedStatement(SqlError):
    """A statement kind outside the sandbox's subset (not a query, not a catalog command)."""


_TOKEN = re.compile(
    r"\s*(?:(?P<str>'(?:[^']|'')*')|(?P<qid>`(?:[^`]|``)*`)|(?P<num>\d+(?:\.\d*)?(?:[eE][+-]?\d+)?)"
    r"|(?P<word>[A-Za-z_][A-Za-z0-9_@$]*)|(?P<op><>|!=|<=|>=|->|[=<>(),*;.\[\]+-]))"
)


def split_statements(text: str) -> list[str]:
    """Statements of a request, each with its ``;`` (quotes respected, empty ones dropped)."""
    statements, current, quote = [], [], ""
    for ch in text:
        current.append(ch)
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'`":
            quote = ch
        elif ch == ";":
            statements.append("".join(current).strip())
            current = []
    tail = "".join(current).strip()
    if tail:
        statements.append(tail)
    return [s for s in statements if s.strip(" ;\n\t")]


def tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    stripped = text.rstrip()
    while pos < len(stripped):
        m = _TOKEN.match(stripped, pos)
        if not m or m.end() == pos:
            col = len(stripped[:pos]) + len(stripped[pos:]) - len(stripped[pos:].lstrip()) + 1
            raise SqlError(f"line 1:{col}: Syntax error at or near '{stripped[pos:].strip()[:1]}'")
        kind = m.lastgroup
        assert kind is not None
        value = m.group(kind)
        if kind == "word":
            tokens.append(("word", value.upper()))
        elif kind == "qid":
            tokens.append(("id", value[1:-1].replace("``", "`")))
        elif kind == "str":
            tokens.append(("str", value[1:-1].replace("''", "'")))
        else:
            tokens.append((kind, value))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> tuple[str, str] | None:
        j = self.i + offset
        return self.tokens[j] if j < len(self.tokens) else None

    def is_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "word" and tok[1] in words

    def is_op(self, *ops: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[0] == "op" and tok[1] in ops

    def fail(self) -> SqlError:
        tok = self.peek()
        near = tok[1] if tok else "<EOF>"
        return SqlError(f"line 1:{self.i + 1}: Syntax error at or near '{near}'")

    def word(self, *words: str) -> str:
        if not self.is_word(*words):
            raise self.fail()
        self.i += 1
        return self.tokens[self.i - 1][1]

    def op(self, *ops: str) -> str:
        if not self.is_op(*ops):
            raise self.fail()
        self.i += 1
        return self.tokens[self.i - 1][1]

    def name(self) -> str:
        tok = self.peek()
        if tok is None or tok[0] not in ("word", "id"):
            raise self.fail()
        self.i += 1
        return tok[1]

    def end(self) -> None:
        if self.is_op(";"):
            self.i += 1
        if self.peek() is not None:
            raise self.fail()

    def statement(self) -> Statement:
        if self.is_word("SELECT"):
            return self.select()
        if self.is_word("SHOW", "LIST"):
            self.i += 1
            what = self.word("STREAMS", "TABLES")
            extended = self.is_word("EXTENDED")
            self.i += extended
            self.end()
            return Show(what, extended)
        if self.is_word("DESCRIBE"):
            self.i += 1
            source = self.name()
            extended = self.is_word("EXTENDED")
            self.i += extended
            self.end()
            return Describe(source, extended)
        if self.is_word("ALTER"):
            self.i += 1
            kind = self.word("STREAM", "TABLE")
            source = self.name()
            additions = []
            while True:
                self.word("ADD")
                if self.is_word("COLUMN"):
                    self.i += 1
                column = self.name()
                start = self.i
                while self.peek() is not None and not self.is_op(";") and not (
                    self.is_op(",") and self.peek(1) == ("word", "ADD")
                ):
                    self.i += 1
                type_text = " ".join(
                    f"`{v}`" if k == "id" else v for k, v in self.tokens[start:self.i]
                )
                additions.append((column, type_text.replace("( ", "(").replace(" )", ")")))
                if not self.is_op(","):
                    break
                self.i += 1
            self.end()
            return Alter(kind, source, tuple(additions))
        raise UnsupportedStatement(
            "The sandbox only supports SELECT, SHOW/LIST STREAMS|TABLES, DESCRIBE and "
            "ALTER ... ADD COLUMN statements"
        )

    def select(self) -> Select:
        self.word("SELECT")
        items = [self.select_item()]
        while self.is_op(","):
            self.i += 1
            items.append(self.select_item())
        self.word("FROM")
        source = self.name()
        where = None
        if self.is_word("WHERE"):
            self.i += 1
            where = self.expr()
        push = False
        limit = None
        for _ in range(2):
            if self.is_word("EMIT") and not push:
                self.i += 1
                self.word("CHANGES")
                push = True
            elif self.is_word("LIMIT") and limit is None:
                self.i += 1
                negative = self.is_op("-")
                self.i += negative
                tok = self.peek()
                if tok is None or tok[0] != "num" or not tok[1].isdigit():
                    raise self.fail()
                self.i += 1
                limit = -int(tok[1]) if negative else int(tok[1])
        clause = self.peek()
        if clause is not None and self.is_word("GROUP", "JOIN", "WINDOW", "PARTITION", "HAVING",
                                               "INNER", "LEFT"):
            raise SqlError(f"The sandbox does not support {clause[1]} clauses")
        self.end()
        return Select(tuple(items), source, where, push, limit)

    def select_item(self) -> SelectItem:
        if self.is_op("*"):
            self.i += 1
            return SelectItem(None)
        column = self.name()
        if self.is_op(".") and self.peek(1) == ("op", "*"):
            self.i += 2
            return SelectItem(None)
        if self.is_op("->", "(", "["):
            raise SqlError("The sandbox only supports plain column names in SELECT")
        alias = None
        if self.is_word("AS"):
            self.i += 1
            alias = self.name()
        return SelectItem(column, alias)

    def expr(self) -> Expr:
        left = self.conjunction()
        while self.is_word("OR"):
            self.i += 1
            left = Logic("OR", left, self.conjunction())
        return left

    def conjunction(self) -> Expr:
        left = self.negation()
        while self.is_word("AND"):
            self.i += 1
            left = Logic("AND", left, self.negation())
        return left

    def negation(self) -> Expr:
        if self.is_word("NOT"):
            self.i += 1
            return Not(self.negation())
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.operand()
        if self.is_op("=", "!=", "<>", "<", "<=", ">", ">="):
            op = self.op("=", "!=", "<>", "<", "<=", ">", ">=")
            return Cmp("!=" if op == "<>" else op, left, self.operand())
        if self.is_word("IS"):
            self.i += 1
            negated = self.is_word("NOT")
            self.i += negated
            self.word("NULL")
            return IsNull(left, negated)
        return left

    def operand(self) -> Expr:
        tok = self.peek()
        if tok is None:
            raise self.fail()
        kind, value = tok
        if kind == "op" and value == "(":
            self.i += 1
            inner = self.expr()
            self.op(")")
            return inner
        if kind == "op" and value == "-" and (nxt := self.peek(1)) and nxt[0] == "num":
            self.i += 2
            return Lit(-_number(nxt[1]))
        self.i += 1
        if kind == "num":
            return Lit(_number(value))
        if kind == "str":
            return Lit(value)
        if kind == "word" and value in ("TRUE", "FALSE"):
            return Lit(value == "TRUE")
        if kind == "word" and value == "NULL":
            return Lit(None)
        if kind in ("word", "id"):
            if self.is_op("->", "(", "["):
                raise SqlError("The sandbox only supports plain columns and literals in WHERE")
            return Col(value)
        self.i -= 1
        raise self.fail()


def _number(text: str) -> int | Decimal:
    return int(text) if text.isdigit() else Decimal(text)


def parse(text: str) -> Statement:
    """Parse one statement (with or without its ``;``)."""
    return _Parser(text).statement()
