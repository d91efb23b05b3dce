"""Pipedrive: the code its descriptor cannot say.

Which API: each object's ``api`` in the descriptor, v2 (``/api/v2/...``) wherever Pipedrive has
it: its v1 endpoints are deprecated (out of support since August 2026) and v2 costs half the
rate-limit tokens.

Records are flattened for the entity maps: ids and references as text, custom fields (40-char
keys) beside the standard ones (v2's object values flat, as v1 showed them: a monetary field's
amount and ``<key>_currency``, a range's ``<key>_until``, an address's text, multiple options
as ``"1,2"``; writes wrap them again by the field's type), a person's emails and phones as
``email_<label>`` and ``phone_<label>`` (the first of each label; others stay in ``native``),
an organization's address as v1's ``address``, ``address_locality``, ... and an activity's
primary participant as ``person_id``. A person's ``first_name``/``last_name`` are Pipedrive's
own split of its one ``name``: writes send ``name`` ("first last"; changing one half reads the
record first to keep the other). A record Pipedrive marked as deleted (kept 30 days:
``is_deleted``, v1 ``active_flag`` false) is not found.

Costs in Pipedrive calls:

- Filters: ``eq`` conditions on the id, the owner or a relation that a v2 list takes as its own
  query parameter (``ids``, ``owner_id``, ``org_id``, ``person_id``, ``deal_id``, ``lead_id``:
  each object has its documented set) cost nothing more. Anything else goes through
  Pipedrive's saved filters (``POST /v1/filters`` with the documented AND group and OR group,
  then ``filter_id=``): crmgate makes one per distinct condition set (named ``crmgate
  <digest>``, visible in Pipedrive's filter list with its values), finds it again by name after
  a restart (and uses it only if ``GET /v1/filters/{id}`` shows the same conditions: anyone may
  edit a filter), and keeps up to MAX_FILTERS ids per process; one it lets go of is deleted in
  Pipedrive (another process that still uses it makes it again on the 404, as after anyone's
  deletion: lists and counts share one forget-and-retry). A condition set's first use in a
  process costs the object's fields (to learn field ids, then cached for 5 minutes), one
  filter listing, one read per filter of that name and, the very first time, one creation.
  Filter values travel as JSON values, never as query text; ``%`` and ``_`` are refused in
  ``contains``/``startswith`` (Pipedrive's LIKE would read them as wildcards). Conditions are
  ANDed (at most 16); dates compare by day. Notes have no filters: they filter by their
  relations only (query parameters); users not at all. Activities of a type (task, call,
  meeting) always use a filter on ``type``.
- Pages: v2 lists page by cursor, 500 records a call, through ``CursorWalks``: the page after
  the last one read costs at most one call (most pages none); a first jump to page *p* of size
  *s* costs ceil(p*s/500) calls, refused past 10,000 records (read in order, or filter). v2 sorts
  by ``id``, ``created_at``, ``updated_at`` (activities also by their due date), one key; any
  other sort is refused (400, naming the keys): the deprecated v1 lists are not used. Leads and
  notes are v1 lists (they have no v2 one): one call for any page. Users: one call for all.
- Count: Pipedrive has no count endpoint: crmgate walks the list, ceil(n/500) calls, and
  refuses (400) past MAX_COUNT records rather than walk on.
- Bulk: Pipedrive has no batch API for these objects: one call per item, a result per item.
- Fields: the v1 ``*Fields`` endpoints, also for the v2 objects: saved filters name fields by
  their v1 field ids, which only those endpoints give.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import replace
from datetime import datetime
from functools import partial
from typing import Any, TypeVar

from cachetools import TTLCache
from yarl import URL

from crmgate.connectors import lists, local
from crmgate.connectors.base import Access, Connector, CursorWalks, Records, passthrough_on
from crmgate.connectors.catalogue import ObjectEntry, Platform, TypedList
from crmgate.connectors.dialect import Dialect, Scalar, Target
from crmgate.connectors.errors import CrmError, CrmUnavailable, EntityNotFound, NotValid
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.query import Condition, QueryError, SortKey, Typed

T = TypeVar("T")

MAX_COLD_OFFSET = 10_000
MAX_COUNT = 10_000  # count reads the list: 20 calls at most
MAX_CONDITIONS = 16
MAX_FILTERS = 256  # saved filters kept per process; one evicted is deleted in Pipedrive
FIELDS_LIFETIME = 300.0
# v1's dealFields and activityFields name the owner user_id; records (v2) name it owner_id
OWNER_IS_USER_ID = ("deals", "activities")
INTEGER_REFERENCES = frozenset(
    ("org_id", "person_id", "deal_id", "owner_id", "user_id", "stage_id", "organization_id")
)
READ_ONLY = frozenset(("id", "add_time", "update_time", "user_id", "creator_user_id"))
# v2's custom field objects with a second part beside "value", flat as <key>_<part>
SECOND_PART = {"monetary": "currency", "daterange": "until", "timerange": "until"}
LINE = ("object", "field_id", "operator", "value", "extra_value")  # a filter condition's keys
_CUSTOM = re.compile(r"^[0-9a-f]{40}$")
_NUMERIC_ID = re.compile(r"^[0-9]{1,18}$")
_LEAD_ID = re.compile(r"^[0-9a-fA-F-]{36}$")


# ---- native records <-> the entity maps' flat columns ---------------------------------------


def _time(value: Any) -> Any:
    """v1's ``2024-01-31 10:00:00`` (UTC) as ISO 8601; v2's RFC 3339 as it is."""
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", value):
        return value.replace(" ", "T") + "Z"
    return value


def _reference(value: Any) -> str | None:
    if isinstance(value, dict):  # v1 expands references: {"value": 12, "name": ...}
        value = value.get("value", value.get("id"))
    return None if value in (None, "", 0) else str(value)


def _nested(entry: ObjectEntry) -> dict[str, tuple[str, str]]:
    """The flat columns of the object's nested values (the descriptor's ``parts``): column ->
    (key, part): ``address`` is the address's value, ``address_locality`` its locality."""
    return {
        column: (key, part)
        for key, parts in entry.parts.items()
        for part, column in [("value", key), *((p, f"{key}_{p}") for p in parts)]
    }


