"""Kommo (amoCRM): the code its descriptor (platforms/AmoCRM.toml) cannot say.

Records are flattened for the entity maps: dates from Unix seconds to ISO 8601 (and back), the
first linked company (``_embedded.companies``) as ``company_id``, custom fields
(``custom_fields_values``) as ``cf_<field id>`` holding the first value, described by
``/api/v4/<entity>/custom_fields``. Costs in Kommo calls:

- Lists page with ``page``/``limit`` (250 a call) and HAL's ``_links.next``, through
  ``CursorWalks``: the page after the last one read costs at most one call. They filter by what
  ``filter[...]`` takes: ``id`` and relations ``eq``, ``name eq`` (whole, any case; not tasks),
  ``created_at``/``updated_at`` ranges; and sort by one of ``id``, ``created_at``,
  ``updated_at``. Kommo has no count: counting walks the list (250 records a call).
- A contact's ``first_name`` or ``last_name`` ``eq`` (Kommo's filter[name] takes its whole name
  only): Kommo's search (``query``) for the text, read whole (at most 2,000 contacts), the
  conditions and sort applied in crmgate.
- Users are read whole and filtered in crmgate.
- Bulk: an array POST or PATCH per 50 records; the answer lists each record in the order sent.
- API v4 deletes no contact, company, lead, task or note: delete is not offered.
- Notes: a list per parent type (``/api/v4/<leads|contacts|companies>/notes``), a note found in
  its own only: its id names the type (``contacts-<id>``; a deal's is Kommo's). A list naming a
  parent (``relation.contact eq``) reads the parent's (``contacts/<id>/notes``); one naming none
  reads the three merged in its order, as a user asking for the notes expects: the first page
  costs three calls, the next at most one per list it finishes (``paging.merged``).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from typing import Any, ClassVar

from yarl import URL

from crmgate.connectors import base, local, shapes
from crmgate.connectors.base import Access, Connector, ItemResult, Records
from crmgate.connectors.dialect import COMPARISONS, Dialect, Scalar, Target
from crmgate.connectors.errors import CrmUnavailable, EntityNotFound, NotValid
from crmgate.connectors.jsonpath import select
from crmgate.connectors.paging import CursorWalks, Pager, merged
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.query import Condition, QueryError, SortKey

API = "/api/v4/"
CUSTOM = ("contacts", "companies", "leads")  # those with /<entity>/custom_fields
DATES = ("created_at", "updated_at", "closed_at", "complete_till", "closest_task_at")
# what each list sorts by (order[...]) and takes date ranges of (filter[<date>][from|to])
ORDERS = {"tasks": ("id", "created_at", "complete_till"), "notes": ("id", "updated_at")}
RANGES = {"tasks": ("updated_at",), "notes": ("updated_at",)}
DEFAULT_ORDERS = DEFAULT_RANGES = ("id", "created_at", "updated_at")
NAMED = ("contacts", "companies", "leads")  # filter[name]
HALVES = ("first_name", "last_name")  # of a contact's name, which filter[name] takes whole only
INTEGERS = ("responsible_user_id", "status_id", "pipeline_id", "entity_id", "price")
NATIVE_KINDS = {"price": "number", "closed_at": "date-time", "complete_till": "date-time"}
_CUSTOM_KINDS = {
    "numeric": "number",
    "date": "date",
    "date_time": "date-time",
    "checkbox": "boolean",
}
MAX_COLD_OFFSET = 10_000
MAX_COUNT = 10_000
_ID = re.compile(r"^[0-9]{1,18}$")
_CF = re.compile(r"^cf_([0-9]{1,18})$")
NOTED = ("leads", "contacts", "companies")  # the types with notes, each its own list of them
PARENT = "entity_id."  # a note's parent column: entity_id.<its type>


def _iso(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return datetime.fromtimestamp(value, UTC).isoformat()
    return None if value in (0, None) else value


def _unix(column: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise NotValid(f"{column}: a date and time (ISO 8601)", (column,)) from None
    return int(moment.replace(tzinfo=moment.tzinfo or UTC).timestamp())


def flatten(record: Any) -> dict[str, Any]:
    """One Kommo record as the flat columns the entity maps name."""
    record = shapes.obj(record, "Kommo", "a record")
    row = {k: v for k, v in record.items() if k not in ("_links", "_embedded")}
    row["id"] = str(shapes.integer(record.get("id"), "Kommo", "a record id"))
    for column in DATES:
        if column in row:
            row[column] = _iso(row[column])
    params = row.pop("params", None)
    if isinstance(params, dict) and isinstance(params.get("text"), str):
        row["text"] = params["text"]  # a note's text
    companies = select(record, "_embedded.companies[0].id")
    if companies:
        row["company_id"] = str(companies[0])
    for custom in row.pop("custom_fields_values", None) or ():
        values = custom.get("values") if isinstance(custom, dict) else None
        if values and isinstance(values[0], dict):
            row[f"cf_{custom.get('field_id')}"] = values[0].get("value")
    return {k: v for k, v in row.items() if v is not None}


def _located(name: str, record_id: str) -> tuple[str, str] | None:
    """The list holding record ``record_id`` of ``name`` and its Kommo id (None: none has it).
    A note's id names its parent's type, ``<type>-<id>``; a deal's is Kommo's, as it was."""
    parent, dash, native = record_id.rpartition("-") if name == "notes" else ("", "", record_id)
    if (parent in NOTED[1:] or not dash) and _ID.match(native):
        return (f"{parent or 'leads'}/notes" if name == "notes" else name), native
    return None


def _row_of(path: str) -> Callable[[Any], dict[str, Any]]:
    """How a record of the list at ``path`` reads; a note's (``<type>[/<id>]/notes``) with an
    id naming its type (a deal's as Kommo's) and its parent as ``entity_id.<type>``."""
    parent = path.split("/")[0] if path.endswith("/notes") else ""

    def note(record: Any) -> dict[str, Any]:
        flat = flatten(record)
        flat["id"] = flat["id"] if parent == "leads" else f"{parent}-{flat['id']}"
        if "entity_id" in flat:
            flat[PARENT + parent] = str(flat.pop("entity_id"))
        return flat

    return note if parent else flatten


def _parent_of(values: Mapping[str, Any]) -> str:
    """The list of the one parent a new note's values name."""
    named = [c[len(PARENT) :] for c, v in values.items() if c.startswith(PARENT) and v]
    if len(named) != 1:
        said = "relation opportunity, contact or account"
        raise NotValid(f"a note has one parent: {said}", tuple(PARENT + p for p in NOTED))
    return f"{named[0]}/notes"


