"""crmgate's filter and sort trees (crmgate/query.py) written as SOQL, values always escaped.

Text values are quoted with every character SOQL treats specially escaped (backslash first, then
quotes and control characters), so no value can end the string and change the statement; in LIKE
patterns the wildcards % and _ of the value are escaped too. Dates and numbers are validated and
written unquoted, as SOQL wants them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime

from crmgate.model.mapping import EntityMap
from crmgate.query import Condition, QueryError, SortKey, Value, typed_value

_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\b": "\\b",
    "\f": "\\f",
}
_OPERATORS = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def quote(text: str) -> str:
    return "'" + "".join(_ESCAPES.get(char, char) for char in text) + "'"


def like(text: str, op: str) -> str:
    escaped = "".join(_ESCAPES.get(char, "\\" + char if char in "%_" else char) for char in text)
    return f"'%{escaped}%'" if op == "contains" else f"'{escaped}%'"


def literal(field: str, value: Value, kind: str) -> str:
    if value is None:
        return "null"
    typed = typed_value(field, value, kind)
    if isinstance(typed, bool):
        return "TRUE" if typed else "FALSE"
    if isinstance(typed, datetime):
        return typed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(typed, date):
        return typed.isoformat()
    return repr(typed) if isinstance(typed, (int, float)) else quote(typed)


def _fixed(column: str, value: str | int | bool) -> str:
    if isinstance(value, bool):
        return f"{column} = {'TRUE' if value else 'FALSE'}"
    if isinstance(value, int):
        return f"{column} = {value}"
    return f"{column} = {quote(value)}"


def where(conditions: Sequence[Condition], entity: EntityMap) -> str:
    # What makes a record this entity (a call is a Task with TaskSubtype = 'Call'), then the
    # client's conditions.
    clauses = [_fixed(column, value) for column, value in entity.match.items()]
    for condition in conditions:
        column = entity.filter_column("filter", condition.field)
        kind = entity.kind(condition.field)
        if condition.op in ("contains", "startswith"):
            if kind != "string" or not isinstance(condition.value, str):
                raise QueryError("filter", f"{condition.op} works on text fields only")
            clauses.append(f"{column} LIKE {like(condition.value, condition.op)}")
            continue
        if condition.value is None and condition.op not in ("eq", "ne"):
            raise QueryError("filter", f"{condition.op} cannot compare with null")
        value = literal(condition.field, condition.value, kind)
        clauses.append(f"{column} {_OPERATORS[condition.op]} {value}")
        prefix = entity.relation_prefix(condition.field)
        if prefix is not None and condition.value is not None:
            clauses.append(f"{column} LIKE {like(prefix, 'startswith')}")
    return " AND ".join(clauses)


def order_by(sort: Sequence[SortKey], entity: EntityMap) -> str:
    """The requested order, then Id: a total order, so pages never overlap or skip."""
    keys = [
        entity.filter_column("sort", key.field)
        + (" DESC NULLS LAST" if key.descending else " ASC NULLS FIRST")
        for key in sort
    ]
    if not any(key.field == "id" for key in sort):
        keys.append(f"{entity.id} ASC")
    return ", ".join(keys)


def select(
    entity: EntityMap,
    columns: Sequence[str],
    conditions: Sequence[Condition] = (),
    sort: Sequence[SortKey] = (),
    limit: int | None = None,
    offset: int | None = None,
) -> str:
    # Object and column names come from the descriptor, never from the request; values are
    # escaped by literal() and like().
    statement = f"SELECT {', '.join(columns)} FROM {entity.object}"  # noqa: S608
    condition = where(conditions, entity)
    if condition:
        statement += f" WHERE {condition}"
    statement += f" ORDER BY {order_by(sort, entity)}"
    if limit is not None:
        statement += f" LIMIT {int(limit)}"
    if offset:
        statement += f" OFFSET {int(offset)}"
    return statement


def count(entity: EntityMap, conditions: Sequence[Condition] = ()) -> str:
    statement = f"SELECT COUNT() FROM {entity.object}"  # noqa: S608
    condition = where(conditions, entity)
    return statement + (f" WHERE {condition}" if condition else "")


_SOQL_FUNCTIONS = {
    "count": "COUNT",
    "count_distinct": "COUNT_DISTINCT",
    "sum": "SUM",
    "avg": "AVG",
    "min": "MIN",
    "max": "MAX",
}
MAX_GROUP_ROWS = 2000  # Salesforce returns at most 2,000 rows for an aggregate query


def aggregate(
    entity: EntityMap,
    functions: Sequence[tuple[str, str]],
    group_by: Sequence[str],
    conditions: Sequence[Condition] = (),
) -> str:
    """``functions`` are (crmgate function, native column) pairs, aliased a0, a1, ...;
    ``group_by`` native columns. Names come from the descriptor or the describe, never the
    request."""
    selected = [
        *group_by,
        *(f"{_SOQL_FUNCTIONS[name]}({column}) a{i}" for i, (name, column) in enumerate(functions)),
    ]
    statement = f"SELECT {', '.join(selected)} FROM {entity.object}"  # noqa: S608
    condition = where(conditions, entity)
    if condition:
        statement += f" WHERE {condition}"
    if group_by:
        statement += f" GROUP BY {', '.join(group_by)} ORDER BY {', '.join(group_by)}"
    return statement + f" LIMIT {MAX_GROUP_ROWS}"


def ids_matching(entity: EntityMap, ids: Sequence[str], columns: Sequence[str] = ()) -> str:
    """The records of ``ids`` (checked record ids) that are records of ``entity`` with its match
    values: their ``columns`` (the id alone by default)."""
    clauses = [_fixed(column, value) for column, value in entity.match.items()]
    clauses.append(f"{entity.id} IN ({', '.join(quote(i) for i in ids)})")
    selected = ", ".join(columns or [entity.id])
    return f"SELECT {selected} FROM {entity.object} WHERE {' AND '.join(clauses)}"  # noqa: S608
