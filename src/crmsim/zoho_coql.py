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

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

MAX_LIMIT = 2000
MAX_REACH = 100_000  # offset + limit
MAX_CRITERIA = 25


class CoqlError(Exception):
    """A query Zoho refuses: ``code`` (SYNTAX_ERROR, LIMIT_EXCEEDED, INVALID_QUERY, ...)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details or {}


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op>>=|<=|!=|=|>|<|\(|\)|,)
      | (?P<word>\$?[A-Za-z_][A-Za-z0-9_.$]*)
      | (?P<bad>\S)
    )""",
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokens(text: str) -> list[Token]:
    found: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            break
        kind = match.lastgroup or "bad"
        if kind == "bad":
            raise CoqlError(
                "SYNTAX_ERROR",
                "error occured while parsing the query",
                {"near": text[match.start(kind) : match.start(kind) + 20]},
            )
        found.append(Token(kind, match[kind]))
        position = match.end()
    return found


def _unquote(text: str) -> str:
    return text[1:-1].replace("''", "'")


@dataclass
class Compare:
    field: str
    op: str  # = != > >= < <= like notlike in notin null notnull
    value: Any = None


@dataclass
class Group:
    op: str  # and | or
    parts: list[Any]


@dataclass
class Query:
    columns: list[str]
    module: str
    where: Any = None
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    limit: int = 200
    offset: int = 0
    count: str | None = None  # COUNT(<field>)