def flatten(platform: Platform, collection: str, record: Any) -> dict[str, Any]:
    """One Pipedrive record (v1 or v2 shape) as the flat columns the entity maps name."""
    if not isinstance(record, dict) or "id" not in record:
        raise CrmUnavailable("Pipedrive answered a record of an unexpected shape")
    flat = lists.read(platform.lists, record)
    custom = flat.pop("custom_fields", None)
    for key, value in custom.items() if isinstance(custom, dict) else ():
        flat.update(_custom_columns(str(key), value))
    flat["id"] = str(record["id"])
    for key in flat.keys() & {"add_time", "update_time", "created", "modified"}:
        flat[key] = _time(flat[key])
    for key in flat.keys() & (INTEGER_REFERENCES | {"lead_id"}):
        flat[key] = _reference(flat[key])
    entry = platform.objects.get(collection)
    for column, (key, part) in _nested(entry).items() if entry else ():
        if isinstance(record.get(key), dict):
            flat[column] = record[key].get(part)
    if "participants" in flat:  # an activity's primary participant is its person_id
        flat["person_id"] = next(
            (
                _reference(p.get("person_id"))
                for p in flat.pop("participants") or ()
                if isinstance(p, dict) and p.get("primary")
            ),
            None,
        )
    if collection == "users":
        flat["is_admin"] = bool(record.get("is_admin"))
    return flat


def _custom_columns(key: str, value: Any) -> dict[str, Any]:
    """A v2 custom field value as flat columns, as v1 showed them (the v2 migration guide):
    a monetary ``{"value", "currency"}`` as ``key`` and ``key_currency``, a date or time range
    ``{"value", "until"}`` as ``key`` and ``key_until``, an address ``{"value", ...}`` as its
    text, multiple options ``[1, 2]`` as ``"1,2"``."""
    if isinstance(value, dict):
        flat = {key: value.get("value")}
        for part in {"currency", "until"} & set(value):
            flat[f"{key}_{part}"] = value.get(part)
        return flat
    if isinstance(value, list):
        return {key: ",".join(str(v) for v in value) or None}
    return {key: value}


