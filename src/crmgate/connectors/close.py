"""Close (close.com): the code its descriptor (platforms/CloseIO.toml) cannot say.

Records are flattened for the entity maps: a contact's ``emails`` and ``phones`` as
``email_<type>`` and ``phone_<type>`` (the first of each type; writes send the lists again), an
opportunity's ``value`` in units (Close keeps cents). Custom fields keep Close's keys,
``custom.cf_...``, described by ``/custom_field/<object>/``. Costs in Close calls:

- Leads (accounts) and contacts filter and sort through the advanced filtering API (``POST
  /data/search/``, 200 records a call): ``eq``/``ne`` (exact text; a term on ids and relations),
  ``contains`` (a phrase), ``startswith`` (the beginning of a word: Close's), number ranges,
  ``ge``/``lt`` on dates, ``eq null``/``ne null``; several sort keys. A count is one call.
- Other objects list with ``_skip``/``_limit`` (100 a call) and filter by what their lists take:
  ``relation.<x> eq '<id>'`` and ``created_at`` ranges; opportunities and tasks sort by one key
  of ``_order_by``, activities come newest first. Counting them walks the list.
- Pages go through ``CursorWalks``: the page after the last one read costs at most one call.
  Users are read whole and filtered in crmgate. Bulk: one call per item.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any, ClassVar

from yarl import URL

from crmgate.connectors import base, lists, local, shapes
from crmgate.connectors.base import Access, Connector, CursorWalks, Records
from crmgate.connectors.catalogue import Platform, TypedList
from crmgate.connectors.dialect import Dialect, Scalar, Target
from crmgate.connectors.errors import CrmUnavailable, EntityNotFound
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.outbound import Outbound
from crmgate.query import Condition, QueryError, SortKey

API = "/api/v1/"
SEARCHABLE = ("lead", "contact")  # the advanced filtering API's objects
CUSTOM = ("lead", "contact", "opportunity")  # those with /custom_field/<object>/
MAX_COLD_OFFSET = 10_000
MAX_COUNT = 10_000
# What each list takes as its own query parameter, for `eq` (relations) ...
PARAMETERS = {
    "contact": ("lead_id",),
    "opportunity": ("lead_id", "contact_id", "user_id", "status_id"),
    "task": ("lead_id", "assigned_to"),
    **{
        f"activity/{kind}": ("lead_id", "contact_id", "user_id")
        for kind in ("note", "call", "meeting")
    },
}
# ... and what it sorts by (`_order_by`, one key, -key descending)
ORDER_BY = {
    "opportunity": ("date_created", "date_updated", "value", "confidence", "date_won"),
    "task": ("date", "date_created"),
}
RANGES = {"gt": "gt", "ge": "gte", "lt": "lt", "le": "lte"}
NATIVE_KINDS = {"date_won": "date", "value": "number", "confidence": "integer"}
_CUSTOM_KINDS = {"number": "number", "date": "date", "datetime": "date-time"}
_ID = re.compile(r"^[A-Za-z0-9_]{1,100}$")


def flatten(typed: Sequence[TypedList], name: str, record: Any) -> dict[str, Any]:
    """One Close record as the flat columns the entity maps name (``typed``: the descriptor's
    typed lists, the first of each type shown)."""
    record = shapes.obj(record, "Close", "a record")
    shapes.text(record.get("id"), "Close", "a record")
    row = lists.read(typed, record)
    if name == "opportunity" and isinstance(row.get("value"), (int, float)):
        row["value"] = row["value"] / 100
    return row


def native_body(typed: Sequence[TypedList], name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat columns as Close's body: the typed lists again, an amount in cents."""
    body = lists.write(typed, values)
    if name == "opportunity" and isinstance(body.get("value"), (int, float)):
        body["value"] = round(body["value"] * 100)
    return body


