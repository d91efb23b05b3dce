"""Zoho CRM (REST API v8): the code its descriptor cannot say.

Every org lives in one data centre; its API host is the token answer's ``api_domain`` (the
credential's instance_url), and its tokens are refreshed by the accounts server of the same data
centre, chosen from the descriptor's ``regions`` (``oauth.regional``: never from a host an
answer names; an OAuth callback's ``accounts-server`` only where it is one of them). Calls
authenticate with ``Authorization: Zoho-oauthtoken <token>``.

Records are flat but for lookups ``{id, name}``, read as their id; a multi-module lookup
(``What_Id`` with ``$se_module``, a note's ``Parent_Id`` with its module) reads as one column
per module (``What_Id.Accounts``), and writes go back to Zoho's shape.

Lists, counts, filters and sorts: COQL (``POST /crm/v8/coql``, criteria grouped in pairs, values
quoted with doubled quotes, ``limit``/``offset`` up to 100,000 records). An unfiltered list
in id order walks the records API instead (``GET /crm/v8/{Module}``, 200 records a call,
``page_token`` past 2,000 records). Cost in Zoho calls: reading pages in order costs one call
per 200 records (a page of 100 costs a call every other page); a direct jump to a page costs one
call (the records API's ``page`` within the first 2,000 records, COQL up to 100,000); a filtered
or sorted page is one COQL call; deeper than 100,000 records a page is served only by a walk
read in order (else 400). Bulk: 100 records a call with per-record results.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime
from functools import partial
from typing import Any

from cachetools import LRUCache
from yarl import URL

from crmgate.connectors import batch, local, polymorphic, shapes
from crmgate.connectors.base import (
    Access,
    Connector,
    CursorWalks,
    Fetch,
    ItemResult,
    Records,
    passthrough_on,
)
from crmgate.connectors.catalogue import Polymorphic
from crmgate.connectors.dialect import Scalar, Target, TextDialect, pattern
from crmgate.connectors.errors import (
    CrmUnavailable,
    EntityNotFound,
    Refusal,
)
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.query import Condition, QueryError, SortKey, Typed

PAGE_LIMIT = 2000  # records the records API reaches with `page`
COQL_REACH = 100_000  # offset + limit of a COQL query
COQL_IN = 50  # values of a COQL `in`
FIELD_LIMIT = 50  # fields of a COQL select, and of the records API's `fields`
_RECORD_ID = re.compile(r"^[0-9]{1,20}$")


def _well_formed(record_id: str) -> bool:
    return _RECORD_ID.match(record_id) is not None


_MODULE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
_COLUMN = re.compile(r"^\$?[A-Za-z][A-Za-z0-9_]{0,99}$")
_LOOKUPS = ("lookup", "ownerlookup", "userlookup")


# ---- records ---------------------------------------------------------------------------------


def _flat(record: Any, module: str, poly: Mapping[str, Polymorphic]) -> dict[str, Any]:
    """A Zoho record as one flat native record for the entity maps (``poly``: the multi-module
    lookups, one column per module)."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), (str, int)):
        raise CrmUnavailable("Zoho CRM answered a record of an unexpected shape")
    flat: dict[str, Any] = {}
    for name, value in record.items():
        if name == "role" and module == "users" and isinstance(value, dict):
            flat[name] = value.get("name")
        elif isinstance(value, dict) and "id" in value:
            flat[name] = str(value["id"]) if value["id"] is not None else None
        else:
            flat[name] = value
    flat["id"] = str(record["id"])
    try:
        return flat | polymorphic.read(poly, record)
    except ValueError:
        raise CrmUnavailable("Zoho CRM answered a lookup of an unexpected shape") from None


def _one(results: list[ItemResult]) -> str:
    """The outcome of a one-record write: its id, or its refusal raised."""
    (result,) = results
    if result.error is not None:
        raise result.error
    return result.id or ""


def _data(answer: Any) -> list[dict[str, Any]]:
    """The records of a records API answer (None: 204, none)."""
    return shapes.rows(answer, "data", "Zoho CRM", "a list")