def _custom_value(column: str, field_type: str | None, value: Any, part: Any) -> Any:
    """A flat custom column written as v2 wants its field; ``part`` is a monetary field's
    currency or a range's end (``<key>_currency``, ``<key>_until``)."""
    if value is None:
        return None
    if field_type == "monetary" and (
        isinstance(value, bool) or not isinstance(value, (int, float))
    ):
        raise NotValid(f"{column}: a number", (column,))
    if field_type == "monetary" and (not isinstance(part, str) or not part):
        said = f"give {column}_currency too (a Pipedrive amount has its currency)"
        raise NotValid(f"{column}: {said}", (column,))
    if field_type in SECOND_PART:
        return {"value": value, SECOND_PART[field_type]: part}
    if field_type == "set":
        parts = value if isinstance(value, list) else str(value).split(",")
        if not all(str(p).strip().isdigit() for p in parts):
            raise NotValid(f"{column}: option ids, e.g. '1,3'", (column,))
        return [int(str(p).strip()) for p in parts]
    if field_type == "enum" and isinstance(value, str) and value.isdigit():
        return int(value)
    if field_type == "address":
        return {"value": str(value)}
    return value


def _integer(column: str, value: Any) -> Any:
    if value is None or isinstance(value, int):
        return value
    if isinstance(value, str) and _NUMERIC_ID.match(value):
        return int(value)
    raise NotValid(f"{column}: Pipedrive ids are whole numbers", (column,))


def _subcolumn(column: str) -> tuple[str, str] | None:
    """``<custom key>_currency`` or ``_until`` as (key, part)."""
    key, _, part = column.rpartition("_")
    return (key, part) if part in ("currency", "until") and _CUSTOM.match(key) else None


def needs_current(collection: str, values: Mapping[str, Any], types: Mapping[str, str]) -> bool:
    """Whether a partial update must read the record first: one half of a person's name (the
    other half is kept), or an amount without its currency."""
    if collection == "persons" and ("first_name" in values) != ("last_name" in values):
        return True
    for column in values:
        sub = _subcolumn(column)
        if sub is not None and sub[0] not in values:
            return True  # a currency or range end without its value
        part = SECOND_PART.get(types.get(column) or "")
        if part and values.get(column) is not None and f"{column}_{part}" not in values:
            return True
    return False


