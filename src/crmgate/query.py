"""The list-query language of crmgate: `filter`, `sort` and `fields` (see docs/querying.md).

The contract leaves the syntax of these parameters open. crmgate parses them once, here, into a
small tree that every backend (the gateway's own tables, each CRM connector) translates into its
own query language with its own escaping. Nothing downstream ever sees the raw string.

    filter := condition ("and" condition)*
    condition := field op value
    op := eq | ne | gt | ge | lt | le | contains | startswith
    value := 'text' (a quote inside is doubled: 'O''Brien') | number | true | false | null
    sort := key ("," key)*        key := field | -field | field asc | field desc
    fields := field ("," field)*
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

Op = Literal["eq", "ne", "gt", "ge", "lt", "le", "contains", "startswith"]
OPS: frozenset[str] = frozenset(("eq", "ne", "gt", "ge", "lt", "le", "contains", "startswith"))
Value = str | int | float | bool | None

MAX_CONDITIONS = 20
MAX_SORT_KEYS = 5
MAX_EXPRESSION = 2000


class QueryError(ValueError):
    """A filter, sort or fields parameter that cannot be understood; the message says where."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(f"{parameter}: {message}")
        self.parameter = parameter
        self.message = message


@dataclass(frozen=True, slots=True)
class Condition:
    field: str
    op: Op
    value: Value


@dataclass(frozen=True, slots=True)
class SortKey:
    field: str
    descending: bool = False


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^']|'')*')
      | (?P<number>-?\d+(?:\.\d+)?(?![\w.]))
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _tokens(text: str) -> list[tuple[str, str, int]]:
    found: list[tuple[str, str, int]] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:  # only trailing whitespace is left
            break
        kind = match.lastgroup or "bad"
        start = match.start(kind)
        if kind == "bad":
            raise QueryError("filter", f"unexpected character {match[kind]!r} at {start + 1}")
        found.append((kind, match[kind], start))
        position = match.end()
    return found


def _no_control_characters(parameter: str, text: str) -> None:
    if _CONTROL.search(text):
        raise QueryError(parameter, "control characters are not allowed")


def parse_filter(text: str | None) -> tuple[Condition, ...]:
    if text is None or not text.strip():
        return ()
    if len(text) > MAX_EXPRESSION:
        raise QueryError("filter", f"longer than {MAX_EXPRESSION} characters")
    _no_control_characters("filter", text)
    tokens = _tokens(text)
    conditions: list[Condition] = []
    index = 0
    while True:
        if index + 3 > len(tokens):
            raise QueryError("filter", "expected: field operator value (e.g. name eq 'Bill')")
        (field_kind, field, at), (op_kind, op, op_at), (value_kind, raw, value_at) = tokens[
            index : index + 3
        ]
        if field_kind != "word" or field.lower() in ("and", "true", "false", "null"):
            raise QueryError("filter", f"expected a field name at {at + 1}")
        if op_kind != "word" or op.lower() not in OPS:
            raise QueryError(
                "filter", f"unknown operator {op!r} at {op_at + 1}; use one of {sorted(OPS)}"
            )
        conditions.append(Condition(field, op.lower(), _value(value_kind, raw, value_at)))  # type: ignore[arg-type]
        if len(conditions) > MAX_CONDITIONS:
            raise QueryError("filter", f"more than {MAX_CONDITIONS} conditions")
        index += 3
        if index == len(tokens):
            return tuple(conditions)
        kind, word, at = tokens[index]
        if kind != "word" or word.lower() != "and":
            raise QueryError("filter", f"expected 'and' at {at + 1}")
        index += 1


def _value(kind: str, raw: str, at: int) -> Value:
    if kind == "string":
        return raw[1:-1].replace("''", "'")
    if kind == "number":
        return float(raw) if "." in raw else int(raw)
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    raise QueryError("filter", f"expected a value at {at + 1} (text goes in single quotes)")


def parse_sort(text: str | None) -> tuple[SortKey, ...]:
    if text is None or not text.strip():
        return ()
    _no_control_characters("sort", text)
    keys: list[SortKey] = []
    for part in text.split(","):
        words = part.split()
        if not words:
            raise QueryError("sort", "empty sort key")
        name, descending = words[0], False
        if name.startswith("-"):
            name, descending = name[1:], True
        if len(words) == 2 and words[1].lower() in ("asc", "desc") and not descending:
            descending = words[1].lower() == "desc"
        elif len(words) != 1:
            raise QueryError(
                "sort", f"cannot read {part.strip()!r}; use field, -field or field desc"
            )
        if not _FIELD.match(name):
            raise QueryError("sort", f"{name!r} is not a field name")
        keys.append(SortKey(name, descending))
    if len(keys) > MAX_SORT_KEYS:
        raise QueryError("sort", f"more than {MAX_SORT_KEYS} sort keys")
    return tuple(keys)


