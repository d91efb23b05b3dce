"""One filter translator for every CRM: the walk over crmgate's conditions and the refusals all
CRMs share, with hooks where a CRM's query language differs.

A connector's dialect is a subclass that declares its operator table, its booleans, which record
ids it takes, which characters its contains/startswith cannot match and how many conditions it
takes, and overrides the few hooks that write its terms: a comparison, a null test, a like, a
value (text quoted and escaped, dates, numbers), the join. The base walks the conditions once, in
order, after the entity map's fixed ``match`` values, and refuses in the same words everywhere:

- an unknown field (the entity map names the known ones);
- null compared with anything but eq/ne;
- contains/startswith on anything but text (a record id is not text here);
- a value that does not fit its field's kind (``crmgate.query.typed_value``);
- an id that is not one of the CRM's ids, and more conditions than the CRM takes.

Query-language dialects (SOQL, COQL, OData) write text (``TextDialect``); search APIs (HubSpot's
filters, Pipedrive's filter conditions, Close's advanced filtering) write JSON objects: the base is
generic over the type of a term.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import ClassVar, Generic, TypeVar

from crmgate.model.mapping import EntityMap
from crmgate.query import Condition, QueryError, SortKey, Typed, Value, typed_value

T = TypeVar("T")
Scalar = str | int | float | bool  # a value as a term carries it: query text, or a JSON value

COMPARISONS: Mapping[str, str] = {
    "eq": "=",
    "ne": "!=",
    "gt": ">",
    "ge": ">=",
    "lt": "<",
    "le": "<=",
}


@dataclass(frozen=True, slots=True)
class Target:
    """What one condition compares: the unified ``field``, the entity map's native ``column``,
    the ``name`` the dialect writes for it and the field's contract ``kind``."""

    field: str
    column: str
    name: str
    kind: str


def pattern(op: str, text: str, wildcard: str = "%") -> str:
    """``text`` (escaped already, if the dialect escapes) as a contains or startswith pattern."""
    return f"{wildcard}{text}{wildcard}" if op == "contains" else f"{text}{wildcard}"


class Dialect(ABC, Generic[T]):
    """The conditions of a list or count for one entity, as terms of type ``T``."""

    crm: ClassVar[str] = "the CRM"  # names the CRM in its own refusals
    operators: ClassVar[Mapping[str, str]] = COMPARISONS  # eq, ne, gt, ge, lt, le -> native
    true_false: ClassVar[tuple[Scalar, Scalar]] = ("true", "false")
    max_terms: ClassVar[int | None] = None  # the CRM's cap, the map's match values included
    like_refuses: ClassVar[str] = ""  # characters contains/startswith cannot match
    like_refusal: ClassVar[str] = "{crm}'s {op} cannot match any of {chars}"
    # Record ids the CRM takes; None: ids are written like any text (is_id is never asked).
    id_pattern: ClassVar[re.Pattern[str] | None] = None
    id_refusal: ClassVar[str] = "{field} takes a record id"

    def __init__(self, entity: EntityMap) -> None:
        self.entity = entity

    # ---- the walk ------------------------------------------------------------------------------

    def terms(self, conditions: Sequence[Condition]) -> list[T]:
        """What makes a record this entity (a call is a Task with TaskSubtype = 'Call'), then the
        client's conditions, each as one term."""
        found = [self.fixed(column, value) for column, value in self.entity.match.items()]
        found += [self.term(condition) for condition in conditions]
        if self.max_terms is not None and len(found) > self.max_terms:
            raise QueryError("filter", f"{self.crm} takes at most {self.max_terms} conditions")
        return found

    def term(self, condition: Condition) -> T:
        """One condition as one term. A dialect overrides this only for a column that is
        unlike any other (HubSpot's associations), then hands the rest back here."""
        field, op, value = condition.field, condition.op, condition.value
        column = self.entity.filter_column("filter", field)
        target = Target(field, column, self.name(field, column), self.entity.kind(field))
        is_id = self.id_pattern is not None and self.is_id(target)
        if value is None and op in ("eq", "ne"):
            return self.null(target, op)
        if op in ("contains", "startswith"):
            if target.kind != "string" or is_id or not isinstance(value, str):
                raise QueryError("filter", f"{op} works on text fields only")
            if self.like_refused(value):
                message = self.like_refusal.format(crm=self.crm, op=op, chars=self.like_refuses)
                raise QueryError("filter", message)
            return self.like(target, op, value)
        if value is None:
            raise QueryError("filter", f"{field}: use eq null or ne null")
        if is_id:
            return self.compare(target, self.operators[op], self.id_value(target, value))
        typed = typed_value(field, value, target.kind)
        return self.compare(target, self.operators[op], self.literal(target, typed))

    def fixed(self, column: str, value: str | int | bool) -> T:
        """A match value of the entity map (from the descriptor, not the request): ``eq``."""
        target = Target(column, column, self.name(column, column), "string")
        return self.compare(target, self.operators["eq"], self.literal(target, value))

    # ---- hooks: names and ids ------------------------------------------------------------------

    def name(self, field: str, column: str) -> str:
        """How the query names ``column``; refuse here what the CRM cannot filter by."""
        return column

    def is_id(self, target: Target) -> bool:
        """Whether ``target`` holds record ids (asked only if the dialect has an id_pattern)."""
        return target.field == "id" or target.field.startswith("relation.")

    def id_value(self, target: Target, value: Value) -> Scalar:
        if (
            not isinstance(value, str)
            or self.id_pattern is None
            or not self.id_pattern.match(value)
        ):
            raise QueryError("filter", self.id_refusal.format(field=target.field))
        return self.id_literal(value)

    def id_literal(self, value: str) -> Scalar:
        """A checked record id as the CRM writes it (unquoted digits, a lower-case GUID...)."""
        return value

    # ---- hooks: values -------------------------------------------------------------------------

    def literal(self, target: Target, typed: Typed) -> Scalar:
        """A value checked against its field's kind, as the CRM writes it."""
        if isinstance(typed, bool):
            return self.true_false[0] if typed else self.true_false[1]
        if isinstance(typed, datetime):  # before date: a datetime is a date too
            return self.instant(typed)
        if isinstance(typed, date):
            return self.day(typed)
        if isinstance(typed, (int, float)):
            return self.number(typed)
        return self.text(typed)

    def instant(self, value: datetime) -> Scalar:
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def day(self, value: date) -> Scalar:
        return value.isoformat()

    def number(self, value: int | float) -> Scalar:
        return repr(value)

    def text(self, value: str) -> Scalar:
        """Text as the term carries it: as it is in JSON; quoted and escaped in a query."""
        return value

    def like_refused(self, text: str) -> bool:
        return any(char in self.like_refuses for char in text)

    # ---- hooks: terms --------------------------------------------------------------------------

    @abstractmethod
    def compare(self, target: Target, operator: str, literal: Scalar) -> T:
        """``target operator literal``, the operator from the table, the literal written."""

    @abstractmethod
    def null(self, target: Target, op: str) -> T:
        """``target eq null`` (no value) or ``ne null`` (any value)."""

    @abstractmethod
    def like(self, target: Target, op: str, text: str) -> T:
        """``target contains text`` or ``startswith text``, ``text`` checked against
        like_refuses and not escaped yet."""


