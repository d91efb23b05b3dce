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

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any


class SoqlError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*')
      | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
      | (?P<date>\d{4}-\d{2}-\d{2})
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op><=|>=|!=|<>|=|<|>)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


def _like_regex(literal: str) -> re.Pattern[str]:
    """LIKE: % and _ are wildcards; a backslash makes the next character (\\% and \\_ too)
    literal."""
    body, parts, index = literal[1:-1], ["^"], 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            index += 1
            escaped = body[index] if index < len(body) else ""
            if escaped in ("%", "_"):
                parts.append(re.escape(escaped))
            elif escaped in _ESCAPES:
                parts.append(re.escape(_ESCAPES[escaped]))
            else:
                raise SoqlError("MALFORMED_QUERY", f"invalid escape sequence: \\{escaped}")
        elif char == "%":
            parts.append(".*")
        elif char == "_":
            parts.append(".")
        else:
            parts.append(re.escape(char))
        index += 1
    parts.append("$")
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


@dataclass
class Token:
    kind: str
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            break
        kind = match.lastgroup or "bad"
        if kind == "bad":
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{match[kind]}'")
        tokens.append(Token(kind, match[kind], match.start(kind)))
        position = match.end()
    return tokens


def _unescape(literal: str) -> str:
    body, out, index = literal[1:-1], [], 0
    while index < len(body):
        char = body[index]
        if char == "\\":
            index += 1
            escaped = body[index] if index < len(body) else ""
            if escaped not in _ESCAPES:
                raise SoqlError("MALFORMED_QUERY", f"invalid escape sequence: \\{escaped}")
            out.append(_ESCAPES[escaped])
        else:
            out.append(char)
        index += 1
    return "".join(out)


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


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.index = 0

    def peek(self, offset: int = 0) -> Token | None:
        position = self.index + offset
        return self.tokens[position] if position < len(self.tokens) else None

    def word(self, *expected: str) -> bool:
        token = self.peek()
        if token and token.kind == "word" and token.text.upper() in expected:
            self.index += 1
            return True
        return False

    def expect_word(self, expected: str) -> None:
        if not self.word(expected):
            found = self.peek()
            raise SoqlError(
                "MALFORMED_QUERY",
                f"expecting '{expected}', found '{found.text if found else '<EOF>'}'",
            )

    def punct(self, char: str) -> bool:
        token = self.peek()
        if token and token.kind == "punct" and token.text == char:
            self.index += 1
            return True
        return False

    def field_name(self) -> str:
        token = self.peek()
        if token is None or token.kind != "word":
            raise SoqlError(
                "MALFORMED_QUERY", f"expecting a field, found '{token.text if token else '<EOF>'}'"
            )
        self.index += 1
        return token.text

    def value(self) -> Any:
        token = self.peek()
        if token is None:
            raise SoqlError("MALFORMED_QUERY", "expecting a value, found '<EOF>'")
        self.index += 1
        if token.kind == "string":
            return _unescape(token.text)
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "datetime":
            return datetime.fromisoformat(token.text.replace("Z", "+00:00"))
        if token.kind == "date":
            return date.fromisoformat(token.text)
        if token.kind == "word" and token.text.upper() in ("TRUE", "FALSE"):
            return token.text.upper() == "TRUE"
        if token.kind == "word" and token.text.upper() == "NULL":
            return None
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{token.text}'")


def parse(text: str) -> Query:
    parser = _Parser(text)
    parser.expect_word("SELECT")
    fields: list[str] = []
    count = False
    opening = [parser.peek(i) for i in range(3)]
    if [t.text.upper() if t else "" for t in opening] == ["COUNT", "(", ")"]:
        parser.index += 3
        count = True
    aggregates: list[tuple[str, str, str]] = []
    if not count:
        while True:
            name = parser.field_name()
            if name.upper() in AGGREGATES and parser.punct("("):
                argument = parser.field_name()
                if not parser.punct(")"):
                    raise SoqlError("MALFORMED_QUERY", f"expecting ')' after {name}({argument}")
                alias = f"expr{len(aggregates)}"
                following = parser.peek()
                if following and following.kind == "word" and following.text.upper() != "FROM":
                    alias = parser.field_name()
                aggregates.append((name.upper(), argument, alias))
            else:
                fields.append(name)
            if not parser.punct(","):
                break
    parser.expect_word("FROM")
    obj = parser.field_name()
    where = _condition(parser) if parser.word("WHERE") else None
    query = Query(obj, fields, count, where, aggregates=aggregates)
    if parser.word("GROUP"):
        parser.expect_word("BY")
        query.group_by.append(parser.field_name())
        while parser.punct(","):
            query.group_by.append(parser.field_name())
    if aggregates or query.group_by:
        grouped = {name.lower() for name in query.group_by}
        for name in fields:
            if name.lower() not in grouped:
                raise SoqlError("MALFORMED_QUERY", f"Field must be grouped or aggregated: {name}")
    if parser.word("ORDER"):
        parser.expect_word("BY")
        while True:
            name = parser.field_name()
            descending = parser.word("DESC")
            if not descending:
                parser.word("ASC")
            nulls_last = descending  # Salesforce: NULLS FIRST for ASC, NULLS LAST for DESC
            if parser.word("NULLS"):
                if parser.word("LAST"):
                    nulls_last = True
                else:
                    parser.expect_word("FIRST")
                    nulls_last = False
            query.order.append((name, descending, nulls_last))
            if not parser.punct(","):
                break
    if parser.word("LIMIT"):
        query.limit = _integer(parser, "LIMIT")
    if parser.word("OFFSET"):
        query.offset = _integer(parser, "OFFSET")
        if query.offset > 2000:
            raise SoqlError("NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000")
    leftover = parser.peek()
    if leftover is not None:
        raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{leftover.text}'")
    return query