class SearchConditions(Dialect[dict[str, Any]]):
    """Conditions as the advanced filtering API's ``field_condition`` queries: exact text, a
    phrase or the beginning of words, terms on ids and relations, number and moment ranges."""

    crm = "Close"
    operators: ClassVar[Mapping[str, str]] = {"eq": "eq", "ne": "ne", **RANGES}
    true_false = (True, False)
    id_pattern = _ID
    id_refusal = "{field} takes a Close id in quotes"

    def number(self, value: int | float) -> Scalar:
        return value

    def _condition(self, target: Target, found: dict[str, Any], negate: bool) -> dict[str, Any]:
        field = _search_field(self.entity, target.column)
        return {"type": "field_condition", "field": field, "condition": found, "negate": negate}

    def null(self, target: Target, op: str) -> dict[str, Any]:
        return self._condition(target, {"type": "exists"}, negate=op == "eq")

    def like(self, target: Target, op: str, text: str) -> dict[str, Any]:
        mode = "phrase" if op == "contains" else "beginning_of_words"  # words: Close's
        return self._condition(target, {"type": "text", "mode": mode, "value": text}, False)

    def compare(self, target: Target, operator: str, literal: Scalar) -> dict[str, Any]:
        kind, exact, negate = target.kind, operator in ("eq", "ne"), operator == "ne"
        if self.is_id(target) and exact:
            return self._condition(target, {"type": "term", "values": [literal]}, negate)
        if kind in ("number", "integer") and not self.is_id(target):
            amount = literal * 100 if target.column == "value" else literal  # in cents
            bounds = {"gte": amount, "lte": amount} if exact else {operator: amount}
            return self._condition(target, {"type": "number_range", **bounds}, negate)
        if kind in ("date", "date-time") and operator in ("gte", "lt"):
            which = "on_or_after" if operator == "gte" else "before"
            moment = {"type": "fixed_utc", "value": literal}
            return self._condition(target, {"type": "moment_range", which: moment}, False)
        if kind == "boolean" and exact:
            return self._condition(target, {"type": "boolean", "value": literal}, negate)
        if kind == "string" and exact and not self.is_id(target):
            found = {"type": "text", "mode": "exact_value", "value": literal}
            return self._condition(target, found, negate)
        raise QueryError(
            "filter",
            f"Close cannot filter {target.field} that way (ids: eq and ne; dates: ge and lt)",
        )


def _search_field(entity: EntityMap, column: str) -> dict[str, Any]:
    if column.startswith("custom."):
        return {"type": "custom_field", "custom_field_id": column.removeprefix("custom.")}
    return {"type": "regular_field", "object_type": entity.object, "field_name": _whole(column)}


def _whole(column: str) -> str:
    """The Close field behind a flat column: a typed list is searched and shown whole."""
    return column.split("_", 1)[0] + "s" if column.startswith(("email_", "phone_")) else column


def search_body(
    entity: EntityMap,
    columns: Sequence[str],
    conditions: Sequence[Condition] = (),
    sort: Sequence[SortKey] = (),
) -> dict[str, Any]:
    queries = [{"type": "object_type", "object_type": entity.object}]
    queries += SearchConditions(entity).terms(conditions)
    order = [
        {
            "direction": "desc" if key.descending else "asc",
            "field": _search_field(entity, entity.filter_column("sort", key.field)),
        }
        for key in sort
    ]
    fields = sorted({_whole(column) for column in columns} | {"id"})
    return {
        "query": {"type": "and", "queries": queries},
        "sort": order,
        "_fields": {entity.object: fields},
    }


class CloseConnector(Connector):
    name = "close"

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        super().__init__(platform, outbound)
        self.records = CloseRecords(self)


def _url(access: Access, *parts: str) -> URL:
    return access.instance_url.with_path(API + "/".join(parts) + "/")