class TextDialect(Dialect[str]):
    """A query language: terms are text joined into one expression; values are quoted here."""

    conjunction: ClassVar[str] = " AND "
    ascending: ClassVar[str] = " ASC"
    descending: ClassVar[str] = " DESC"
    then_by_id: ClassVar[str] = " ASC"  # the id ending every order, after its name
    sort_separator: ClassVar[str] = ", "

    def quote(self, text: str) -> str:
        """A text literal: single quotes, a quote inside doubled (OData, COQL)."""
        return "'" + text.replace("'", "''") + "'"

    def text(self, value: str) -> Scalar:
        return self.quote(value)

    def compare(self, target: Target, operator: str, literal: Scalar) -> str:
        return f"{target.name} {operator} {literal}"

    def null(self, target: Target, op: str) -> str:
        return self.compare(target, self.operators[op], "null")

    def where(self, conditions: Sequence[Condition]) -> str:
        """The whole condition; empty when there is none."""
        return self.conjunction.join(self.terms(conditions))

    def sort_name(self, field: str, column: str) -> str:
        """How the order names ``column``; refuse here what the CRM cannot sort by."""
        return column

    def order(self, sort: Sequence[SortKey]) -> str:
        """The requested order, then the id: a total order, so pages never overlap or skip."""
        names = [self.sort_name(k.field, self.entity.filter_column("sort", k.field)) for k in sort]
        keys = [
            name + (self.descending if key.descending else self.ascending)
            for name, key in zip(names, sort, strict=True)
        ]
        by_id = self.sort_name("id", self.entity.id)
        if by_id not in names:
            keys.append(by_id + self.then_by_id)
        return self.sort_separator.join(dict.fromkeys(keys))


def list_parameters(
    entity: EntityMap,
    conditions: Sequence[Condition],
    table: Mapping[tuple[str, str], str],
    crm: str,
) -> dict[str, str]:
    """The query parameters of a list that takes its filters as parameters of its own
    (``table``: native column and operator -> parameter; Google's ``updatedMin``), or a
    filter's 400 naming what it takes: no query language, so nothing else is translated."""
    query: dict[str, str] = {}
    for condition in conditions:
        parameter = table.get((entity.filter_column("filter", condition.field), condition.op))
        if parameter is None or not condition.value or parameter in query:
            known = ", ".join(f"{entity.unified_name(c)} {op}" for c, op in table) or "none"
            raise QueryError("filter", f"{crm} filters {entity.entity} records by: {known}")
        query[parameter] = str(condition.value)
    return query


def list_order(
    entity: EntityMap, sort: Sequence[SortKey], table: Mapping[str, Mapping[str, str]], crm: str
) -> dict[str, str]:
    """The query parameters of a list sorted, ascending, by one of the columns ``table`` names
    (native column -> its parameters; Calendar's ``orderBy``), or a sort's 400 naming them."""
    if not sort:
        return {}
    said = table.get(entity.filter_column("sort", sort[0].field))
    if said is None or len(sort) > 1 or sort[0].descending:
        known = ", ".join(entity.unified_name(column) for column in table) or "none"
        raise QueryError("sort", f"{crm} sorts {entity.entity} records, ascending, by: {known}")
    return dict(said)