AGGREGATES = frozenset({"COUNT", "COUNT_DISTINCT", "SUM", "AVG", "MIN", "MAX"})


def aggregate(function: str, values: list[Any]) -> Any:
    """One aggregate function over the values of a group (nulls ignored, as in SOQL)."""
    present = [v for v in values if v is not None]
    if function == "COUNT":
        return len(present)
    if function == "COUNT_DISTINCT":
        return len(set(present))
    if not present:
        return None
    if function == "SUM":
        return sum(present)
    if function == "AVG":
        return sum(present) / len(present)
    return min(present) if function == "MIN" else max(present)


def _integer(parser: _Parser, clause: str) -> int:
    value = parser.value()
    if not isinstance(value, int) or value < 0:
        raise SoqlError("MALFORMED_QUERY", f"{clause} takes a non-negative integer")
    return value


def _condition(parser: _Parser) -> Predicate:
    left = _conjunction(parser)
    while parser.word("OR"):
        right = _conjunction(parser)
        left = (lambda a, b: lambda r: a(r) or b(r))(left, right)
    return left


def _conjunction(parser: _Parser) -> Predicate:
    left = _factor(parser)
    while parser.word("AND"):
        right = _factor(parser)
        left = (lambda a, b: lambda r: a(r) and b(r))(left, right)
    return left


def _factor(parser: _Parser) -> Predicate:
    if parser.word("NOT"):
        inner = _factor(parser)
        return lambda r: not inner(r)
    if parser.punct("("):
        inner = _condition(parser)
        if not parser.punct(")"):
            raise SoqlError("MALFORMED_QUERY", "expecting ')'")
        return inner
    name = parser.field_name()
    negate = parser.word("NOT")
    if parser.word("IN"):
        if not parser.punct("("):
            raise SoqlError("MALFORMED_QUERY", "expecting '(' after IN")
        values = [parser.value()]
        while parser.punct(","):
            values.append(parser.value())
        if not parser.punct(")"):
            raise SoqlError("MALFORMED_QUERY", "expecting ')'")
        return lambda r: (_get(r, name) in values) != negate
    if negate:
        raise SoqlError("MALFORMED_QUERY", "expecting IN after NOT")
    if parser.word("LIKE"):
        token = parser.peek()
        if token is None or token.kind != "string":
            raise SoqlError("MALFORMED_QUERY", "LIKE takes a text value")
        parser.index += 1
        regex = _like_regex(token.text)
        return lambda r: isinstance(_get(r, name), str) and bool(regex.match(_get(r, name)))
    token = parser.peek()
    if token is None or token.kind != "op":
        raise SoqlError("MALFORMED_QUERY", f"expecting an operator after {name}")
    parser.index += 1
    value = parser.value()
    return _comparison(name, token.text, value)


def _comparable(value: Any) -> Any:
    if isinstance(value, str):
        try:
            if "T" in value and len(value) >= 19:
                return datetime.fromisoformat(
                    value.replace("Z", "+00:00").replace("+0000", "+00:00")
                )
            if len(value) == 10 and value[4] == "-":
                return date.fromisoformat(value)
        except ValueError:
            return value.lower()
        return value.lower()
    return value


def _comparison(name: str, op: str, value: Any) -> Predicate:
    def test(record: Mapping[str, Any]) -> bool:
        actual = _get(record, name)
        if op in ("=", "!=", "<>"):
            same = (actual is None and value is None) or (
                actual is not None
                and value is not None
                and _comparable(actual) == _comparable(value)
            )
            return same if op == "=" else not same
        if actual is None or value is None:
            return False
        try:
            left, right = _comparable(actual), _comparable(value)
            if op == "<":
                return bool(left < right)
            if op == "<=":
                return bool(left <= right)
            if op == ">":
                return bool(left > right)
            return bool(left >= right)
        except TypeError:
            return False

    return test


def _get(record: Mapping[str, Any], name: str) -> Any:
    return record.get(name.lower())


def sort_key(record: Mapping[str, Any], name: str) -> Any:
    return _comparable(_get(record, name))
