"""Filter, sort and page native records in memory: for the small objects a CRM lists whole but
cannot query (HubSpot's owners, ...). A connector reads every record (bounded by ``limit``) and
hands them here; the filter and sort language is the same as everywhere else.

Comparisons follow the unified field's kind: numbers as numbers, dates and date-times as
instants (a date alone is midnight UTC), text case-insensitively, as CRMs compare text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from crmgate.model.mapping import EntityMap
from crmgate.query import Condition, QueryError, SortKey, parse_instant


def _comparable(kind: str, value: Any) -> Any:
    """``value`` as something ordered the way ``kind`` orders (None stays None)."""
    if value is None or value == "":
        return None
    if kind in ("number", "integer"):
        try:
            return float(value)
        except (TypeError, ValueError):
            return None
    if kind in ("date", "date-time"):
        try:
            return parse_instant(str(value))
        except ValueError:
            return None
    if kind == "boolean":
        return value if isinstance(value, bool) else str(value).lower() == "true"
    return str(value).lower()


def _holds(condition: Condition, kind: str, value: Any) -> bool:
    have = _comparable(kind, value)
    if condition.value is None:
        if condition.op not in ("eq", "ne"):
            raise QueryError("filter", f"{condition.field}: use eq null or ne null")
        return (have is None) == (condition.op == "eq")
    want = _comparable(kind, condition.value)
    if want is None:
        raise QueryError("filter", f"{condition.field}: {condition.value!r} is not a {kind}")
    if condition.op in ("contains", "startswith"):
        if kind != "string":
            raise QueryError("filter", f"{condition.op} works on text fields only")
        text = have or ""
        return want in text if condition.op == "contains" else text.startswith(want)
    if have is None:
        return condition.op == "ne"
    try:
        return bool(
            {
                "eq": have == want,
                "ne": have != want,
                "gt": have > want,
                "ge": have >= want,
                "lt": have < want,
                "le": have <= want,
            }[condition.op]
        )
    except TypeError:
        return False


def select(
    rows: Sequence[dict[str, Any]],
    entity: EntityMap,
    conditions: Sequence[Condition] = (),
    sort: Sequence[SortKey] = (),
) -> list[dict[str, Any]]:
    """The native ``rows`` that meet every condition, in ``sort`` order (missing values last,
    then by id, so pages are stable)."""
    checks = [
        (condition, entity.filter_column("filter", condition.field), entity.kind(condition.field))
        for condition in conditions
    ]
    kept = [
        row
        for row in rows
        if all(_holds(condition, kind, row.get(column)) for condition, column, kind in checks)
        and all(row.get(column) == value for column, value in entity.match.items())
    ]
    kept.sort(key=lambda row: str(row.get(entity.id)))
    for key in reversed(sort):
        column = entity.filter_column("sort", key.field)
        kind = entity.kind(key.field)
        present = [r for r in kept if _comparable(kind, r.get(column)) is not None]
        absent = [r for r in kept if _comparable(kind, r.get(column)) is None]
        present.sort(key=lambda r: _comparable(kind, r.get(column)), reverse=key.descending)
        kept = present + absent
    return kept


def page_of(rows: Sequence[dict[str, Any]], page: int, page_size: int) -> list[dict[str, Any]]:
    start = (page - 1) * page_size
    return list(rows[start : start + page_size])
