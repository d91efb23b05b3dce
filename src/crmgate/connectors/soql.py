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


def _statement(
    entity: EntityMap, selected: Sequence[str], conditions: Sequence[Condition], *also: str
) -> str:
    """SELECT ``selected`` FROM the entity's object WHERE its match values, ``conditions`` and
    the clauses ``also``. Object and column names come from the descriptor or the describe,
    never from the request; values are escaped by the Soql dialect."""
    terms = [*Soql(entity).terms(conditions), *also]
    statement = f"SELECT {', '.join(selected)} FROM {entity.object}"  # noqa: S608
    return statement + (f" WHERE {' AND '.join(terms)}" if terms else "")


def select(
    entity: EntityMap,
    columns: Sequence[str],
    conditions: Sequence[Condition] = (),
    sort: Sequence[SortKey] = (),
    limit: int | None = None,
    offset: int | None = None,
) -> str:
    statement = f"{_statement(entity, columns, conditions)} ORDER BY {Soql(entity).order(sort)}"
    if limit is not None:
        statement += f" LIMIT {int(limit)}"
    if offset:
        statement += f" OFFSET {int(offset)}"
    return statement


def count(entity: EntityMap, conditions: Sequence[Condition] = ()) -> str:
    return _statement(entity, ["COUNT()"], conditions)


MAX_GROUP_ROWS = 2000  # Salesforce returns at most 2,000 rows for an aggregate query


def aggregate(
    entity: EntityMap,
    functions: Sequence[tuple[str, str]],
    group_by: Sequence[str],
    conditions: Sequence[Condition] = (),
) -> str:
    """``functions`` are (crmgate function, native column) pairs, aliased a0, a1, ... (crmgate's
    functions, crmgate.query.FUNCTIONS, are SOQL's in lower case); ``group_by`` native columns."""
    calls = (f"{name.upper()}({column}) a{i}" for i, (name, column) in enumerate(functions))
    statement = _statement(entity, [*group_by, *calls], conditions)
    if group_by:
        statement += f" GROUP BY {', '.join(group_by)} ORDER BY {', '.join(group_by)}"
    return statement + f" LIMIT {MAX_GROUP_ROWS}"


def ids_matching(entity: EntityMap, ids: Sequence[str], columns: Sequence[str] = ()) -> str:
    """The records of ``ids`` (checked record ids) that are records of ``entity`` with its match
    values: their ``columns`` (the id alone by default)."""
    listed = ", ".join(Soql(entity).quote(record_id) for record_id in ids)
    return _statement(entity, columns or [entity.id], (), f"{entity.id} IN ({listed})")
