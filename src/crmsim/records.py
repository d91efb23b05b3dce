"""The simulators' in-memory records: a store of tables of rows (ids, created/modified stamps,
snapshots for all-or-nothing writes), typed values (checking, comparing, ordering) and paging
(offset/limit slices and server-side continuation tokens) — what every simulated CRM does alike.

Values are compared by kind: ``text`` (case-insensitive, as every simulated CRM's collation is),
``number``, ``boolean``, ``date`` and ``datetime`` (ISO strings, ``date``/``datetime`` objects or
epoch milliseconds, all as instants; a datetime without an offset is UTC). Without a kind, a value's
kind is read off the value itself, an ISO date or datetime string counting as one.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Generic, TypeVar

Row = dict[str, Any]
T = TypeVar("T")

# ---- typed values ---------------------------------------------------------------------------


def instant(value: Any) -> float | None:
    """A date or datetime as epoch seconds (a date at midnight UTC), or None when it is not one."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, date):
        return datetime.combine(value, datetime.min.time(), UTC).timestamp()
    if not isinstance(value, str) or len(value) < 10 or value[4:5] != "-":
        return None
    try:
        if len(value) == 10:
            return instant(date.fromisoformat(value))
        if "T" not in value:
            return None
        return instant(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def typed(value: Any, kind: str | None = None) -> tuple[int, Any]:
    """A non-null value's sort key: ``(0, number)`` for numbers, booleans and instants, ``(1,
    text)`` for text; keys of one rank order as the CRM does."""
    if kind is None:
        if isinstance(value, bool):
            kind = "boolean"
        elif isinstance(value, (int, float)):
            kind = "number"
        elif instant(value) is not None:
            kind = "datetime"
        else:
            kind = "text"
    if kind in ("number", "boolean"):
        try:
            return (0, float(value))
        except (TypeError, ValueError):
            return (1, str(value).casefold())
    if kind in ("date", "datetime"):
        if isinstance(value, str) and value.isdigit():
            return (0, int(value) / 1000)  # epoch milliseconds
        moment = instant(value)
        return (0, moment) if moment is not None else (1, str(value).casefold())
    return (1, str(value).casefold())


def compare(left: Any, right: Any, kind: str | None = None) -> int:
    """-1, 0 or 1 as ``left`` orders before, with or after ``right``; two values of different
    kinds compare as text."""
    a, b = typed(left, kind), typed(right, kind)
    if a[0] != b[0]:
        a, b = (1, str(left).casefold()), (1, str(right).casefold())
    return (a > b) - (a < b)


_TESTS: dict[str, Callable[[int], bool]] = {
    "=": lambda order: order == 0,
    "!=": lambda order: order != 0,
    "<": lambda order: order < 0,
    "<=": lambda order: order <= 0,
    ">": lambda order: order > 0,
    ">=": lambda order: order >= 0,
}
_ALIASES = {"<>": "!=", "eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def test(op: str, actual: Any, wanted: Any, kind: str | None = None) -> bool:
    """A comparison (``= != <> < <= > >=`` or OData's ``eq ne lt le gt ge``) of a stored value
    with a wanted one, null as SQL has it: null equals only null, and orders with nothing."""
    op = _ALIASES.get(op, op)
    if actual is None or wanted is None:
        return op in ("=", "!=") and ((actual is None and wanted is None) == (op == "="))
    return _TESTS[op](compare(actual, wanted, kind))


def conforms(value: Any, kind: str) -> bool:
    """Whether a JSON value is of a kind: ``text``, ``integer``, ``number`` (a boolean is
    neither), ``boolean``, ``date`` (``YYYY-MM-DD``) or ``datetime`` (ISO 8601, or a date)."""
    if kind == "boolean":
        return isinstance(value, bool)
    if kind in ("integer", "number"):
        numeric = int if kind == "integer" else (int, float)
        return isinstance(value, numeric) and not isinstance(value, bool)
    if not isinstance(value, str):
        return False
    if kind in ("date", "datetime"):  # a datetime may be given as a date
        return (len(value) == 10 or kind == "datetime") and instant(value) is not None
    return True


def fault(
    value: Any, kind: str, *, length: int | None = None, options: Collection[Any] = ()
) -> str | None:
    """What keeps a non-null JSON value out of a column, or None: ``type`` (it is not of
    ``kind``, see `conforms`), ``length`` (text longer than ``length``) or ``option`` (it is
    not one of ``options``, when there are any)."""
    if not conforms(value, kind):
        return "type"
    if length is not None and isinstance(value, str) and len(value) > length:
        return "length"
    if options and value not in options:
        return "option"
    return None


# ---- ordering and paging --------------------------------------------------------------------


@dataclass(frozen=True)
class Sort:
    """One key of an ordering: a column (or a function of the item), its direction, where nulls
    go (None: nulls are least, so first ascending and last descending) and its kind."""

    column: str | Callable[[Any], Any]
    descending: bool = False
    nulls_last: bool | None = None
    kind: str | None = None

    def value(self, item: Any) -> Any:
        return item.get(self.column) if isinstance(self.column, str) else self.column(item)


def order(items: Iterable[T], *keys: Sort) -> list[T]:
    """``items`` sorted by ``keys``, the first the most significant; items that tie keep their
    order."""
    ordered = list(items)
    for key in reversed(keys):
        present = [item for item in ordered if key.value(item) is not None]
        absent = [item for item in ordered if key.value(item) is None]
        present.sort(key=lambda item: typed(key.value(item), key.kind), reverse=key.descending)
        last = key.descending if key.nulls_last is None else key.nulls_last
        ordered = present + absent if last else absent + present
    return ordered


def page(rows: list[T], offset: int, limit: int | None) -> tuple[list[T], bool]:
    """The ``limit`` rows from ``offset`` on (all of them when None), and whether more follow."""
    if limit is None:
        return rows[offset:], False
    return rows[offset : offset + limit], offset + limit < len(rows)


class Cursors(Generic[T]):
    """Continuations kept server-side under opaque tokens (query locators, page tokens): at most
    ``keep`` of them, the oldest forgotten first, each valid ``lifetime`` seconds (None: until
    forgotten)."""

    def __init__(
        self,
        make: Callable[[], str] = lambda: secrets.token_hex(24),
        lifetime: float | None = None,
        keep: int = 10_000,
    ) -> None:
        self.make, self.lifetime, self.keep = make, lifetime, keep
        self._held: OrderedDict[str, tuple[T, float]] = OrderedDict()

    def issue(self, state: T) -> str:
        token = self.make()
        expires = time.time() + self.lifetime if self.lifetime is not None else float("inf")
        self._held[token] = (state, expires)
        while len(self._held) > self.keep:
            self._held.popitem(last=False)
        return token

    def get(self, token: str) -> T | None:
        """The state behind a token; None when it is unknown, forgotten or expired."""
        held = self._held.get(token)
        return held[0] if held is not None and held[1] >= time.time() else None

    def forget(self, token: str) -> None:
        """Spends one token (a single-use continuation, once used)."""
        self._held.pop(token, None)

    def clear(self) -> None:
        """Forgets every token, as if all had expired (tests)."""
        self._held.clear()


# ---- the store ------------------------------------------------------------------------------

Snapshot = dict[str, dict[str, Row]]


class Store(dict[str, dict[str, Row]]):
    """One org's records: table -> record id (as text) -> row. ``key(table)`` names a table's id
    column and ``new_id(table)`` makes an id for it (a number stays one in the row); ``created``
    and ``modified`` are the columns stamped with ``now()`` (created ones keep a value the row
    brings, as seeding may); after each insert and update, ``derive(table, row)`` sets the CRM's
    computed columns."""

    def __init__(
        self,
        tables: Iterable[str],
        *,
        key: Callable[[str], str],
        new_id: Callable[[str], str | int],
        now: Callable[[], str],
        created: tuple[str, ...] = (),
        modified: tuple[str, ...] = (),
        derive: Callable[[str, Row], None] | None = None,
    ) -> None:
        super().__init__({table: {} for table in tables})
        self.key, self.new_id, self.now = key, new_id, now
        self.created, self.modified, self.derive = created, modified, derive

    def insert(self, table: str, row: Row) -> Row:
        """Stores a new row (with a new id unless it brings one) and returns it."""
        key = self.key(table)
        row[key] = row.get(key) or self.new_id(table)
        stamp = self.now()
        for column in self.created:
            row[column] = row.get(column) or stamp
        self._written(table, row, stamp)
        self[table][str(row[key])] = row
        return row

    def change(self, table: str, row: Row, changes: Row) -> Row:
        """Applies ``changes`` to a stored row (never its id) and returns it."""
        row.update({k: v for k, v in changes.items() if k != self.key(table)})
        self._written(table, row, self.now())
        return row

    def _written(self, table: str, row: Row, stamp: str) -> None:
        for column in self.modified:
            row[column] = stamp
        if self.derive is not None:
            self.derive(table, row)

    def holding(self, record_id: str) -> str | None:
        """The table a record id is in."""
        return next((table for table, rows in self.items() if record_id in rows), None)

    def snapshot(self) -> Snapshot:
        """Every table's rows as they are now, for `restore` (an all-or-nothing write)."""
        return {table: {i: dict(r) for i, r in rows.items()} for table, rows in self.items()}

    def restore(self, saved: Snapshot) -> None:
        """Every table back as `snapshot` saw it, in place."""
        for table, rows in self.items():
            rows.clear()
            rows.update(saved.get(table, {}))


# ---- links between records ------------------------------------------------------------------

End = tuple[str, str]  # a record: (table, record id)


class Links(dict[End, dict[End, set[Any]]]):
    """Links between records of any two tables (HubSpot's associations; many-to-many
    relationships), kept from both ends, each with its kinds (association types, relationship
    names): ``links[one][other]`` holds the kinds ``one`` links ``other`` with."""

    def link(self, one: End, other: End, kinds: Iterable[Any], inverse: Iterable[Any]) -> None:
        """Links ``one`` to ``other`` with ``kinds``, and ``other`` back with ``inverse``."""
        self.setdefault(one, {}).setdefault(other, set()).update(kinds)
        self.setdefault(other, {}).setdefault(one, set()).update(inverse)

    def unlink(self, one: End, other: End) -> None:
        self.get(one, {}).pop(other, None)
        self.get(other, {}).pop(one, None)

    def of(self, one: End, table: str, live: Collection[str]) -> dict[str, set[Any]]:
        """The records of ``table`` that ``one`` links to and that are ``live`` (a link to a
        deleted record is not shown), by id, with the kinds of each link."""
        found = self.get(one, {}).items()
        return {i: kinds for (t, i), kinds in found if t == table and i in live}