def native_body(
    platform: Platform,
    collection: str,
    values: Mapping[str, Any],
    types: Mapping[str, str],
    current: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The flat columns of a write as Pipedrive's body (v2, or v1 for leads and notes).
    ``types``: the custom fields' Pipedrive types (v2 wraps some values); ``current``: the
    record as it is, for what a partial update keeps (see ``needs_current``)."""
    entry = platform.objects[collection]
    v2, nested, current = entry.api == "v2", _nested(entry), current or {}
    values = dict(values)
    if collection == "persons" and ("first_name" in values or "last_name" in values):
        # Pipedrive writes a person's one name and splits it into first and last itself
        first = values.pop("first_name", current.get("first_name"))
        last = values.pop("last_name", current.get("last_name"))
        values["name"] = " ".join(str(p).strip() for p in (first, last) if p not in (None, ""))
    body: dict[str, Any] = {}
    custom: dict[str, Any] = {}
    parts: dict[str, dict[str, Any]] = {}  # <custom key>_currency and _until, by key
    objects: dict[str, dict[str, Any]] = {}  # the nested values' parts, by key
    for column in list(values):
        sub = _subcolumn(column) if v2 else None
        if sub is not None:
            parts.setdefault(sub[0], {})[sub[1]] = values.pop(column)
        elif column in nested:
            key, inner = nested[column]
            objects.setdefault(key, {})[inner] = values.pop(column)
    for column, value in lists.write(platform.lists, values).items():
        if collection == "activities" and column == "person_id":
            person = _integer(column, value)
            body["participants"] = [{"person_id": person, "primary": True}] if person else []
        elif column in INTEGER_REFERENCES:
            body[column] = _integer(column, value)
        elif column == "lead_id" and value is not None and not _LEAD_ID.match(str(value)):
            raise NotValid("lead_id: not a Pipedrive lead id", (column,))
        elif _CUSTOM.match(column) and v2:
            name = SECOND_PART.get(types.get(column) or "", "currency")
            part = parts.get(column, {}).get(name, current.get(f"{column}_{name}"))
            custom[column] = _custom_value(column, types.get(column), value, part)
        else:
            body[column] = value
    for key, given in parts.items():
        if key not in values and current.get(key) is not None:  # a new currency or range end
            part = given.get("currency", given.get("until"))
            custom[key] = _custom_value(key, types.get(key), current[key], part)
    for key, given in objects.items():  # an address's parts, its text made of them if not given
        given = {k: v for k, v in given.items() if v not in (None, "")}
        body[key] = given or None
        if given and "value" not in given:
            given["value"] = ", ".join(str(v) for v in given.values())
    if custom:
        body["custom_fields"] = custom
    return body


# ---- filters -----------------------------------------------------------------------------------


class FilterConditions(Dialect[dict[str, Any]]):
    """The conditions of a saved filter on one object, each field named by its Pipedrive id
    (``field_id`` of a column). Values travel as JSON values, never as query text."""

    crm = "Pipedrive"
    max_terms = MAX_CONDITIONS
    true_false = ("1", "0")
    like_refuses = "%_\\$"
    like_refusal = "Pipedrive's {op} cannot match %, _, \\ or $ (they are wildcards)"
    id_pattern = re.compile(f"{_NUMERIC_ID.pattern}|{_LEAD_ID.pattern}")
    id_refusal = "{field} takes a Pipedrive id in quotes"

    def __init__(self, entity: EntityMap, singular: str, field_id: Callable[[str], Any]) -> None:
        super().__init__(entity)
        self.singular, self.field_id = singular, field_id

    def name(self, field: str, column: str) -> str:
        found = self.field_id(column)
        if not isinstance(found, (int, str)):
            raise QueryError("filter", f"Pipedrive cannot filter {self.entity.entity} by {field}")
        return str(found)

    def literal(self, target: Target, typed: Typed) -> Scalar:
        """Dates compare by day (a date-time must be midnight)."""
        if isinstance(typed, datetime):
            if (typed.hour, typed.minute, typed.second) != (0, 0, 0):
                message = f"{target.field}: Pipedrive compares dates by day (no time)"
                raise QueryError("filter", message)
            typed = typed.date()
        return super().literal(target, typed)

    def _line(self, target: Target, operator: str, value: Any, extra: Any = None) -> dict[str, Any]:
        return dict(zip(LINE, (self.singular, target.name, operator, value, extra), strict=True))

    def compare(self, target: Target, operator: str, literal: Scalar) -> dict[str, Any]:
        dated = target.kind in ("date", "date-time")
        return self._line(target, operator, literal, "exact_date" if dated else None)

    def null(self, target: Target, op: str) -> dict[str, Any]:
        return self._line(target, "IS NULL" if op == "eq" else "IS NOT NULL", None)

    def like(self, target: Target, op: str, text: str) -> dict[str, Any]:
        return self._line(target, "LIKE '%$%'" if op == "contains" else "LIKE '$%'", text)


class PipedriveRecords(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        # (instance, token digest, collection) -> (fetched at, field key -> Pipedrive field)
        self._fields: TTLCache[tuple[str, ...], dict[str, Any]] = TTLCache(256, FIELDS_LIFETIME)
        # (instance, token digest, filter name) -> (filter id, the access that made or found
        # it: to delete it when it leaves this bounded cache)
        self._filter_ids: OrderedDict[tuple[str, ...], tuple[int, Access]] = OrderedDict()

    # ---- calls --------------------------------------------------------------------------------

    async def call_json(
        self, access: Access, method: str, url: URL, body: Any = None
    ) -> dict[str, Any]:
        """One authenticated call; Pipedrive's ``{"success": true, "data": ...}`` envelope."""
        answer = await self.json_call(access, method, url, body=body)
        if not isinstance(answer, dict) or answer.get("success") is not True:
            raise CrmUnavailable("Pipedrive answered an unexpected envelope")
        return answer

    def _url(self, access: Access, collection: str, record_id: str | None = None) -> URL:
        entry = self._object(collection)
        base = access.instance_url / ("api/v2" if entry.api == "v2" else "v1") / collection
        if record_id is None:
            return base
        valid = _LEAD_ID if collection == "leads" else _NUMERIC_ID
        if not valid.match(record_id):
            raise EntityNotFound(f"{entry.label} {record_id[:40]!r} not found")
        return base / record_id

    def _object(self, name: str) -> ObjectEntry:
        entry = self.platform.objects.get(name)
        if entry is None:
            raise EntityNotFound(f"Pipedrive has no object {name[:64]!r}")
        return entry

    def _v2(self, name: str) -> bool:
        return self._object(name).api == "v2"

    # ---- the catalogue ------------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        return [
            replace(spec.info(name, "id"), fields=())
            for name, spec in self.platform.objects.items()
        ]

    async def _field_map(
        self, access: Access, collection: str, fresh: bool = False
    ) -> dict[str, dict[str, Any]]:
        key = CursorWalks.key(access, collection)
        kept = self._fields.get(key)
        if kept is not None and not fresh:
            return kept
        url = access.instance_url / "v1" / self._object(collection).fields_at
        specs = await self._pager("v1").whole(access, url, what="fields")
        found = {spec["key"]: spec for spec in specs if isinstance(spec.get("key"), str)}
        self._fields[key] = found
        return found

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        entry = self._object(name)
        known = entry.info(name, "id")
        if name == "users":  # Pipedrive does not describe users: the descriptor does
            return known
        specs = list((await self._field_map(access, name, fresh=True)).values())
        fields = self.read_fields(specs, partial(_field_infos, name, entry, self.platform.lists))
        return replace(known, fields=tuple(fields))

    async def _custom_types(self, access: Access, collection: str) -> dict[str, str]:
        """The Pipedrive type of each custom field of a v2 object (v2 wraps some values)."""
        if not self._v2(collection):
            return {}
        specs = await self._field_map(access, collection)
        return {
            key: str(spec.get("field_type"))
            for key, spec in specs.items()
            if _CUSTOM.match(key) and spec.get("field_type")
        }

    # ---- filters -----------------------------------------------------------------------------

    def _spec_key(self, collection: str, column: str) -> str:
        """The field key Pipedrive's *Fields (and so its filters) name ``column`` by."""
        if column == "owner_id" and collection in OWNER_IS_USER_ID:
            return "user_id"
        listed = lists.of_column(self.platform.lists, column)
        nested = _nested(self._object(collection)).get(column)
        return listed.prefix if listed else nested[0] if nested else column

    def _parameters(
        self, entity: EntityMap, conditions: Sequence[Condition]
    ) -> dict[str, str] | None:
        """The v2 list's own query parameters for ``conditions`` when they are enough (ids,
        owner and relations, each ``eq`` once): no saved filter. None: a filter is needed."""
        if not conditions and not entity.match:
            return {}
        known = self._object(entity.object).parameters
        if not known or entity.match:
            return None
        query: dict[str, str] = {}
        for condition in conditions:
            name = known.get(entity.filter_column("filter", condition.field))
            value = condition.value
            valid = _LEAD_ID if name == "lead_id" else _NUMERIC_ID
            if (
                name is None
                or name in query
                or condition.op != "eq"
                or not isinstance(value, str)
                or not valid.match(value)
            ):
                return None
            query[name] = value
        return query

    async def filter_id(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition]
    ) -> int:
        """The id of a Pipedrive filter for ``conditions`` and the map's match, made once and
        reused (see the module's docstring). One found by its name is used only if its
        conditions are these (anyone may edit a filter)."""
        entry = self._object(entity.object)
        kind = entry.filter_type
        if not kind:  # notes: by their relations' query parameters only
            said = " or ".join(f"{entity.unified_name(c)} eq '<id>'" for c in entry.parameters)
            raise QueryError("filter", f"Pipedrive filters {entity.entity} records by {said}")
        specs = await self._field_map(access, entity.object)

        def field_id(column: str) -> Any:
            return specs.get(self._spec_key(entity.object, column), {}).get("id")

        lines = FilterConditions(entity, entry.singular, field_id).terms(conditions)
        # the minimum structure Pipedrive documents: an AND group and an OR group
        tree = {
            "glue": "and",
            "conditions": [
                {"glue": "and", "conditions": lines},
                {"glue": "or", "conditions": []},
            ],
        }
        text = json.dumps(tree, sort_keys=True)
        name = "crmgate " + hashlib.sha256(f"{kind}:{text}".encode()).hexdigest()[:20]
        key = CursorWalks.key(access, name)
        known = self._filter_ids.get(key)
        if known is not None:
            self._filter_ids.move_to_end(key)
            return known[0]
        url = access.instance_url / "v1/filters"
        listed = await self.call_json(access, "GET", url.with_query(type=kind))
        found: int | None = None
        for candidate in listed.get("data") or ():
            if not isinstance(candidate, dict) or candidate.get("name") != name:
                continue
            if not isinstance(candidate.get("id"), int):
                continue
            try:
                detail = await self.call_json(access, "GET", url / str(candidate["id"]))
            except EntityNotFound:
                continue
            if _same_conditions((detail.get("data") or {}).get("conditions"), tree):
                found = candidate["id"]
                break
        if found is None:
            made = await self.call_json(
                access, "POST", url, body={"name": name, "conditions": tree, "type": kind}
            )
            found = (made.get("data") or {}).get("id")
            if not isinstance(found, int):
                raise CrmUnavailable("Pipedrive answered a filter without its id")
        self._filter_ids[key] = (found, access)
        if len(self._filter_ids) > MAX_FILTERS:  # one in, the least recently used one out
            old, owner = self._filter_ids.popitem(last=False)[1]
            if all(kept[0] != old for kept in self._filter_ids.values()):
                # not to leave a filter (and the values in it) for each query ever made; one
                # gone already, or whose token has changed, stays in Pipedrive
                with suppress(CrmError):
                    await self.call_json(owner, "DELETE", owner.instance_url / f"v1/filters/{old}")
        return found

    def forget_filter(self, filter_id: int | None) -> None:
        """A filter Pipedrive no longer has (someone deleted it): made again next time."""
        for key, known in list(self._filter_ids.items()):
            if known[0] == filter_id:
                del self._filter_ids[key]

    async def _filtered(
        self,
        access: Access,
        entity: EntityMap,
        conditions: Sequence[Condition],
        work: Callable[[dict[str, str]], Awaitable[T]],
    ) -> T:
        """``work`` with the query parameters that select ``conditions``: the v2 list's own,
        or a saved filter's id. A filter someone deleted (404) is made again, once."""
        query = self._parameters(entity, conditions)
        if query is not None:
            return await work(query)
        filter_id = await self.filter_id(access, entity, conditions)
        try:
            return await work({"filter_id": str(filter_id)})
        except EntityNotFound:
            self.forget_filter(filter_id)
            filter_id = await self.filter_id(access, entity, conditions)
            return await work({"filter_id": str(filter_id)})

    # ---- reading ------------------------------------------------------------------------------

    def _v2_sort(self, entity: EntityMap, sort: Sequence[SortKey]) -> dict[str, str]:
        """v2's sort_by and sort_direction for ``sort``; what v2 cannot sort by is refused (the
        deprecated v1 lists are not used)."""
        allowed = self._object(entity.object).sorts
        if not sort:
            return {"sort_by": "id", "sort_direction": "asc"}
        column = entity.filter_column("sort", sort[0].field)
        if len(sort) > 1 or column not in allowed:
            names = ["id"] + [u for u, native in entity.fields.items() if native in allowed]
            raise QueryError(
                "sort",
                f"Pipedrive sorts {entity.entity} records by one of {', '.join(names)} "
                "(one key; -key for descending)",
            )
        return {"sort_by": column, "sort_direction": "desc" if sort[0].descending else "asc"}

    def _v1_sort(self, entity: EntityMap, sort: Sequence[SortKey]) -> dict[str, str]:
        parts = []
        for key in sort:
            column = entity.filter_column("sort", key.field)
            if column.startswith(("email_", "phone_", "address_")) or column == "participants":
                raise QueryError("sort", f"Pipedrive cannot sort by {key.field}")
            column = self._spec_key(entity.object, column)
            parts.append(f"{column} {'DESC' if key.descending else 'ASC'}")
        return {"sort": ", ".join(parts)}

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
        collection = entity.object
        offset = (page - 1) * page_size
        if collection == "users":  # one call for all; filtered, sorted and paged here
            rows = local.select(await self._users(access), entity, conditions, sort)
            return local.page_of(rows, page, page_size)
        v2 = self._v2(collection)
        order = (self._v2_sort if v2 else self._v1_sort)(entity, sort)  # refused before a call

        async def one_page(query: dict[str, str]) -> list[dict[str, Any]]:
            if not v2:
                return await self._v1_page(access, collection, query | order, offset, page_size)
            key = CursorWalks.key(access, collection, json.dumps(query | order, sort_keys=True))
            url = self._url(access, collection).with_query(query | order)
            fetch = self._pager("v2", collection).fetch(access, url)
            return await self.walks.page(key, offset, page_size, fetch, MAX_COLD_OFFSET)

        return await self._filtered(access, entity, conditions, one_page)

    async def _v1_page(
        self, access: Access, collection: str, query: Mapping[str, str], offset: int, size: int
    ) -> list[dict[str, Any]]:
        """One v1 page (``start``/``limit``): leads and notes, which have no v2 list."""
        sent = {k: v for k, v in query.items() if v}
        url = (access.instance_url / "v1" / collection).with_query(
            {**sent, "start": str(offset), "limit": str(size)}
        )
        answer = await self.call_json(access, "GET", url)
        return [flatten(self.platform, collection, r) for r in answer.get("data") or ()]

    def _pager(self, kind: str, collection: str = "") -> Pager:
        """v2 lists page by cursor, v1 lists by start and limit (the descriptor's paging)."""
        return Pager(
            self, self.platform.paging.of(kind), partial(flatten, self.platform, collection)
        )

    async def _users(self, access: Access) -> list[dict[str, Any]]:
        answer = await self.call_json(access, "GET", access.instance_url / "v1/users")
        return [flatten(self.platform, "users", u) for u in answer.get("data") or ()]

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        """Pipedrive has no count: the list walked, 500 records a call, up to MAX_COUNT."""
        collection = entity.object
        if collection == "users":
            return len(local.select(await self._users(access), entity, conditions))

        async def walk(query: dict[str, str]) -> int:
            url = self._url(access, collection).with_query(query)
            return await self._pager(self._object(collection).api).count(access, url, MAX_COUNT)

        return await self._filtered(access, entity, conditions, walk)

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        return await self._record(access, entity.object, record_id)

    async def _record(self, access: Access, collection: str, record_id: str) -> dict[str, Any]:
        """One record, flattened; a deleted one (kept by Pipedrive for 30 days: v2's
        ``is_deleted``, v1's ``active_flag`` false) is not found (a user's shows deactivation)."""
        answer = await self.call_json(access, "GET", self._url(access, collection, record_id))
        data = answer.get("data")
        if (
            collection != "users"
            and isinstance(data, dict)
            and (data.get("is_deleted") is True or data.get("active_flag") is False)
        ):
            raise EntityNotFound(f"{self._object(collection).label} {record_id[:40]!r} was deleted")
        return flatten(self.platform, collection, data)

    # ---- writing ------------------------------------------------------------------------------

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        types = await self._custom_types(access, name)
        body = native_body(self.platform, name, values, types)
        answer = await self.call_json(access, "POST", self._url(access, name), body=body)
        return str(flatten(self.platform, name, answer.get("data"))["id"])

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        method = "PATCH" if self._v2(name) or name == "leads" else "PUT"
        types = await self._custom_types(access, name)
        current = None
        if needs_current(name, values, types):  # what the change leaves, it keeps
            current = await self._record(access, name, record_id)
        body = native_body(self.platform, name, values, types, current)
        await self.call_json(access, method, self._url(access, name, record_id), body=body)

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        await self.call_json(access, "DELETE", self._url(access, name, record_id))

    # ---- passthrough --------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to the company's domain (``api/v2/persons?limit=5``,
        ``v1/leads``)."""
        return passthrough_on(access, path)


class PipedriveConnector(Connector):
    name = "pipedrive"
    records_type = PipedriveRecords


def _same_conditions(found: Any, wanted: Mapping[str, Any]) -> bool:
    """Whether a filter's conditions (as Pipedrive shows them: JSON text, values as text) are
    ``wanted``: the AND of its groups, each group's glue and lines."""

    def lines(tree: Any) -> list[Any] | None:
        try:
            tree = json.loads(tree) if isinstance(tree, str) else tree
            if tree.get("glue") != "and":
                return None
            return [
                (str(group.get("glue")), [_line(line) for line in group.get("conditions") or ()])
                for group in tree.get("conditions") or ()
            ]
        except (ValueError, AttributeError):  # not JSON, or not objects where they should be
            return None

    return lines(found) == lines(wanted)  # (``wanted`` is well formed)


