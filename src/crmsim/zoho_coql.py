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
from typing import Any, ClassVar

from aiohttp import web

from crmsim import query
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


_TOO_MANY = {
    "columns": "select column limit exceeded",
    "comparisons": "criteria limit exceeded",
    "values": "in takes at most 50 values",
}


@dataclass
class Query:
    columns: list[str]
    module: str
    where: Any = None  # a query.Comparison, or a query.Junction of two
    order: list[tuple[str, bool]] = field(default_factory=list)  # (field, descending)
    limit: int = 200
    offset: int = 0
    count: str | None = None  # COUNT(<field>)


class _Coql(query.Select):
    lexer = query.Lexer(
        lambda text, at: _syntax(text[at : at + 20]),
        string=query.STRING_DOUBLED,
        number=query.NUMBER,
        op=r">=|<=|!=|=|>|<",
        punct=query.PUNCT,
        word=r"\$?[A-Za-z_][A-Za-z0-9_.$]*",
    )
    functions = frozenset({"COUNT"})
    negation = False
    bracketed = True  # ((A and B) and C); A and B and C is a SYNTAX_ERROR
    null_tests = True
    not_like = True
    limit_pair = True
    offset_alone = False
    kinds = frozenset({"string", "number", "boolean"})
    limits: ClassVar[dict[str, int]] = {"columns": 50, "comparisons": MAX_CRITERIA, "values": 50}

    def fail(self, found: query.Token | None, wanted: str) -> CoqlError:
        # Zoho names what is missing at the end only for a value
        if found is None and wanted == "a value":
            return CoqlError("SYNTAX_ERROR", "a value is expected", {"near": "end of query"})
        return _syntax(found.text if found else "end of query")

    def expected(self, keyword: str, clause: str) -> CoqlError:
        return CoqlError("SYNTAX_ERROR", f"{keyword} is expected", {"clause": clause})

    def unfinished(self, name: str, wanted: str) -> CoqlError:
        return CoqlError("SYNTAX_ERROR", f"{wanted} is expected", {"near": name})

    def invalid(self, token: query.Token, message: str | None) -> CoqlError:
        return CoqlError("SYNTAX_ERROR", "invalid value", {"near": token.text})

    def too_many(self, what: str, limit: int) -> CoqlError:
        return CoqlError("LIMIT_EXCEEDED", _TOO_MANY[what], {"limit": limit})

    def unbracketed(self) -> CoqlError:
        message = "more than two criteria must be enclosed in brackets"
        return CoqlError("SYNTAX_ERROR", message, {"clause": "where"})

    def pattern(self) -> Any:
        return query.like(str(self.value()), one=False)  # "_" is an ordinary character


def parse(text: str) -> Query:
    s = _Coql(text).parse()
    limit = 200 if s.limit is None else s.limit
    if limit > MAX_LIMIT or limit < 1:
        raise CoqlError("LIMIT_EXCEEDED", "limit exceeded", {"limit": MAX_LIMIT})
    if s.offset + limit > MAX_REACH:
        raise CoqlError("LIMIT_EXCEEDED", "offset limit exceeded", {"limit": MAX_REACH})
    order = [(name, descending) for name, descending, _ in s.order]
    count = s.calls[-1][1] if s.calls else None
    return Query(s.columns, s.source, s.where, order, limit, s.offset, count)


def names(node: Any) -> list[str]:
    """Every field a where clause compares."""
    return [leaf.name for leaf in query.leaves(node)]


def matches(node: Any, value_of: Callable[[str], Any]) -> bool:
    """Whether a record satisfies ``node``; ``value_of(field)`` gives its comparable value (a
    lookup's id; None for an empty one)."""
    return node is None or query.evaluate(node, lambda leaf: leaf.holds(value_of(leaf.name)))
