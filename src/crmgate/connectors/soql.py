"""crmgate's filter and sort trees (crmgate/query.py) written as SOQL, values always escaped.

Text values are quoted with every character SOQL treats specially escaped (backslash first, then
quotes and control characters), so no value can end the string and change the statement; in LIKE
patterns the wildcards % and _ of the value are escaped too. Dates and numbers are validated and
written unquoted, as SOQL wants them.
"""

from __future__ import annotations

from collections.abc import Sequence

from crmgate.connectors.dialect import Target, TextDialect, pattern
from crmgate.model.mapping import EntityMap
from crmgate.query import Condition, SortKey

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


class Soql(TextDialect):
    crm = "Salesforce"
    true_false = ("TRUE", "FALSE")
    ascending, descending = " ASC NULLS FIRST", " DESC NULLS LAST"

    def quote(self, text: str) -> str:
        return "'" + "".join(_ESCAPES.get(char, char) for char in text) + "'"

    def like(self, target: Target, op: str, text: str) -> str:
        """LIKE, with the value's own % and _ escaped: they are the characters themselves."""
        escaped = "".join(
            _ESCAPES.get(char, "\\" + char if char in "%_" else char) for char in text
        )
        return f"{target.name} LIKE '{pattern(op, escaped)}'"

    def term(self, condition: Condition) -> str:
        """A relation compared on a column several relations share (WhoId: a contact or a lead)
        also asks for the id prefix of its target's records."""
        term = super().term(condition)
        prefix = self.entity.relation_prefix(condition.field)
        if prefix is None or condition.value is None or condition.op in ("contains", "startswith"):
            return term
        column = self.entity.filter_column("filter", condition.field)
        prefixed = self.like(
            Target(condition.field, column, column, "string"), "startswith", prefix
        )
        return f"{term} AND {prefixed}"


def where(conditions: Sequence[Condition], entity: EntityMap) -> str:
    return Soql(entity).where(conditions)


def order_by(sort: Sequence[SortKey], entity: EntityMap) -> str:
    return Soql(entity).order(sort)


def select(
    entity: EntityMap,
    columns: Sequence[str],
    conditions: Sequence[Condition] = (),
    sort: Sequence[SortKey] = (),
    limit: int | None = None,
    offset: int | None = None,
) -> str:
    # Object and column names come from the descriptor, never from the request; values are
    # escaped by the Soql dialect.
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
    dialect = Soql(entity)
    clauses = dialect.terms(())
    clauses.append(f"{entity.id} IN ({', '.join(dialect.quote(i) for i in ids)})")
    selected = ", ".join(columns or [entity.id])
    return f"SELECT {selected} FROM {entity.object} WHERE {' AND '.join(clauses)}"  # noqa: S608
