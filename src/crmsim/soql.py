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

from crmsim import query, records


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _malformed(message: str) -> SoqlError:
    return SoqlError("MALFORMED_QUERY", message)


_LEXER = query.Lexer(
    lambda text, at: _malformed(f"unexpected token: '{text[at]}'"),
    string=query.STRING_BACKSLASH,
    datetime=query.DATETIME,
    date=query.DATE,
    number=query.NUMBER,
    op=query.COMPARISON,
    punct=query.PUNCT,
    word=query.PATH,
)


def _escape(char: str) -> str:
    """The character a backslash escape stands for (\\n, \\', \\\\, ...); anything else is
    refused, as Salesforce does."""
    if char in query.SOQL_ESCAPES or char == "\\":
        return query.SOQL_ESCAPES.get(char, char)
    raise _malformed(f"invalid escape sequence: \\{char}")


def _like_escape(char: str) -> str:
    """In LIKE, \\% and \\_ are the characters themselves."""
    return char if char in ("%", "_") else _escape(char)


@dataclass(frozen=True)
class Condition:
    """``name op value``, ``name [NOT] IN (values)`` or ``name LIKE pattern``."""

    name: str
    op: str  # a comparison operator, IN, NOT IN or LIKE
    value: Any

    def test(self, record: Mapping[str, Any]) -> bool:
        actual = record.get(self.name.lower())
        if self.op in ("IN", "NOT IN"):
            found = any(records.test("=", actual, v) for v in self.value)
            return found == (self.op == "IN")
        if self.op == "LIKE":
            return isinstance(actual, str) and self.value.fullmatch(actual) is not None
        return records.test(self.op, actual, self.value)


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


def _cursor(text: str) -> query.Cursor:
    def fail(found: query.Token | None, wanted: str) -> SoqlError:
        return _malformed(f"expecting {wanted}, found '{found.text if found else '<EOF>'}'")

    return query.Cursor(_LEXER.tokens(text), fail)


def _name(cursor: query.Cursor) -> str:
    return cursor.take("word", "a field").text


def _value(cursor: query.Cursor) -> Any:
    token = cursor.take(wanted="a value")
    found = query.literal(token, _malformed, escape=_escape)
    if found is None or found.kind == "guid":
        raise _malformed(f"unexpected token: '{token.text}'")
    return found.value


def parse(text: str) -> Query:
    cursor = _cursor(text)
    cursor.expect_word("SELECT")
    fields: list[str] = []
    aggregates: list[tuple[str, str, str]] = []
    count = [t.text.upper() if t else "" for t in map(cursor.peek, range(3))] == ["COUNT", "(", ")"]
    cursor.at += 3 if count else 0
    while not count:
        name = _name(cursor)
        if name.upper() in AGGREGATES and cursor.punct("("):
            argument = _name(cursor)
            if not cursor.punct(")"):
                raise _malformed(f"expecting ')' after {name}({argument}")
            alias = f"expr{len(aggregates)}"
            token = cursor.peek()
            if token is not None and token.kind == "word" and not cursor.is_word("FROM"):
                alias = _name(cursor)
            aggregates.append((name.upper(), argument, alias))
        else:
            fields.append(name)
        if not cursor.punct(","):
            break
    cursor.expect_word("FROM")
    obj = _name(cursor)
    where = _where(cursor) if cursor.word("WHERE") else None
    parsed = Query(obj, fields, count, where, aggregates=aggregates)
    if cursor.word("GROUP"):
        cursor.expect_word("BY")
        parsed.group_by = cursor.listed(lambda: _name(cursor))
    if aggregates or parsed.group_by:
        grouped = {name.lower() for name in parsed.group_by}
        for name in fields:
            if name.lower() not in grouped:
                raise _malformed(f"Field must be grouped or aggregated: {name}")
    if cursor.word("ORDER"):
        cursor.expect_word("BY")
        parsed.order = cursor.listed(lambda: _ordering(cursor))
    if cursor.word("LIMIT"):
        parsed.limit = _integer(cursor, "LIMIT")
    if cursor.word("OFFSET"):
        parsed.offset = _integer(cursor, "OFFSET")
        if parsed.offset > 2000:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
    if cursor.peek() is not None:
        raise _malformed(f"unexpected token: '{cursor.peek().text}'")  # type: ignore[union-attr]
    return parsed


def _ordering(cursor: query.Cursor) -> tuple[str, bool, bool]:
    name = _name(cursor)
    descending = cursor.word("DESC")
    if not descending:
        cursor.word("ASC")
    nulls_last = descending  # Salesforce: NULLS FIRST for ASC, NULLS LAST for DESC
    if cursor.word("NULLS"):
        nulls_last = cursor.word("LAST")
        if not nulls_last:
            cursor.expect_word("FIRST")
    return (name, descending, nulls_last)


AGGREGATES: dict[str, Callable[[list[Any]], Any]] = {
    "COUNT": len,
    "COUNT_DISTINCT": lambda values: len(set(values)),
    "SUM": sum,
    "AVG": lambda values: sum(values) / len(values),
    "MIN": min,
    "MAX": max,
}


def aggregate(function: str, values: list[Any]) -> Any:
    """One aggregate function over a group's values, nulls ignored as in SOQL: over no values
    the counts are 0 and the others null."""
    present = [v for v in values if v is not None]
    return AGGREGATES[function](present) if present or function.startswith("COUNT") else None


def _integer(cursor: query.Cursor, clause: str) -> int:
    value = _value(cursor)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _malformed(f"{clause} takes a non-negative integer")
    return value


def _where(cursor: query.Cursor) -> Predicate:
    node = query.boolean(cursor, lambda: _condition(cursor))
    return lambda record: query.evaluate(node, lambda leaf: leaf.test(record))


def _condition(cursor: query.Cursor) -> Condition:
    name = _name(cursor)
    negate = cursor.word("NOT")
    if cursor.word("IN"):
        cursor.expect_punct("(")
        values = cursor.listed(lambda: _value(cursor))
        cursor.expect_punct(")")
        return Condition(name, "NOT IN" if negate else "IN", values)
    if negate:
        raise _malformed("expecting IN after NOT")
    if cursor.word("LIKE"):
        token = cursor.peek()
        if token is None or token.kind != "string":
            raise _malformed("LIKE takes a text value")
        cursor.at += 1
        pattern = query.like(token.text[1:-1], escape=_like_escape)
        return Condition(name, "LIKE", pattern)
    op = cursor.take("op", f"an operator after {name}").text
    return Condition(name, op, _value(cursor))