class _Parser:
    def __init__(self, text: str) -> None:
        self.items = tokens(text)
        self.at = 0
        self.criteria = 0

    def peek(self, offset: int = 0) -> Token | None:
        index = self.at + offset
        return self.items[index] if index < len(self.items) else None

    def word(self, *expected: str) -> bool:
        token = self.peek()
        if token and token.kind == "word" and token.text.lower() in expected:
            self.at += 1
            return True
        return False

    def take(self, kind: str, text: str | None = None) -> Token:
        token = self.peek()
        if token is None or token.kind != kind or (text is not None and token.text != text):
            near = token.text if token else "end of query"
            raise CoqlError("SYNTAX_ERROR", "error occured while parsing the query", {"near": near})
        self.at += 1
        return token

    def query(self) -> Query:
        if not self.word("select"):
            raise CoqlError("SYNTAX_ERROR", "select is expected", {"clause": "select"})
        columns: list[str] = []
        count: str | None = None
        while True:
            name = self.take("word").text
            if name.lower() == "count" and self.peek() and self.peek().text == "(":  # type: ignore[union-attr]
                self.take("op", "(")
                count = self.take("word").text
                self.take("op", ")")
            else:
                columns.append(name)
            if self.peek() and self.peek().text == ",":  # type: ignore[union-attr]
                self.at += 1
                continue
            break
        if len(columns) > 50:
            raise CoqlError("LIMIT_EXCEEDED", "select column limit exceeded", {"limit": 50})
        if not self.word("from"):
            raise CoqlError("SYNTAX_ERROR", "from is expected", {"clause": "from"})
        module = self.take("word").text
        query = Query(columns, module, count=count)
        if self.word("where"):
            query.where = self.expression()
            if self.criteria > MAX_CRITERIA:
                raise CoqlError(
                    "LIMIT_EXCEEDED", "criteria limit exceeded", {"limit": MAX_CRITERIA}
                )
        if self.word("order"):
            if not self.word("by"):
                raise CoqlError("SYNTAX_ERROR", "by is expected", {"clause": "order by"})
            while True:
                name = self.take("word").text
                descending = False
                if self.word("desc"):
                    descending = True
                else:
                    self.word("asc")
                query.order.append((name, descending))
                if self.peek() and self.peek().text == ",":  # type: ignore[union-attr]
                    self.at += 1
                    continue
                break
        if self.word("limit"):
            first = int(self.take("number").text)
            if self.peek() and self.peek().text == ",":  # type: ignore[union-attr]
                self.at += 1
                query.offset, query.limit = first, int(self.take("number").text)
            else:
                query.limit = first
                if self.word("offset"):
                    query.offset = int(self.take("number").text)
        if self.peek() is not None:
            raise CoqlError(
                "SYNTAX_ERROR",
                "error occured while parsing the query",
                {"near": self.peek().text},  # type: ignore[union-attr]
            )
        if query.limit > MAX_LIMIT or query.limit < 1:
            raise CoqlError("LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_LIMIT})
        if query.offset + query.limit > MAX_REACH:
            raise CoqlError("LIMIT_EXCEEDED", "offset limit exceeded", {"limit": MAX_REACH})
        return query

    def expression(self) -> Any:
        """A criterion, or two joined by and/or; a third needs brackets (Zoho's rule)."""
        left = self.operand()
        joiner = self.peek()
        if joiner is None or joiner.kind != "word" or joiner.text.lower() not in ("and", "or"):
            return left
        self.at += 1
        right = self.operand()
        following = self.peek()
        if following and following.kind == "word" and following.text.lower() in ("and", "or"):
            raise CoqlError(
                "SYNTAX_ERROR",
                "more than two criteria must be enclosed in brackets",
                {"clause": "where"},
            )
        return Group(joiner.text.lower(), [left, right])

    def operand(self) -> Any:
        token = self.peek()
        if token is not None and token.text == "(":
            self.at += 1
            inner = self.expression()
            self.take("op", ")")
            return inner
        return self.criterion()

    def criterion(self) -> Compare:
        self.criteria += 1
        name = self.take("word").text
        if self.word("is"):
            negated = self.word("not")
            if not self.word("null"):
                raise CoqlError("SYNTAX_ERROR", "null is expected", {"near": name})
            return Compare(name, "notnull" if negated else "null")
        if self.word("not"):
            if self.word("like"):
                return Compare(name, "notlike", self.value())
            if self.word("in"):
                return Compare(name, "notin", self.values())
            raise CoqlError("SYNTAX_ERROR", "like or in is expected", {"near": name})
        if self.word("like"):
            return Compare(name, "like", self.value())
        if self.word("in"):
            return Compare(name, "in", self.values())
        op = self.take("op").text
        if op not in ("=", "!=", ">", ">=", "<", "<="):
            raise CoqlError("SYNTAX_ERROR", "invalid operator", {"near": op})
        return Compare(name, op, self.value())

    def values(self) -> list[Any]:
        self.take("op", "(")
        found = [self.value()]
        while self.peek() and self.peek().text == ",":  # type: ignore[union-attr]
            self.at += 1
            found.append(self.value())
        self.take("op", ")")
        if len(found) > 50:
            raise CoqlError("LIMIT_EXCEEDED", "in takes at most 50 values", {"limit": 50})
        return found

    def value(self) -> Any:
        token = self.peek()
        if token is None:
            raise CoqlError("SYNTAX_ERROR", "a value is expected", {"near": "end of query"})
        self.at += 1
        if token.kind == "string":
            return _unquote(token.text)
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "word" and token.text.lower() in ("true", "false"):
            return token.text.lower() == "true"
        raise CoqlError("SYNTAX_ERROR", "invalid value", {"near": token.text})


def parse(text: str) -> Query:
    return _Parser(text).query()


def names(node: Any) -> list[str]:
    """Every field a where clause compares."""
    if node is None:
        return []
    if isinstance(node, Compare):
        return [node.field]
    return [name for part in node.parts for name in names(part)]


def matches(node: Any, value_of: Callable[[str], Any], compare: Callable[[Any, Any], int]) -> bool:
    """Whether a record satisfies ``node``; ``value_of(field)`` gives its comparable value (a
    lookup's id), ``compare`` orders two values of a field."""
    if node is None:
        return True
    if isinstance(node, Group):
        results = (matches(part, value_of, compare) for part in node.parts)
        return all(results) if node.op == "and" else any(results)
    value = value_of(node.field)
    if node.op == "null":
        return value in (None, "", [])
    if node.op == "notnull":
        return value not in (None, "", [])
    if value in (None, ""):
        return node.op in ("!=", "notlike", "notin")
    if node.op in ("like", "notlike"):
        pattern = "^" + ".*".join(re.escape(part) for part in str(node.value).split("%")) + "$"
        found = re.match(pattern, str(value), re.IGNORECASE | re.DOTALL) is not None
        return found if node.op == "like" else not found
    if node.op in ("in", "notin"):
        found = any(compare(value, item) == 0 for item in node.value)
        return found if node.op == "in" else not found
    order = compare(value, node.value)
    return {
        "=": order == 0,
        "!=": order != 0,
        ">": order > 0,
        ">=": order >= 0,
        "<": order < 0,
        "<=": order <= 0,
    }[node.op]
