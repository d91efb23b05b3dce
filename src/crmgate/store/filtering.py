"""crmgate's filter and sort language (crmgate/query.py) translated into SQL for its own tables.

Each table declares which fields may be filtered and sorted, the column behind each and the kind
of value it holds; values are always bound parameters, never text in the statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, func, true

from crmgate.query import Condition, QueryError, SortKey

Kind = Literal["text", "datetime", "boolean", "email"]


@dataclass(frozen=True)
class FieldSpec:
    column: Any
    kind: Kind = "text"


Fields = Mapping[str, FieldSpec]


def _spec(fields: Fields, parameter: str, name: str) -> FieldSpec:
    spec = fields.get(name)
    if spec is None:
        raise QueryError(parameter, f"unknown field {name!r}; known: {', '.join(sorted(fields))}")
    return spec


def _value(spec: FieldSpec, condition: Condition) -> Any:
    value = condition.value
    if value is None:
        return None
    if spec.kind == "boolean":
        if not isinstance(value, bool):
            raise QueryError("filter", f"{condition.field} takes true or false")
        return value
    if not isinstance(value, str):
        raise QueryError("filter", f"{condition.field} takes a text value in quotes")
    if spec.kind == "datetime":
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise QueryError("filter", f"{condition.field} needs an ISO 8601 date") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if spec.kind == "email":
        return value.lower()
    return value


def _clause(fields: Fields, condition: Condition) -> ColumnElement[bool]:
    spec = _spec(fields, "filter", condition.field)
    column, op, value = spec.column, condition.op, _value(spec, condition)
    if value is None:
        if op == "eq":
            return column.is_(None)  # type: ignore[no-any-return]
        if op == "ne":
            return column.is_not(None)  # type: ignore[no-any-return]
        raise QueryError("filter", f"{op} cannot compare with null")
    if op in ("contains", "startswith"):
        if spec.kind not in ("text", "email"):
            raise QueryError("filter", f"{op} works on text fields only")
        escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%" if op == "contains" else f"{escaped}%"
        return func.lower(column).like(pattern.lower(), escape="\\")
    if spec.kind == "boolean" and op not in ("eq", "ne"):
        raise QueryError("filter", f"{condition.field} can only be compared with eq or ne")
    comparisons = {
        "eq": column.__eq__,
        "ne": column.__ne__,
        "gt": column.__gt__,
        "ge": column.__ge__,
        "lt": column.__lt__,
        "le": column.__le__,
    }
    return comparisons[op](value)  # type: ignore[no-any-return]


def where(fields: Fields, conditions: Sequence[Condition]) -> ColumnElement[bool]:
    if not conditions:
        return true()
    return and_(*(_clause(fields, condition) for condition in conditions))


def order_by(fields: Fields, sort: Sequence[SortKey], *tiebreak: Any) -> list[Any]:
    """The requested order, then ``tiebreak`` columns: a total order, so pages never overlap."""
    order: list[Any] = []
    for key in sort:
        column = _spec(fields, "sort", key.field).column
        # NULLS LAST either way: SQLite and PostgreSQL disagree on the default.
        order.append((column.desc() if key.descending else column.asc()).nulls_last())
    return [*order, *(column.asc() for column in tiebreak)]
