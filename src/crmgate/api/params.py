"""Query parameters shared by the list routes, declared once as the contract declares them."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date
from typing import Annotated, Any

from fastapi import Query
from pydantic import BaseModel, BeforeValidator

from crmgate.query import QueryError, parse_fields, parse_filter, parse_sort

MAX_PAGE_SIZE = 100

MAX_PAGE = 1_000_000

Page = Annotated[int, Query(ge=1, le=MAX_PAGE, description="Page to show (default: 1)")]
PageSize = Annotated[
    int,
    Query(
        ge=1,
        le=MAX_PAGE_SIZE,
        description=f"Amount of results (default: 25, at most {MAX_PAGE_SIZE})",
    ),
]
Filter = Annotated[
    str | None, Query(description="Filter, e.g. email eq 'bill@example.com' (docs/querying.md)")
]
Sort = Annotated[
    str | None,
    Query(
        description="Specifies ascending or descending sort on existing fields, e.g. -created_at"
    ),
]
Fields = Annotated[
    str | None, Query(description="Comma-separated list of fields to include in the response")
]
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _iso_day(value: Any) -> Any:
    """A day as the contract writes it (YYYY-MM-DD), not whatever else the date type would take
    (a number of seconds since 1970, say)."""
    if isinstance(value, str) and not _DAY.match(value):
        raise ValueError("must be a date as YYYY-MM-DD")
    return value


RequestsFrom = Annotated[
    date | None,
    BeforeValidator(_iso_day),
    Query(description="All Application Requests from this date"),
]
RequestsUntil = Annotated[
    date | None,
    BeforeValidator(_iso_day),
    Query(description="All Application Requests until this date"),
]


Record = dict[str, Any]


def field_selector(
    model: type[BaseModel], fields: str | None, always: str = "key"
) -> Callable[[Record], Record]:
    """The `fields` parameter, checked once against ``model``: a function that keeps only the
    chosen fields of a rendered record (and ``always``, its identifier)."""
    selected = parse_fields(fields)
    if selected is None:
        return lambda record: record
    unknown = sorted(set(selected) - set(model.model_fields))
    if unknown:
        raise QueryError("fields", f"unknown field(s) {', '.join(unknown)}")
    keep = {always, *selected}
    return lambda record: {name: value for name, value in record.items() if name in keep}


class ListQuery:
    """The list parameters every list route takes, parsed once: use as
    ``query: Annotated[ListQuery, Depends()]``."""

    def __init__(
        self,
        page_size: PageSize = 25,
        page: Page = 1,
        filter: Filter = None,
        fields: Fields = None,
        sort: Sort = None,
    ) -> None:
        self.page_size = page_size
        self.page = page
        self.conditions = parse_filter(filter)
        self.sort = parse_sort(sort)
        self.fields = fields

    def selector(self, model: type[BaseModel], always: str = "key") -> Callable[[Record], Record]:
        return field_selector(model, self.fields, always)
