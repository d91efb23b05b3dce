"""The subset of Zoho CRM's COQL (CRM Object Query Language) the simulator answers, as Zoho
documents it for API v8:

    select <field>[, <field>...] | COUNT(<field>) from <Module>
      [where <criteria>] [order by <field> [asc|desc][, ...]]
      [limit <n> [offset <m>] | limit <m>, <n>]

Criteria compare a field with a value (``=``, ``!=``, ``>``, ``>=``, ``<``, ``<=``, ``like``,
``not like``, ``in (...)``, ``not in (...)``, ``is null``, ``is not null``). Text values are in
single quotes, where a quote is written twice (``'O''Hara'``, as Zoho's COQL FAQ says) and a
backslash is an ordinary character; numbers, ``true`` and ``false`` are bare. As in Zoho, more
than two criteria must be grouped in pairs with brackets: ``((A and B) and C)``;
``A and B and C`` is a SYNTAX_ERROR.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from crmsim import query, records
from crmsim.guard import Refusal

MAX_LIMIT = 2000
MAX_REACH = 100_000  # offset + limit
MAX_CRITERIA = 25


class Refused(Refusal):
    """A Zoho error answer: ``{"code", "details", "message", "status": "error"}``."""

    def __init__(
        self, status: int, code: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    def body(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "details": self.details,
            "message": self.message,
            "status": "error",
        }

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


class CoqlError(Refused):
    """A query Zoho refuses: ``code`` (SYNTAX_ERROR, LIMIT_EXCEEDED, INVALID_QUERY, ...)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(400, code, message, details)


def _syntax(near: str) -> CoqlError:
    return CoqlError("SYNTAX_ERROR", "error occured while parsing the query", {"near": near})


_LEXER = query.Lexer(
    lambda text, at: _syntax(text[at : at + 20]),
    string=query.STRING_DOUBLED,
    number=query.NUMBER,
    op=r">=|<=|!=|=|>|<",
    punct=query.PUNCT,
    word=r"\$?[A-Za-z_][A-Za-z0-9_.$]*",
)


@dataclass
class Compare:
    field: str
    op: str  # = != > >= < <= like notlike in notin null notnull
    value: Any = None


@dataclass
class Query:
    columns: list[str]
    module: str
    where: Any = None  # a Compare, or a query.Junction of two
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    limit: int = 200
    offset: int = 0
    count: str | None = None  # COUNT(<field>)


class _Parser:
    def __init__(self, text: str) -> None:
        def fail(found: query.Token | None, wanted: str) -> CoqlError:
            return _syntax(found.text if found else "end of query")

        self.cursor = query.Cursor(_LEXER.tokens(text), fail)
        self.criteria = 0

    def name(self) -> str:
        return self.cursor.take("word").text

    def number(self) -> int:
        return int(self.cursor.take("number").text)

    def query(self) -> Query:
        cursor = self.cursor
        if not cursor.word("select"):
            raise CoqlError("SYNTAX_ERROR", "select is expected", {"clause": "select"})
        columns: list[str] = []
        count: str | None = None
        while True:
            name = self.name()
            if name.lower() == "count" and cursor.punct("("):
                count = self.name()
                cursor.expect_punct(")")
            else:
                columns.append(name)
            if not cursor.punct(","):
                break
        if len(columns) > 50:
            raise CoqlError("LIMIT_EXCEEDED", "select column limit exceeded", {"limit": 50})
        if not cursor.word("from"):
            raise CoqlError("SYNTAX_ERROR", "from is expected", {"clause": "from"})
        parsed = Query(columns, self.name(), count=count)
        if cursor.word("where"):
            more = CoqlError(
                "SYNTAX_ERROR",
                "more than two criteria must be enclosed in brackets",
                {"clause": "where"},
            )
            parsed.where = query.boolean(
                cursor, self.criterion, negation=False, paired=lambda: more
            )
            if self.criteria > MAX_CRITERIA:
                raise CoqlError(
                    "LIMIT_EXCEEDED", "criteria limit exceeded", {"limit": MAX_CRITERIA}
                )
        if cursor.word("order"):
            if not cursor.word("by"):
                raise CoqlError("SYNTAX_ERROR", "by is expected", {"clause": "order by"})
            parsed.order = cursor.listed(self.ordering)
        if cursor.word("limit"):
            first = self.number()
            if cursor.punct(","):
                parsed.offset, parsed.limit = first, self.number()
            else:
                parsed.limit = first
                if cursor.word("offset"):
                    parsed.offset = self.number()
        cursor.end()
        if parsed.limit > MAX_LIMIT or parsed.limit < 1:
            raise CoqlError("LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_LIMIT})
        if parsed.offset + parsed.limit > MAX_REACH:
            raise CoqlError("LIMIT_EXCEEDED", "offset limit exceeded", {"limit": MAX_REACH})
        return parsed

    def ordering(self) -> tuple[str, bool]:
        name = self.name()
        descending = self.cursor.word("desc")
        if not descending:
            self.cursor.word("asc")
        return (name, descending)

    def criterion(self) -> Compare:
        cursor = self.cursor
        self.criteria += 1
        name = self.name()
        if cursor.word("is"):
            negated = cursor.word("not")
            if not cursor.word("null"):
                raise CoqlError("SYNTAX_ERROR", "null is expected", {"near": name})
            return Compare(name, "notnull" if negated else "null")
        negated = cursor.word("not")
        if cursor.word("like"):
            return Compare(name, "notlike" if negated else "like", self.value())
        if cursor.word("in"):
            return Compare(name, "notin" if negated else "in", self.values())
        if negated:
            raise CoqlError("SYNTAX_ERROR", "like or in is expected", {"near": name})
        op = cursor.take("op").text
        return Compare(name, op, self.value())

    def values(self) -> list[Any]:
        self.cursor.expect_punct("(")
        found = self.cursor.listed(self.value)
        self.cursor.expect_punct(")")
        if len(found) > 50:
            raise CoqlError("LIMIT_EXCEEDED", "in takes at most 50 values", {"limit": 50})
        return found

    def value(self) -> Any:
        token = self.cursor.peek()
        if token is None:
            raise CoqlError("SYNTAX_ERROR", "a value is expected", {"near": "end of query"})
        self.cursor.at += 1
        found = query.literal(token, lambda message: _syntax(token.text))
        if found is None or found.kind not in ("string", "number", "boolean"):
            raise CoqlError("SYNTAX_ERROR", "invalid value", {"near": token.text})
        return found.value


def parse(text: str) -> Query:
    return _Parser(text).query()


def names(node: Any) -> list[str]:
    """Every field a where clause compares."""
    return [leaf.field for leaf in query.leaves(node)]


def matches(node: Any, value_of: Callable[[str], Any]) -> bool:
    """Whether a record satisfies ``node``; ``value_of(field)`` gives its comparable value (a
    lookup's id; None for an empty one)."""
    if node is None:
        return True
    return query.evaluate(node, lambda leaf: _holds(leaf, value_of(leaf.field)))


def _holds(leaf: Compare, value: Any) -> bool:
    if leaf.op in ("null", "notnull"):
        return (value is None) == (leaf.op == "null")
    if value is None:
        return leaf.op in ("!=", "notlike", "notin")
    if leaf.op in ("like", "notlike"):
        found = query.like(str(leaf.value), one=False).fullmatch(str(value)) is not None
        return found == (leaf.op == "like")
    if leaf.op in ("in", "notin"):
        found = any(records.test("=", value, item) for item in leaf.value)
        return found == (leaf.op == "in")
    return records.test(leaf.op, value, leaf.value)