def parse_fields(text: str | None) -> tuple[str, ...] | None:
    """None means every field."""
    if text is None or not text.strip():
        return None
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    for name in names:
        if not _FIELD.match(name):
            raise QueryError("fields", f"{name!r} is not a field name")
    return names


# ---- aggregate pipelines -------------------------------------------------------------------------

FUNCTIONS = frozenset({"count", "count_distinct", "sum", "avg", "min", "max"})
MAX_FUNCTIONS = 5
MAX_GROUPS = 3
_FUNCTION = re.compile(r"^\s*([a-z_]+)\s*\(\s*([A-Za-z_][A-Za-z0-9_.]*)?\s*\)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Aggregation:
    function: str  # count, count_distinct, sum, avg, min, max
    field: str | None  # None: count() counts records

    @property
    def name(self) -> str:
        """The key of its value in a result group: count, sum_amount, ..."""
        return self.function if self.field is None else f"{self.function}_{self.field}"


@dataclass(frozen=True, slots=True)
class Pipeline:
    aggregations: tuple[Aggregation, ...]
    group_by: tuple[str, ...] = ()


def parse_pipeline(text: str | None) -> Pipeline:
    """``pipeline := function ("," function)* ["by" field ("," field)*]``, function one of
    count(), count(field), count_distinct(field), sum(field), avg(field), min(field), max(field).
    Without a pipeline: count()."""
    if text is None or not text.strip():
        return Pipeline((Aggregation("count", None),))
    if len(text) > MAX_EXPRESSION:
        raise QueryError("pipeline", f"longer than {MAX_EXPRESSION} characters")
    _no_control_characters("pipeline", text)
    parts = re.split(r"\s+by\s+", text, maxsplit=1, flags=re.IGNORECASE)
    head = parts[0]
    tail = parts[1] if len(parts) == 2 else ""
    aggregations = []
    for item in head.split(","):
        match = _FUNCTION.match(item)
        if match is None:
            raise QueryError("pipeline", f"cannot read {item.strip()!r}; e.g. sum(amount)")
        function, field = match[1].lower(), match[2]
        if function not in FUNCTIONS:
            raise QueryError("pipeline", f"unknown function {function!r}; use {sorted(FUNCTIONS)}")
        if field is None and function != "count":
            raise QueryError("pipeline", f"{function}() needs a field")
        aggregations.append(Aggregation(function, field))
    if len(aggregations) > MAX_FUNCTIONS:
        raise QueryError("pipeline", f"more than {MAX_FUNCTIONS} functions")
    group_by = tuple(name.strip() for name in tail.split(",") if name.strip()) if tail else ()
    if tail and not group_by:
        raise QueryError("pipeline", "by needs at least one field")
    for name in group_by:
        if not _FIELD.match(name):
            raise QueryError("pipeline", f"{name!r} is not a field name")
    if len(group_by) > MAX_GROUPS:
        raise QueryError("pipeline", f"more than {MAX_GROUPS} group fields")
    return Pipeline(tuple(aggregations), group_by)


# ---- a filter value as its field's kind: checked once here, formatted by each backend -------

Typed = bool | int | float | str | date | datetime


def parse_instant(text: str) -> datetime:
    """An ISO 8601 date or date-time as an aware datetime (a date alone is midnight, no zone is
    UTC); ValueError if it is neither."""
    parsed = datetime.fromisoformat(text.strip())
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def typed_value(field: str, value: Value, kind: str) -> Typed:
    """A filter value checked against the contract kind of its field, as Python: a bool for
    ``boolean``, an int or float for ``number``/``integer``, a ``date`` for ``date``, an aware
    ``datetime`` for ``date-time``, text otherwise. What does not fit is a QueryError naming
    the field; ``null`` is not a value here (eq null and ne null are each backend's)."""
    if value is None:
        raise QueryError("filter", f"{field}: use eq null or ne null")
    if kind in ("date", "date-time"):
        if not isinstance(value, str):
            raise QueryError("filter", f"{field} needs an ISO 8601 date in quotes")
        try:
            return date.fromisoformat(value[:10]) if kind == "date" else parse_instant(value)
        except ValueError:
            raise QueryError("filter", f"{field} needs an ISO 8601 date") from None
    if kind == "boolean":
        if not isinstance(value, bool):
            raise QueryError("filter", f"{field} takes true or false")
        return value
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise QueryError("filter", f"{field} takes a number")
        return value
    if not isinstance(value, str):
        raise QueryError("filter", f"{field} takes a text value in quotes")
    return value