def _chunks(fields: list[str]) -> list[list[str]]:
    """Fields FIELD_LIMIT at a time (at least one chunk): what one COQL select or one records
    API call takes. The chunks of a record are merged before it is made flat (``_read``), so a
    multi-module lookup and its ``$se_module`` may be read apart."""
    return [fields[n : n + FIELD_LIMIT] for n in range(0, len(fields), FIELD_LIMIT)] or [[]]


def _zoho_datetime(value: str) -> str:
    """A date-time as Zoho takes it: ``yyyy-MM-ddTHH:mm:ss±HH:mm`` (no fraction, no Z)."""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value  # Zoho refuses it: 422 with the field
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.replace(microsecond=0).isoformat()


def _queryable(column: str) -> str:
    if not _COLUMN.match(column):
        raise QueryError("filter", f"{column[:60]!r} is not a field Zoho can query")
    return column


class Coql(TextDialect):
    """COQL's where and order by for one module; ``types`` are its fields' Zoho data types (a
    lookup takes a record id). Criteria are grouped in pairs, as COQL wants more than two."""

    crm = "Zoho"
    max_terms = 25
    like_refuses = "%"
    like_refusal = "Zoho's {op} cannot search for %"
    id_pattern = _RECORD_ID
    id_refusal = "{field} takes a Zoho record id"
    ascending, descending, then_by_id = " asc", " desc", " asc"

    def __init__(
        self, entity: EntityMap, types: Mapping[str, str], poly: Mapping[str, Polymorphic]
    ) -> None:
        super().__init__(entity)
        self.types, self.poly = types, poly

    def name(self, field: str, column: str) -> str:
        base, lookup, _ = polymorphic.split(self.poly, column)
        return base if lookup else _queryable(column)

    def is_id(self, target: Target) -> bool:
        return (
            target.column == self.entity.id
            or target.column in self.entity.relations.values()
            or self.types.get(target.name) in _LOOKUPS
        )

    def quote(self, text: str) -> str:
        """A quote is doubled, as Zoho documents (Kaizen #171, "FAQs on COQL API", Q3). A
        backslash is refused: Zoho does not document what it does inside a literal, so no
        reading of it may end the literal early."""
        if "\\" in text:
            raise QueryError("filter", "Zoho's queries cannot take a backslash in a text value")
        return super().quote(text)

    def literal(self, target: Target, typed: Typed) -> Scalar:
        if isinstance(typed, str) and any(ord(c) < 32 for c in typed):
            raise QueryError("filter", f"{target.field}: no control characters")
        return super().literal(target, typed)

    def instant(self, value: datetime) -> Scalar:
        return self.quote(_zoho_datetime(value.isoformat()))

    def day(self, value: date) -> Scalar:
        return self.quote(value.isoformat())

    def null(self, target: Target, op: str) -> str:
        """``What_Id.Accounts ne null``: linked to an account, which ``$se_module`` says (What_Id
        alone may point to any module). A note's Parent_Id keeps its module where COQL cannot
        compare it: refused."""
        base, lookup, module = polymorphic.split(self.poly, target.column)
        if lookup is None:
            return f"{target.name} is {'not ' if op == 'ne' else ''}null"
        said = lookup.object_field
        if not said or not _MODULE.match(module):
            message = f"{target.field}: Zoho cannot query this for null; compare an id"
            raise QueryError("filter", message)
        if op == "ne":
            return f"({base} is not null and {said} = {self.quote(module)})"
        return f"({base} is null or {said} != {self.quote(module)})"

    def like(self, target: Target, op: str, text: str) -> str:
        return f"{target.name} like {self.quote(pattern(op, text))}"

    def where(self, conditions: Sequence[Condition]) -> str:
        """((A and B) and C); every record (id is not null) without a condition."""
        expression, *more = self.terms(conditions) or ["id is not null"]
        for part in more:
            expression = f"({expression} and {part})"
        return expression

    def sort_name(self, field: str, column: str) -> str:
        if polymorphic.split(self.poly, column)[1]:
            raise QueryError("sort", f"Zoho cannot sort by {field}")
        return _queryable(column)