class CloseRecords(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.objects_mapped = {e.object: e for e in self.platform.entities.values()}

    def _record_url(self, access: Access, name: str, record_id: str) -> URL:
        if name not in self.objects_mapped or not _ID.match(record_id):
            raise EntityNotFound(f"Close has no {name[:40]} {record_id[:40]!r}")
        return _url(access, name, record_id)

    def _pager(self, name: str, kind: str = "") -> Pager:
        return Pager(
            self, self.platform.paging.of(kind or name), partial(flatten, self.platform.lists, name)
        )

    # ---- the catalogue ----------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        return [await self.describe(access, name) for name in self.objects_mapped]

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        """The mapped fields (standard: Close has no describe of its own) and the custom
        fields of ``/custom_field/<object>/``."""
        entity = self.objects_mapped.get(name)
        if entity is None:
            raise EntityNotFound(f"Close has no object {name[:64]!r}")
        methods, fixed = entity.methods, (entity.id, "date_created", "date_updated")
        writable = "create" in methods or "update" in methods
        fields = []
        for column in entity.native_columns():
            unified, ok = entity.unified_name(column), writable and column not in fixed
            kind = NATIVE_KINDS.get(column) or entity.kind(unified)
            fields.append(FieldInfo(column, unified, kind, column, False, ok, ok))
        url, pager = _url(access, "custom_field", name), Pager(self, self.platform.paging)
        for spec in await pager.whole(access, url) if name in CUSTOM else ():
            kind, choices = _CUSTOM_KINDS.get(str(spec.get("type")), "string"), spec.get("choices")
            info = FieldInfo(f"custom.{spec.get('id')}", str(spec.get("name")), kind, "custom")
            fields.append(replace(info, custom=True, enum=tuple(map(str, choices or ()))))
        label, deletable = entity.entity.capitalize(), "delete" in methods
        known = ObjectInfo(name, label, label + "s", False, True, writable, writable, deletable)
        return replace(known, fields=tuple(fields), id_field="id")

    # ---- reading ----------------------------------------------------------------------------

    async def _users(self, access: Access) -> list[dict[str, Any]]:
        return await self._pager("user").whole(access, _url(access, "user"), what="users")

    def _query(
        self, entity: EntityMap, conditions: Sequence[Condition], sort: Sequence[SortKey]
    ) -> dict[str, str]:
        """A list's own query parameters for ``conditions`` and ``sort``; what it cannot take
        is refused, naming what it can."""
        name, query = entity.object, {}
        for condition in conditions:
            column = entity.filter_column("filter", condition.field)
            if column in PARAMETERS.get(name, ()) and condition.op == "eq" and condition.value:
                query[column] = str(condition.value)
            elif column == "date_created" and condition.op in RANGES and condition.value:
                query[f"date_created__{RANGES[condition.op]}"] = str(condition.value)
            else:
                said = "by relation.<entity> eq '<id>' and created_at gt, ge, lt or le only"
                raise QueryError("filter", f"Close filters {entity.entity} records {said}")
        if sort:
            column = entity.filter_column("sort", sort[0].field)
            if len(sort) > 1 or column not in ORDER_BY.get(name, ()):
                known = [entity.unified_name(c) for c in ORDER_BY.get(name, ())] or "none"
                raise QueryError("sort", f"Close sorts {entity.entity} records by: {known}")
            query["_order_by"] = ("-" if sort[0].descending else "") + column
        return query

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
        name, offset, search = entity.object, (page - 1) * page_size, _url(access, "data/search")
        if name == "user":
            rows = local.select(await self._users(access), entity, conditions, sort)
            return local.page_of(rows, page, page_size)
        if name in SEARCHABLE and (conditions or sort):
            body = search_body(entity, columns, conditions, sort)
            key = CursorWalks.key(access, "search", json.dumps(body, sort_keys=True))
            fetch = self._pager(name, "search").fetch(access, search, body=body)
        else:
            url = _url(access, name).with_query(self._query(entity, conditions, sort))
            key = CursorWalks.key(access, str(url))
            fetch = self._pager(name).fetch(access, url)
        return await self.walks.page(key, offset, page_size, fetch, MAX_COLD_OFFSET)

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        name = entity.object
        if name == "user":
            return len(local.select(await self._users(access), entity, conditions))
        if name in SEARCHABLE:
            body = {**search_body(entity, [entity.id], conditions), "include_counts": True}
            search = _url(access, "data/search")
            answer = await self.json_call(access, "POST", search, body={**body, "_limit": 1})
            total = ((answer or {}).get("count") or {}).get("total")
            if not isinstance(total, int):
                raise CrmUnavailable("Close answered a search without its count")
            return total
        url = _url(access, name).with_query(self._query(entity, conditions, ()))
        return await self._pager(name).count(access, url, MAX_COUNT, f"{entity.entity} records")

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        url = self._record_url(access, entity.object, record_id)
        return flatten(self.platform.lists, entity.object, await self.json_call(access, "GET", url))

    # ---- writing ----------------------------------------------------------------------------

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        if name not in self.objects_mapped:
            raise EntityNotFound(f"Close has no object {name[:64]!r}")
        made = await self.json_call(
            access, "POST", _url(access, name), body=native_body(self.platform.lists, name, values)
        )
        return str(flatten(self.platform.lists, name, made)["id"])

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        url = self._record_url(access, name, record_id)
        await self.json_call(
            access, "PUT", url, body=native_body(self.platform.lists, name, values)
        )

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        await self.json_call(access, "DELETE", self._record_url(access, name, record_id))

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to ``/api/v1/`` (``lead/?_limit=5``), or absolute under /api/."""
        return base.passthrough_on(access, path, base=API, root="/api/")
