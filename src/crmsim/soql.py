"""A SOQL subset, parsed and evaluated the way Salesforce does for the statements crmgate sends.

    SELECT field, ... | COUNT() | field, AGG(field) [alias], ... FROM Object
      [WHERE condition]   -- =, !=, <>, <, <=, >, >=, LIKE, IN (...), NOT IN (...), AND, OR,
                          -- NOT, parentheses; 'text' with backslash escapes, numbers, TRUE,
                          -- FALSE, NULL, date and datetime literals
      [GROUP BY field, ...]   -- AGG: COUNT, COUNT_DISTINCT, SUM, AVG, MIN, MAX
      [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], ...]
      [LIMIT n] [OFFSET n]

Keywords and field names are case-insensitive. Errors carry Salesforce's codes: MALFORMED_QUERY
for syntax, INVALID_FIELD for an unknown field, INVALID_TYPE for an unknown object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crmsim import query


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _malformed(message: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", message)


_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}

AGGREGATES: dict[str, Callable[[list[Any]], Any]] = {
    "COUNT": len,
    "COUNT_DISTINCT": lambda values: len(set(values)),
    "SUM": sum,
    "AVG": lambda values: sum(values) / len(values),
    "MIN": min,
    "MAX": max,
}

Predicate = Callable[[Mapping[str, Any]], bool]


@dataclass
class Query:
    object: str
    fields: list[str]  # as written; [] for COUNT()
    count: bool
    where: Predicate | None
    order: list[tuple[str, bool, bool]] = field(default_factory=list)  # field, desc, nulls_last
    limit: int | None = None
    offset: int = 0
    aggregates: list[tuple[str, str, str]] = field(default_factory=list)  # function, field, alias
    group_by: list[str] = field(default_factory=list)


class _Soql(query.Select):
    lexer = query.Lexer(
        lambda text, at: _malformed(f"unexpected token: '{text[at]}'"),
        string=query.STRING_BACKSLASH,
        datetime=query.DATETIME,
        date=query.DATE,
        number=query.NUMBER,
        op=query.COMPARISON,
        punct=query.PUNCT,
        word=query.PATH,
    )
    functions = frozenset(AGGREGATES)
    aliases = True
    count_rows = True
    grouping = True
    nulls = True  # Salesforce: NULLS FIRST for ASC, NULLS LAST for DESC

    def fail(self, found: query.Token | None, wanted: str) -> SoqlError:
        return _malformed(f"expecting {wanted}, found '{found.text if found else '<EOF>'}'")

    def unfinished(self, name: str, wanted: str) -> SoqlError:
        return _malformed(f"expecting {wanted.upper()} after NOT")

    def unclosed(self, function: str, argument: str) -> SoqlError:
        return _malformed(f"expecting ')' after {function}({argument}")

    def invalid(self, token: query.Token, message: str | None) -> SoqlError:
        return _malformed(message or f"unexpected token: '{token.text}'")

    def ungrouped(self, name: str) -> SoqlError:
        return _malformed(f"Field must be grouped or aggregated: {name}")

    def trailing(self, token: query.Token) -> SoqlError:
        return self.invalid(token, None)

    def escape(self, char: str) -> str:
        """The character a backslash escape stands for (\\n, \\', \\\\, ...); anything else is
        refused, as Salesforce does."""
        if char not in _ESCAPES:
            raise _malformed(f"invalid escape sequence: \\{char}")
        return _ESCAPES[char]

    def pattern(self) -> Any:
        token = self.cursor.peek()
        if token is None or token.kind != "string":
            raise _malformed("LIKE takes a text value")
        self.cursor.at += 1
        # In LIKE, \% and \_ are the characters themselves.
        return query.like(
            token.text[1:-1], escape=lambda c: c if c in ("%", "_") else self.escape(c)
        )

    def integer(self, clause: str) -> int:
        value = self.value()
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _malformed(f"{clause} takes a non-negative integer")
        if clause == "OFFSET" and value > 2000:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
        return value


def parse(text: str) -> Query:
    s = _Soql(text).parse()
    where = None if s.where is None else _predicate(s.where)
    return Query(
        s.source, s.columns, s.count, where, s.order, s.limit, s.offset, s.calls, s.group_by
    )


def _predicate(node: Any) -> Predicate:
    def test(leaf: query.Comparison, record: Mapping[str, Any]) -> bool:
        actual = record.get(leaf.name.lower())
        # LIKE matches text fields only
        return (leaf.op != "like" or isinstance(actual, str)) and leaf.holds(actual)

    return lambda record: query.evaluate(node, lambda leaf: test(leaf, record))


def aggregate(function: str, values: list[Any]) -> Any:
    """One aggregate function over a group's values, nulls ignored as in SOQL: over no values
    the counts are 0 and the others null."""
    present = [v for v in values if v is not None]
    return AGGREGATES[function](present) if present or function.startswith("COUNT") else None