def _field_infos(
    poly: Mapping[str, Polymorphic], spec: Mapping[str, Any], info: FieldInfo
) -> list[FieldInfo]:
    """A field as the descriptor reads it, and, for a multi-module lookup, one column per module
    it can point to (``What_Id.Accounts``). A field Zoho does not say is sortable is, unless
    long text or a lookup."""
    unsorted = info.native_type in ("textarea", *_LOOKUPS)
    info = replace(info, sortable=bool(spec.get("sortable", not unsorted)))
    return polymorphic.fields(poly, spec, info)


class ZohoRecords(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.poly = self.platform.polymorphic
        # (credentials, module) -> field -> data type, from describes: which fields are lookups
        # and date-times when writing (a few hundred entries, least recently used go first)
        self._types: LRUCache[tuple[str, ...], dict[str, str]] = LRUCache(512)

    def api(self, access: Access) -> URL:
        return access.instance_url / "crm" / (self.platform.api_version or "v8")

    def _module(self, access: Access, name: str) -> URL:
        if not _MODULE.match(name):
            raise EntityNotFound(f"Zoho CRM has no module {name[:100]!r}")
        return self.api(access) / name

    def _record(self, access: Access, name: str, record_id: str) -> URL:
        if not _RECORD_ID.match(record_id):
            raise EntityNotFound(f"{name} {record_id[:40]!r} not found")
        return self._module(access, name) / record_id

    def refine_error(self, refusal: Refusal) -> Refusal:
        details = refusal.entry.get("details")
        named = details.get("api_name") if isinstance(details, dict) else None
        # INVALID_DATA about the record's id: no such record (404), not a bad field.
        if refusal.code == "INVALID_DATA" and isinstance(details, dict):
            if named == "id" or ("id" in details and not named):
                return replace(refusal, contract="ENTITY_NOT_FOUND", fields=())
        # Too many concurrent calls (no reset header): free again in seconds.
        if refusal.retry_after is None and "concurren" in refusal.message.lower():
            return replace(refusal, retry_after=5)
        return refusal

    # ---- the catalogue ----------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        answer = await self.json_call(access, "GET", self.api(access) / "settings/modules")
        found = self.read_objects(answer, "id")
        return [info for info in found if _MODULE.match(info.name)]

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        if name == "users":  # Zoho does not describe users: the descriptor does
            return self.platform.objects["users"].info("users", "id")
        if not _MODULE.match(name):
            raise EntityNotFound(f"Zoho CRM has no module {name[:100]!r}")
        answer = await self.json_call(
            access, "GET", (self.api(access) / "settings/fields").with_query(module=name)
        )
        fields = self.read_fields(answer, partial(_field_infos, self.poly))
        self._remember(access, name, {f.name: f.native_type for f in fields})
        # The fields API does not say what this user's profile allows with the module; Zoho
        # refuses what it does not (403 NOT_ALLOWED).
        return ObjectInfo(
            name, name, name, False, True, True, True, True, tuple(fields), id_field="id"
        )

    def _remember(self, access: Access, module: str, types: dict[str, str]) -> None:
        self._types[CursorWalks.key(access, module)] = types

    def _types_of(self, access: Access, module: str) -> dict[str, str]:
        known = self.platform.objects.get(module)  # a standard module's, before any describe
        return self._types.get(CursorWalks.key(access, module)) or (known.types if known else {})

    # ---- COQL -------------------------------------------------------------------------------

    def _select_columns(self, columns: Sequence[str]) -> list[str]:
        """Native columns as Zoho field names: a multi-module lookup's per-module columns are
        its one field (and What_Id's $se_module)."""
        names = [_queryable(n) for c in columns for n in polymorphic.sources(self.poly, c)]
        return list(dict.fromkeys(names))

    def _where(self, access: Access, entity: EntityMap, conditions: Sequence[Condition]) -> str:
        return Coql(entity, self._types_of(access, entity.object), self.poly).where(conditions)

    def _order(self, entity: EntityMap, sort: Sequence[SortKey]) -> str:
        return Coql(entity, {}, self.poly).order(sort)

    async def _coql(self, access: Access, statement: str) -> list[dict[str, Any]]:
        url = self.api(access) / "coql"
        return _data(await self.json_call(access, "POST", url, body={"select_query": statement}))

    # ---- reading ----------------------------------------------------------------------------

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
        offset = (page - 1) * page_size
        by_id = not sort or (len(sort) == 1 and sort[0].field == "id" and not sort[0].descending)
        if entity.object == "users":
            if conditions or not by_id:
                rows = local.select(await self._all_users(access), entity, conditions, sort)
                return local.page_of(rows, page, page_size)
            url = self._users(access).update_query(page=str(page), per_page=str(page_size))
            answer = await self.json_call(access, "GET", url)
            return [_flat(u, "users", {}) for u in shapes.rows(answer, "users", "Zoho CRM")]
        fields = self._select_columns(columns)
        first, *more = _chunks(fields)
        if by_id and not conditions and not entity.match:
            key = CursorWalks.key(access, entity.object, ",".join(fields))
            ahead = 2 * self.platform.paging.batch  # farther than that, one direct call is cheaper
            if offset == 0 or self.walks.continues(key, offset, ahead):
                return await self.walks.page(
                    key, offset, page_size, self._walk(access, entity, fields), 0, ahead
                )
            if offset + page_size <= PAGE_LIMIT:
                url = self._listing(access, entity.object, first)
                url = url.update_query(page=str(page), per_page=str(page_size))
                answer = await self.json_call(access, "GET", url)
                return await self._read(access, entity.object, _data(answer), more)
        if offset + page_size > COQL_REACH:
            raise QueryError(
                "page",
                f"Zoho's queries reach {COQL_REACH:,} records; read an unfiltered list page "
                "by page from the first, or narrow it with a filter",
            )
        # every part checked or escaped: names by pattern, values quoted (see Coql)
        where, order = self._where(access, entity, conditions), self._order(entity, sort)
        selected = ", ".join(first)
        statement = f"select {selected} from {entity.object} where {where} order by {order}"  # noqa: S608
        statement += f" limit {page_size} offset {offset}"
        return await self._read(access, entity.object, await self._coql(access, statement), more)

    async def _read(
        self, access: Access, module: str, rows: list[dict[str, Any]], more: list[list[str]]
    ) -> list[dict[str, Any]]:
        """``rows`` read with the first FIELD_LIMIT fields, completed with the ``more`` fields
        (one COQL query per FIELD_LIMIT fields and COQL_IN records, merged by id), flat."""
        by_id = {str(row.get("id")): row for row in rows if isinstance(row, dict)}
        ids = [i for i in by_id if _RECORD_ID.match(i)]
        for fields in more:
            for extra in await self._by_ids(access, module, fields, ids):
                row = by_id.get(str(extra.get("id")))
                if row is not None:
                    row.update({k: v for k, v in extra.items() if k != "id"})
        return [_flat(row, module, self.poly) for row in rows]

    async def _by_ids(
        self, access: Access, module: str, fields: list[str], ids: list[str]
    ) -> list[dict[str, Any]]:
        """The ``fields`` of the records of ``ids`` (well-formed): a COQL query per COQL_IN."""
        rows: list[dict[str, Any]] = []
        for start in range(0, len(ids), COQL_IN):
            listed = ", ".join(ids[start : start + COQL_IN])  # record ids: digits only
            statement = f"select {', '.join(fields)} from {module} where id in ({listed})"  # noqa: S608
            rows += await self._coql(access, f"{statement} limit {COQL_IN}")
        return rows

    def _listing(self, access: Access, module: str, fields: list[str]) -> URL:
        """The records API's list of ``module`` in id order, with ``fields``."""
        query = {"fields": ",".join(fields), "sort_by": "id", "sort_order": "asc"}
        return self._module(access, module).with_query(query)

    def _users(self, access: Access) -> URL:
        return (self.api(access) / "users").with_query(type="AllUsers")

    def _walk(self, access: Access, entity: EntityMap, fields: list[str]) -> Fetch:
        first, *rest = _chunks(fields)
        url = self._listing(access, entity.object, first)

        async def read(batch: list[Any]) -> list[dict[str, Any]]:
            return await self._read(access, entity.object, batch, rest)

        return Pager(self, self.platform.paging, amend=read).fetch(access, url)

    async def _all_users(self, access: Access) -> list[dict[str, Any]]:
        """Every user (the descriptor's paging of users): Zoho's users API neither filters nor
        sorts, so a filtered or sorted list of users is made here (connectors/local.py)."""
        pager = Pager(self, self.platform.paging.of("users"), lambda user: _flat(user, "users", {}))
        return await pager.whole(access, self._users(access), what="users")

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        if entity.object == "users":
            if conditions:
                return len(local.select(await self._all_users(access), entity, conditions))
            url = (self.api(access) / "users/actions/count").with_query(type="AllUsers")
            answer = await self.json_call(access, "GET", url)
            total = answer.get("count") if isinstance(answer, dict) else None
        else:
            where = self._where(access, entity, conditions)
            statement = f"select COUNT(id) from {entity.object} where {where}"  # noqa: S608
            rows = await self._coql(access, statement)
            total = rows[0].get("COUNT(id)") if rows else 0
        return shapes.integer(total, "Zoho CRM")

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        if entity.object == "users":
            if not _RECORD_ID.match(record_id):
                raise EntityNotFound(f"user {record_id[:40]!r} not found")
            answer = await self.json_call(access, "GET", self.api(access) / "users" / record_id)
            users = shapes.rows(answer, "users", "Zoho CRM", "a user")
            if not users:
                raise EntityNotFound(f"user {record_id} not found")
            return _flat(users[0], "users", {})
        first, *more = _chunks(self._select_columns(columns))
        url = self._record(access, entity.object, record_id).with_query(fields=",".join(first))
        found = _data(await self.json_call(access, "GET", url))
        rows = await self._read(access, entity.object, found, more)
        if not rows:
            raise EntityNotFound(f"{entity.object} {record_id} not found")
        return rows[0]

    async def get_many(
        self, access: Access, entity: EntityMap, ids: Sequence[str], columns: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The records of ``ids``: one COQL query per 50 (``id in (...)``)."""
        if entity.object == "users":
            return await super().get_many(access, entity, ids, columns)
        valid = list(dict.fromkeys(i for i in ids if _RECORD_ID.match(i)))
        first, *more = _chunks(self._select_columns(columns))
        found = await self._by_ids(access, entity.object, first, valid)
        return await self._read(access, entity.object, found, more)

    # ---- writing ----------------------------------------------------------------------------

    def _native(self, access: Access, module: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Flat native values in Zoho's shapes: lookups as ``{"id"}``, a multi-module lookup
        with its module, date-times without fractions."""
        types = self._types_of(access, module)
        out = polymorphic.write(self.poly, values)
        for name, value in out.items():
            if name in self.poly:
                continue  # What_Id with $se_module, Parent_Id with {"module": {"api_name"}}
            if types.get(name) in _LOOKUPS:
                out[name] = {"id": str(value)} if value not in (None, "") else None
            elif types.get(name) == "datetime" and isinstance(value, str):
                out[name] = _zoho_datetime(value)
        return out

    # A single record is written as a batch of one (the same endpoints, the same answers).

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        made = _one(await self.bulk_create(access, name, [values]))
        if not made:
            raise CrmUnavailable("Zoho CRM answered a create without the record's id")
        return made

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        _one(await self.bulk_update(access, name, [(record_id, values)]))

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        # INVALID_DATA about the id is 404 (refine_error); any other refusal stays what it is
        _one(await self.bulk_delete(access, name, [record_id]))

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        def body(chunk: list[Mapping[str, Any]]) -> dict[str, Any]:
            return {"data": [self._native(access, name, values) for values in chunk]}

        return await batch.create(self, access, "POST", self._module(access, name), items, body)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        def body(chunk: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
            return {"data": [{**self._native(access, name, v), "id": i} for i, v in chunk]}

        url = self._module(access, name)
        return await batch.update(self, access, "PUT", url, items, body, _well_formed, name)

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        url = self._module(access, name)
        return await batch.delete(
            self, access, lambda chunk: url.with_query(ids=",".join(chunk)), ids, _well_formed, name
        )

    # ---- passthrough ------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to the org's API (``Contacts/123``, ``coql``, ``settings/modules``
        under ``/crm/v8/``), or absolute under ``/crm/`` (another version)."""
        return passthrough_on(access, path, f"/crm/{self.platform.api_version or 'v8'}", "/crm/")


class ZohoConnector(Connector):
    name = "zoho"
    records_type = ZohoRecords