def _line(line: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple("" if line.get(k) is None else str(line.get(k)) for k in LINE)


def _field_infos(
    collection: str,
    entry: ObjectEntry,
    typed: Sequence[TypedList],
    spec: Mapping[str, Any],
    read: FieldInfo,
) -> list[FieldInfo]:
    """One Pipedrive field (as the descriptor's ``[describe.fields]`` reads it) as the
    connector's flat columns (a person's email is email_work, email_home, ...)."""
    key, custom = read.name, read.custom
    if key == "user_id" and collection in OWNER_IS_USER_ID:
        key = "owner_id"
    writable = custom or key not in READ_ONLY
    kind = {"add_time": "date-time", "update_time": "date-time", "id": "string"}.get(key, read.kind)
    options = tuple(  # a custom option is written by its id, a standard one by its label
        str(o.get("id") if custom else o.get("label"))
        for o in spec.get("options") or ()
        if isinstance(o, dict)
    )

    def info(name: str, text: str, kind: str = kind) -> FieldInfo:
        return replace(
            read,
            name=name,
            label=text,
            kind=kind,
            createable=writable,
            updateable=writable,
            sortable=not name.startswith(("email_", "phone_", "address_")),
            enum=options,
        )

    label, listed = read.label, next((t for t in typed if t.prefix == key), None)
    if listed is not None:  # a typed list: a column per label
        return [info(f"{key}_{x}", f"{label} ({x})", "string") for x in listed.labels]
    if key in entry.parts:  # a nested value: its text, and its parts
        parts = [(part, f"{label} ({part.replace('_', ' ')})") for part in entry.parts[key]]
        return [info(key, label, "string")] + [info(f"{key}_{p}", t, "string") for p, t in parts]
    part = SECOND_PART.get(read.native_type) if custom else None
    if part is not None:  # v2's {"value", "currency"} or {"value", "until"}, as v1 flattened it
        return [
            info(key, label),
            info(f"{key}_{part}", f"{label} ({part})", "string" if part == "currency" else kind),
        ]
    return [info(key, label)]