def _kept(path: str, values: Mapping[str, Any]) -> None:
    """A changed note in ``path`` stays on a parent of its type (whose PATCH takes no other)."""
    for column, value in values.items():
        mine = column == PARENT + path.split("/")[0]
        if column.startswith(PARENT) and (not value if mine else bool(value)):
            raise NotValid("a note stays on a parent of its own type", (column,))


def _key(column: str) -> Callable[[dict[str, Any]], Any]:
    """What merged note lists are ordered by: Kommo's id as a number, a date as its text."""
    by_id = column == "id"
    return lambda row: int(row["id"].rpartition("-")[2]) if by_id else str(row.get(column) or "")


def native_body(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat columns as Kommo's body: Unix seconds, the company as an embedded link, custom
    fields as custom_fields_values, a note's text in its params."""
    body: dict[str, Any] = {}
    customs = []
    for column, value in values.items():
        custom = _CF.match(column)
        if column == "text" and name == "notes":
            body["params"] = {"text": value}
        elif column.startswith(PARENT):
            body.update({"entity_id": _integer(column, value)} if value else {})
        elif custom:
            customs.append({"field_id": int(custom.group(1)), "values": [{"value": value}]})
        elif column == "company_id":
            if value is not None and not _ID.match(str(value)):
                raise NotValid("relation account: a Kommo company id", ("company_id",))
            links = [{"id": int(value)}] if value is not None else []
            body["_embedded"] = {"companies": links}
        elif column in DATES:
            body[column] = _unix(column, value)
        elif column in INTEGERS and isinstance(value, (str, float)) and value != "":
            body[column] = _integer(column, value)
        else:
            body[column] = value
    if customs:
        body["custom_fields_values"] = customs
    return body


def _integer(column: str, value: str | float) -> int:
    """Kommo keeps prices and ids as whole numbers: a fraction is refused, never rounded."""
    try:
        number = float(value)
    except ValueError:
        raise NotValid(f"{column}: a whole number", (column,)) from None
    if not number.is_integer():
        raise NotValid(f"{column}: Kommo keeps whole numbers only", (column,))
    return int(number)


class Filters(Dialect[tuple[str, str]]):
    """Conditions as ``filter[...]`` query parameters: ids and relations ``eq``, ``name eq``,
    date ranges in Unix seconds."""

    crm = "Kommo"
    operators: ClassVar[Mapping[str, str]] = {op: op for op in COMPARISONS}
    true_false = ("1", "0")
    id_pattern = _ID
    id_refusal = "{field} takes a Kommo id (digits) in quotes"

    def instant(self, value: datetime) -> Scalar:
        return int(value.timestamp())

    def day(self, value: date) -> Scalar:
        return int(datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp())

    def number(self, value: int | float) -> Scalar:
        return value

    def null(self, target: Target, op: str) -> tuple[str, str]:
        raise QueryError("filter", "Kommo cannot filter by a missing value")

    def like(self, target: Target, op: str, text: str) -> tuple[str, str]:
        raise QueryError("filter", f"Kommo cannot filter by {op} (eq on names only)")

    def compare(self, target: Target, operator: str, literal: Scalar) -> tuple[str, str]:
        column, name = target.column, self.entity.object
        if operator == "eq" and (self.is_id(target) or target.column == "id"):
            return f"filter[{column}]", str(literal)
        if operator == "eq" and column == "name" and name in NAMED:
            return "filter[name]", str(literal)
        if column in RANGES.get(name, DEFAULT_RANGES[1:]) and isinstance(literal, int):
            bound = {"ge": ("from", 0), "gt": ("from", 1), "le": ("to", 0), "lt": ("to", -1)}
            if operator in bound:
                side, shift = bound[operator]
                return f"filter[{column}][{side}]", str(literal + shift)
        ranges = " and ".join(RANGES.get(name, DEFAULT_RANGES[1:]))
        said = f"ids and relations eq, name eq, {ranges} ranges"
        raise QueryError("filter", f"Kommo filters {self.entity.entity} records by {said} only")


class AmoRecords(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.objects_mapped = {e.object: e for e in self.platform.entities.values()}

    def _url(self, access: Access, *parts: str) -> URL:
        return access.instance_url.with_path(API + "/".join(parts))

    def _record_url(self, access: Access, name: str, record_id: str) -> tuple[URL, str]:
        """A record's URL and the list holding it (a note's: its parent type's)."""
        found = _located(name, record_id) if name in self.objects_mapped else None
        if found is None:
            raise EntityNotFound(f"Kommo has no {name[:40]} {record_id[:40]!r}")
        return self._url(access, *found), found[0]

    def _pager(self, name: str, path: str = "") -> Pager:
        return Pager(self, self.platform.paging.of(name), _row_of(path))

    def _lists(
        self, entity: EntityMap, conditions: Sequence[Condition]
    ) -> tuple[list[str], list[Condition]]:
        """The lists a query reads (notes: each type's, or the parent's it names) and the rest."""
        if entity.object != "notes":
            return [entity.object], list(conditions)
        lists, rest = {p: f"{p}/notes" for p in NOTED}, []
        for condition in conditions:
            column = entity.filter_column("filter", condition.field)
            named = _located("notes", str(condition.value)) if column == "id" else None
            if condition.op != "eq" or not (named or column.startswith(PARENT)):
                rest.append(condition)
            elif named:  # the type's list only, and Kommo's id
                rest.append(replace(condition, value=named[1]))
                lists = {p: path for p, path in lists.items() if f"{p}/notes" == named[0]}
            else:
                ((_, parent_id),) = Filters(entity).terms([condition])  # a Kommo id, checked
                parent = column[len(PARENT) :]
                path = f"{parent}/{parent_id}/notes"
                lists = {parent: path} if lists.get(parent) in (f"{parent}/notes", path) else {}
        return list(lists.values()), rest

    # ---- the catalogue ----------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        return [await self.describe(access, name) for name in self.objects_mapped]

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        """The mapped fields (Kommo describes only its custom fields) and the custom fields of
        ``/api/v4/<entity>/custom_fields``."""
        entity = self.objects_mapped.get(name)
        if entity is None:
            raise EntityNotFound(f"Kommo has no object {name[:64]!r}")
        methods, fixed = entity.methods, (entity.id, "created_at", "updated_at")
        writable = "create" in methods or "update" in methods
        fields = []
        for column in entity.native_columns():
            unified, ok = entity.unified_name(column), writable and column not in fixed
            kind = NATIVE_KINDS.get(column) or entity.kind(unified)
            fields.append(FieldInfo(column, unified, kind, column, False, ok, ok))
        url = self._url(access, name, "custom_fields")
        for spec in await self._pager("custom_fields").whole(access, url) if name in CUSTOM else ():
            kind = _CUSTOM_KINDS.get(str(spec.get("type")), "string")
            choices = [str(e.get("value")) for e in spec.get("enums") or () if isinstance(e, dict)]
            info = FieldInfo(f"cf_{spec.get('id')}", str(spec.get("name")), kind, "custom")
            fields.append(replace(info, custom=True, enum=tuple(choices)))
        label = entity.entity.capitalize()
        known = ObjectInfo(name, label, label + "s", False, True, writable, writable, False)
        return replace(known, fields=tuple(fields), id_field="id")

    # ---- reading ----------------------------------------------------------------------------

    async def _users(self, access: Access) -> list[dict[str, Any]]:
        return await self._pager("users").whole(access, self._url(access, "users"), what="users")

    def _query(
        self, entity: EntityMap, conditions: Sequence[Condition], sort: Sequence[SortKey]
    ) -> dict[str, str]:
        query = dict(Filters(entity).terms(conditions))
        if sort:
            column = entity.filter_column("sort", sort[0].field)
            orders = ORDERS.get(entity.object, DEFAULT_ORDERS)
            if len(sort) > 1 or column not in orders:
                known = [entity.unified_name(c) for c in orders]
                raise QueryError("sort", f"Kommo sorts by one of: {known}")
            query[f"order[{column}]"] = "desc" if sort[0].descending else "asc"
        return query

    async def _found(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition]
    ) -> list[dict[str, Any]] | None:
        """Where a condition is ``eq`` on half a contact's name (Kommo's filter[name] takes
        whole names only): the contacts Kommo's search (``query``, any filled field) finds for
        its text, read whole; None for any other list."""
        halves = [
            c.value for c in conditions if entity.fields.get(c.field) in HALVES and c.op == "eq"
        ]
        text = next((t for t in halves if isinstance(t, str)), None)
        if text is None or entity.object != "contacts":
            return None
        url = self._url(access, entity.object).with_query(query=text)
        return await self._pager(entity.object).whole(access, url, what="contacts found")

    async def list_page(
        self,
        access: Access,
        entity: EntityMap,
        columns: Sequence[str],
        *,
        conditions: Sequence[Condition] = (),
        sort: Sequence[SortKey] = (),
        page: int = 1,
        page_size: int = 25,
    ) -> list[dict[str, Any]]:
        name = entity.object
        if name == "users":
            rows = local.select(await self._users(access), entity, conditions, sort)
            return local.page_of(rows, page, page_size)
        found = await self._found(access, entity, conditions)
        if found is not None:  # filtered and sorted here, by a sort Kommo's lists take
            self._query(entity, (), sort)
            return local.page_of(local.select(found, entity, conditions, sort), page, page_size)
        paths, rest = self._lists(entity, conditions)
        order = sort or (SortKey("id"),)  # merged lists need one order: by id, unless asked
        urls = {p: self._url(access, p).with_query(self._query(entity, rest, order)) for p in paths}
        fetches = [self._pager(name, path).fetch(access, url) for path, url in urls.items()]
        column = entity.filter_column("sort", order[0].field)
        fetch = merged(fetches, _key(column), order[0].descending)
        key = CursorWalks.key(access, *map(str, urls.values()))
        return await self.walks.page(key, (page - 1) * page_size, page_size, fetch, MAX_COLD_OFFSET)

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        name = entity.object
        if name == "users":
            return len(local.select(await self._users(access), entity, conditions))
        found = await self._found(access, entity, conditions)
        if found is not None:
            return len(local.select(found, entity, conditions))
        paths, rest = self._lists(entity, conditions)
        query, total, what = self._query(entity, rest, ()), 0, f"{entity.entity} records"
        for path in paths:
            url = self._url(access, path).with_query(query)
            total += await self._pager(name, path).count(access, url, MAX_COUNT - total, what)
        return total

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        url, path = self._record_url(access, entity.object, record_id)
        answer = await self.json_call(access, "GET", url)
        if answer is None:  # Kommo answers 204, no body, for a record it has not
            raise EntityNotFound(f"Kommo has no {entity.object} {record_id!r}")
        return _row_of(path)(answer)

    # ---- writing ----------------------------------------------------------------------------

    async def _write(
        self, access: Access, method: str, path: str, bodies: list[dict[str, Any]]
    ) -> list[ItemResult]:
        """One array POST or PATCH to ``path``; Kommo answers each record in order, or none."""
        answer = await self.json_call(access, method, self._url(access, path), body=bodies)
        done = select(answer, "_embedded." + path.rsplit("/", 1)[-1])  # notes: _embedded.notes
        if not done or not isinstance(done[0], list) or len(done[0]) != len(bodies):
            raise CrmUnavailable("Kommo answered a batch with the wrong results")
        return [ItemResult(str(_row_of(path)(record)["id"])) for record in done[0]]

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        if name not in self.objects_mapped:
            raise EntityNotFound(f"Kommo has no object {name[:64]!r}")
        path = _parent_of(values) if name == "notes" else name
        made = await self._write(access, "POST", path, [native_body(name, values)])
        return str(made[0].id)

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        url, path = self._record_url(access, name, record_id)
        _kept(path, values)
        await self.json_call(access, "PATCH", url, body=native_body(name, values))

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        def send(to: str, part: list[Mapping[str, Any]]) -> Awaitable[list[ItemResult]]:
            return self._write(access, "POST", to, [native_body(name, v) for v in part])

        path = _parent_of if name == "notes" else lambda values: name  # notes: their parent's
        return await base.grouped(list(items), self.platform.bulk.size, path, send, lambda _: None)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        """Each to its list (a note's: its type's); an id no record can have is never sent."""
        located = {i: found for i, _ in items if (found := _located(name, i))}

        def path(item: tuple[str, Mapping[str, Any]]) -> str:
            if item[0] not in located:
                raise EntityNotFound(f"{name} {item[0][:40]!r} not found")
            _kept(located[item[0]][0], item[1])
            return located[item[0]][0]

        def send(to: str, part: list[tuple[str, Mapping[str, Any]]]) -> Awaitable[list[ItemResult]]:
            bodies = [{**native_body(name, v), "id": int(located[i][1])} for i, v in part]
            return self._write(access, "PATCH", to, bodies)

        return await base.grouped(list(items), self.platform.bulk.size, path, send, lambda i: i[0])

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to ``/api/v4/`` (``contacts?limit=5``), or absolute under /api/."""
        return base.passthrough_on(access, path, base=API, root="/api/")


class AmoConnector(Connector):
    name = "amocrm"
    records_type = AmoRecords
