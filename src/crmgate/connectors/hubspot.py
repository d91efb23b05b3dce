"""HubSpot (CRM API v3): the code its descriptor cannot say.

One API host for every account (the descriptor's ``api_url``); records are
``{id, properties: {name: text}}`` and are flattened to ``{hs_object_id, **properties}`` for the
entity maps. Lists, counts, filters and sorts go through the search API (``filterGroups``; at
most 10,000 results, one sort key); bulk through the batch endpoints (connectors/batch.py).

Relations are HubSpot associations, shown to the entity maps as pseudo-columns
``associations.<object type>`` holding one associated record's id (the primary one where HubSpot
has a primary, e.g. a deal's company). Reads ask for them with ``associations=`` (record reads
and the objects list), or, for search results, one v4 batch read per associated object type and
page; creates send them in the create call; updates replace them with v4 calls (read, remove,
add); filters use the search API's ``associations.<object>`` pseudo-property (EQ only).

Users are HubSpot's owners (``/crm/v3/owners``, not an object of the objects API): read whole
(the descriptor's paging for owners: 500 a call, at most 5,000) and filtered, sorted and
paged in memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time
from typing import Any

from yarl import URL

from crmgate.connectors import base, batch, local, shapes
from crmgate.connectors.base import Access, Connector, CursorWalks, Fetch, ItemResult, Records
from crmgate.connectors.catalogue import ObjectEntry
from crmgate.connectors.dialect import Dialect, Scalar, Target, pattern
from crmgate.connectors.errors import (
    CrmError,
    CrmUnavailable,
    EntityNotFound,
    NotAllowed,
    NotValid,
    Refusal,
)
from crmgate.connectors.jsonpath import select
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.query import Condition, QueryError, SortKey

SEARCH_LIMIT = 10_000  # the search API returns at most this many results of one query
MAX_FILTERS = 6  # filters in one filter group of the search API
_RECORD_ID = re.compile(r"^[0-9]{1,20}$")
_OBJECT_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_OPERATORS = {"eq": "EQ", "ne": "NEQ", "gt": "GT", "ge": "GTE", "lt": "LT", "le": "LTE"}
LINK = "associations."  # the pseudo-column prefix of an association (associations.companies)
OWNERS = "owners"


def _well_formed(record_id: str) -> bool:
    return _RECORD_ID.match(record_id) is not None


def _flat(
    record: Any, links: Sequence[str] = (), primary: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """HubSpot's ``{id, properties, associations}`` as one flat native record; each of
    ``links`` (object types) becomes ``associations.<type>``: the id of the primary associated
    record where the pair has a primary (``primary``, the descriptor's labels:
    ``deal_to_company``, beside ``deal_to_company_unlabeled``), else the first, else None."""
    if not isinstance(record, dict) or not isinstance(record.get("properties"), dict):
        raise CrmUnavailable("HubSpot answered a record of an unexpected shape")
    flat = {**record["properties"], "hs_object_id": str(record.get("id"))}
    associations = record.get("associations")
    for target in links:
        found = (associations or {}).get(target) if isinstance(associations, dict) else None
        results = [r for r in (found or {}).get("results") or () if isinstance(r, dict)]
        label = (primary or {}).get(target)
        labelled = [r for r in results if label and r.get("type") == label]
        chosen = next(iter(labelled or results), None)
        flat[LINK + target] = str(chosen["id"]) if chosen else None
    return flat


def _split(columns: Sequence[str]) -> tuple[list[str], list[str]]:
    """Native columns as (properties, associated object types)."""
    properties = [c for c in columns if not c.startswith(LINK)]
    return properties, [c.removeprefix(LINK) for c in columns if c.startswith(LINK)]


def _read_query(columns: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """A record read's or list's query for ``columns``, and the associations it asks for."""
    properties, links = _split(columns)
    query = {"properties": ",".join(properties)}
    return query | ({"associations": ",".join(links)} if links else {}), links


class SearchFilters(Dialect[dict[str, Any]]):
    """The one filter group (AND) of a search request: values as JSON strings (nothing to
    escape: no query text is built), dates in epoch milliseconds."""

    crm = "HubSpot"
    operators = _OPERATORS
    max_terms = MAX_FILTERS
    like_refusal = "HubSpot's {op} takes one word (no spaces, no *)"

    def __init__(self, entity: EntityMap, objects: Mapping[str, ObjectEntry]) -> None:
        super().__init__(entity)
        self.objects = objects

    def term(self, condition: Condition) -> dict[str, Any]:
        """An association (``associations.companies``) takes eq and a record id."""
        column = self.entity.filter_column("filter", condition.field)
        if not column.startswith(LINK):
            return super().term(condition)
        value, known = condition.value, self.objects.get(column.removeprefix(LINK))
        an_id = isinstance(value, str) and _well_formed(value) and condition.op == "eq"
        if not an_id or known is None or not known.singular:
            raise QueryError("filter", f"{condition.field} takes eq and a record id on HubSpot")
        return {"propertyName": LINK + known.singular, "operator": "EQ", "value": value}

    def instant(self, value: datetime) -> str:
        return str(int(value.timestamp() * 1000))

    def day(self, value: date) -> str:
        return self.instant(datetime.combine(value, time(), UTC))

    def like_refused(self, text: str) -> bool:
        return any(char.isspace() or char == "*" for char in text)

    def compare(self, target: Target, operator: str, literal: Scalar) -> dict[str, Any]:
        return {"propertyName": target.name, "operator": operator, "value": literal}

    def null(self, target: Target, op: str) -> dict[str, Any]:
        operator = "NOT_HAS_PROPERTY" if op == "eq" else "HAS_PROPERTY"
        return {"propertyName": target.name, "operator": operator}

    def like(self, target: Target, op: str, text: str) -> dict[str, Any]:
        return self.compare(target, "CONTAINS_TOKEN", pattern(op, text, "*"))


class HubSpotRecords(Records):
    def _objects(self, access: Access, object_type: str) -> URL:
        if not _OBJECT_TYPE.match(object_type):
            raise EntityNotFound(f"HubSpot has no object type {object_type[:64]!r}")
        # owners are no object of the objects API: their own API is beside it
        under = "crm/v3" if object_type == OWNERS else "crm/v3/objects"
        return access.instance_url / under / object_type

    def _record(self, access: Access, object_type: str, record_id: str) -> URL:
        if not _well_formed(record_id):
            raise EntityNotFound(f"{object_type} {record_id[:40]!r} not found")
        return self._objects(access, object_type) / record_id

    def _entry(self, name: str) -> ObjectEntry:
        """The descriptor's entry of an object (a custom object has none: no links)."""
        return self.platform.objects.get(name) or ObjectEntry(label=name)

    def refine_error(self, refusal: Refusal) -> Refusal:
        # A 429 without Retry-After: the policy hit says the window (ten seconds, or the day).
        policy = str(refusal.entry.get("policyName") or "")
        daily = refusal.retry_after is None and policy and "SECONDLY" not in policy
        return replace(refusal, retry_after=3600) if daily else refusal

    # ---- owners (users): not objects, read whole ---------------------------------------------

    def _owner(self, owner: Any) -> dict[str, Any]:
        if not isinstance(owner, dict) or "id" not in owner:
            raise CrmUnavailable("HubSpot answered an owner of an unexpected shape")
        fields = self.platform.objects[OWNERS].fields
        return {f.name: owner.get(f.name) for f in fields} | {"id": str(owner["id"])}

    async def _owners(self, access: Access) -> list[dict[str, Any]]:
        pager = Pager(self, self.platform.paging.of(OWNERS))
        owners = await pager.whole(access, self._objects(access, OWNERS), what="owners")
        # a queue (type QUEUE) owns records but is no user
        return [self._owner(owner) for owner in owners if owner.get("type") != "QUEUE"]

    # ---- the catalogue ----------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        """The standard objects (the descriptor's), and the custom objects of the schemas API
        (by their fully qualified name, p<portal>_<name>), when the token may read schemas."""
        known = self.platform.objects.items()
        standard = [entry.info(name, "hs_object_id") for name, entry in known if entry.listed]
        return standard + list((await self._custom(access)).values())

    async def _custom(self, access: Access) -> dict[str, ObjectInfo]:
        try:
            answer = await self.json_call(access, "GET", access.instance_url / "crm/v3/schemas")
        except NotAllowed:
            return {}  # no crm.schemas.custom.read: the standard objects only
        found = self.read_objects(answer, "hs_object_id")
        return {info.name: info for info in found if _OBJECT_TYPE.match(info.name)}

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        entry = self.platform.objects.get(name)
        # the descriptor's objects, and a custom one by the name the schemas API gave it
        known = (
            entry.info(name, "hs_object_id") if entry else (await self._custom(access)).get(name)
        )
        if known is None:
            raise EntityNotFound(f"HubSpot has no object type {name[:64]!r}")
        if entry is not None and entry.read_only:  # owners: described by the descriptor
            return known
        url = access.instance_url / "crm/v3/properties" / name
        answer = await self.json_call(access, "GET", url)
        fields = self.read_fields(answer) + [
            FieldInfo(LINK + t, f"Associated {self._entry(t).singular}", "string", "association")
            for t in self._entry(name).links
        ]
        # HubSpot does not tell what the token's user may do; its scopes decide, and a call it
        # refuses answers 403 NOT_ALLOWED.
        return replace(known, fields=tuple(fields))

    # ---- reading ----------------------------------------------------------------------------

    async def _search(
        self,
        access: Access,
        entity: EntityMap,
        columns: Sequence[str],
        conditions: Sequence[Condition],
        sort: Sequence[SortKey],
        limit: int,
        after: int = 0,
    ) -> dict[str, Any]:
        """One call of the search API with crmgate's filter (one filter group: AND) and sort."""
        filters = SearchFilters(entity, self.platform.objects).terms(conditions)
        sorts = [(entity.filter_column("sort", key.field), key.descending) for key in sort]
        if len(sort) > 1:
            raise QueryError("sort", "HubSpot sorts by one field")
        if any(name.startswith(LINK) for name, _ in sorts):
            raise QueryError("sort", "HubSpot does not sort by an association")
        body = {
            "filterGroups": [{"filters": filters}] if filters else [],
            "sorts": [
                {"propertyName": name, "direction": "DESCENDING" if down else "ASCENDING"}
                for name, down in sorts or [(entity.id, False)]
            ],
            "properties": _split(columns)[0],
            "limit": limit,
            "after": str(after),
        }
        url = self._objects(access, entity.object) / "search"
        answer = await self.json_call(access, "POST", url, body=body)
        if not isinstance(answer, dict) or not isinstance(answer.get("results"), list):
            raise CrmUnavailable("HubSpot answered an unexpected search result")
        return answer

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
        if entity.object == OWNERS:
            rows = local.select(await self._owners(access), entity, conditions, sort)
            return local.page_of(rows, page, page_size)
        after = (page - 1) * page_size
        beyond = after + page_size > SEARCH_LIMIT
        by_id = not sort or (len(sort) == 1 and sort[0].field == "id" and not sort[0].descending)
        plain = by_id and not conditions and not entity.match
        key = CursorWalks.key(access, entity.object, ",".join(columns))
        # farther ahead than two batches, one search call is cheaper (where it reaches)
        reach = None if beyond else 2 * self.platform.paging.batch
        if plain and (after == 0 or self.walks.continues(key, after, reach)):
            # An unfiltered list read in order walks the objects API's cursor: one call per
            # 100 records, with no end (the search API stops at 10,000).
            try:
                return await self.walks.page(
                    key, after, page_size, self._list_fetch(access, entity, columns), 0, reach
                )
            except (NotValid, QueryError):
                if beyond:
                    raise
        if beyond:
            raise QueryError(
                "page",
                f"HubSpot's search reaches {SEARCH_LIMIT:,} records; read an unfiltered list "
                "page by page from the first, or narrow it with a filter",
            )
        found = await self._search(access, entity, columns, conditions, sort, page_size, after)
        rows = [_flat(r) for r in found["results"]]
        for target in _split(columns)[1]:
            linked = await self._linked(access, entity.object, target, [r[entity.id] for r in rows])
            for row in rows:
                row[LINK + target] = linked.get(row[entity.id])
        return rows

    async def _linked(
        self, access: Access, name: str, target: str, ids: Sequence[str]
    ) -> dict[str, str]:
        """record id -> the id of its primary (else first) associated ``target`` record, for the
        records that have one: one v4 batch read (HubSpot answers 207 with an error for each
        record that has none). The primary one is linked by a type the descriptor names."""
        if not ids:
            return {}
        url = access.instance_url / "crm/v4/associations" / name / target / "batch/read"
        answer = await self.json_call(
            access, "POST", url, body={"inputs": [{"id": i} for i in ids]}
        )
        entries = self.platform.objects.values()
        primaries = [entry.links[t] for entry in entries for t in entry.primary_links]
        found: dict[str, str] = {}
        for result in shapes.rows(answer, "results", "HubSpot", "associations"):
            linked = [t for t in select(result, "to[*]") if isinstance(t, dict)]
            kinds = "associationTypes[*].typeId"
            primary = [t for t in linked if any(k in primaries for k in select(t, kinds))]
            chosen, source = (primary or linked)[:1], select(result, "from.id")
            if chosen and source:
                found[str(source[0])] = str(chosen[0].get("toObjectId"))
        return found

    def _list_fetch(self, access: Access, entity: EntityMap, columns: Sequence[str]) -> Fetch:
        query, links = _read_query(columns)
        url = self._objects(access, entity.object).with_query(query)
        primary = self._entry(entity.object).primary_links
        pager = Pager(self, self.platform.paging, lambda r: _flat(r, links, primary))
        return pager.fetch(access, url)

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        if entity.object == OWNERS:
            return len(local.select(await self._owners(access), entity, conditions))
        found = await self._search(access, entity, [entity.id], conditions, (), 1)
        return shapes.integer(found.get("total"), "HubSpot", "a search total")

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        if entity.object == OWNERS:
            url = self._record(access, OWNERS, record_id)
            return self._owner(await self.json_call(access, "GET", url))
        query, links = _read_query(columns)
        url = self._record(access, entity.object, record_id).with_query(query)
        answer = await self.json_call(access, "GET", url)
        return _flat(answer, links, self._entry(entity.object).primary_links)

    # ---- writing ----------------------------------------------------------------------------

    def _input(self, name: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """A create's body: the properties, and the associations in HubSpot's own shape."""
        body: dict[str, Any] = {
            "properties": {k: v for k, v in values.items() if not k.startswith(LINK)}
        }
        links = []
        for column, value in values.items():
            if not column.startswith(LINK) or value is None:
                continue
            type_id = self._entry(name).links.get(column.removeprefix(LINK))
            if type_id is None or not _well_formed(str(value)):
                raise NotValid(f"HubSpot: {column} cannot link {str(value)[:40]!r}", (column,))
            kind = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
            links.append({"to": {"id": str(value)}, "types": [kind]})
        return body | ({"associations": links} if links else {})

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        body = self._input(name, values)
        made = await self.json_call(access, "POST", self._objects(access, name), body=body)
        return str(_flat(made)["hs_object_id"])

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        """The properties with one PATCH; a changed relation by adding the new link (the create's
        association type) before, and removing the one crmgate showed (one read says it) after:
        a failure leaves no link lost, a link crmgate does not show is never touched. A link that
        cannot be made undoes the ones made before it and is NOT_VALID on its relation."""
        url = self._record(access, name, record_id)
        linking = access.instance_url / "crm/v4/objects" / name / record_id / "associations"
        body = self._input(name, values)  # refuses a bad relation id before anything is sent
        changes = [(c, v) for c, v in values.items() if c.startswith(LINK)]
        added: list[tuple[str, str]] = []
        stale: list[tuple[str, str]] = []
        if changes:
            query, targets = _read_query(["hs_object_id", *(column for column, _ in changes)])
            record = await self.json_call(access, "GET", url.with_query(query))
            showing = _flat(record, targets, self._entry(name).primary_links)
        for column, value in changes:
            target, shown = column.removeprefix(LINK), showing[column]
            if value is not None and str(value) != shown:
                types = self._input(name, {column: value})["associations"][0]["types"]
                try:
                    await self.json_call(access, "PUT", linking / target / str(value), body=types)
                except (EntityNotFound, NotValid) as refused:
                    await self._unlink(access, linking, added)
                    raise NotValid(
                        f"HubSpot: no {self._entry(target).singular} {str(value)[:40]!r} to "
                        f"link ({refused.message})",
                        (column,),
                    ) from None
                added.append((target, str(value)))
            if shown is not None and str(value) != shown:
                stale.append((target, shown))
        try:
            if body["properties"] or not changes:
                await self.json_call(access, "PATCH", url, body={"properties": body["properties"]})
        except CrmError:
            await self._unlink(access, linking, added)  # as it was
            raise
        await self._unlink(access, linking, stale)

    async def _unlink(self, access: Access, linking: URL, links: Sequence[tuple[str, str]]) -> None:
        for target, linked in links:
            await self.json_call(access, "DELETE", linking / target / linked)

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        """HubSpot archives an id it does not have with 204 as well (its DELETE is idempotent):
        the record is read first, so that an unknown one is the contract's 404 (a call more)."""
        url = self._record(access, name, record_id)
        await self.json_call(access, "GET", url.with_query(properties="hs_object_id"))
        await self.json_call(access, "DELETE", url)

    async def _batch(
        self,
        access: Access,
        name: str,
        verb: str,
        chunk: Sequence[tuple[str | None, Mapping[str, Any]]],
    ) -> list[ItemResult]:
        """One call of the batch ``create`` or ``update`` for ``chunk`` ((id or None, values)):
        an item crmgate can tell is wrong (a bad relation id) fails alone, unsent. HubSpot
        validates a batch of creates whole first: one bad record refuses the chunk."""
        done: dict[int, ItemResult] = {}
        inputs: dict[int, dict[str, Any]] = {}
        for position, (record_id, values) in enumerate(chunk):
            try:
                body = self._input(name, values)
            except NotValid as refused:
                done[position] = ItemResult(record_id, refused)
                continue
            if record_id is None:  # a create: its position comes back on its result
                inputs[position] = {**body, "objectWriteTraceId": str(position)}
            else:
                inputs[position] = {"id": record_id, "properties": body["properties"]}
        if inputs:
            url, sent = self._objects(access, name) / "batch" / verb, list(inputs.values())
            ids, keys = [chunk[p][0] for p in inputs], [chunk[p][0] or str(p) for p in inputs]
            answered = await batch.write(self, access, "POST", url, {"inputs": sent}, ids, keys)
            done |= dict(zip(inputs, answered, strict=True))
        return [done[position] for position in range(len(chunk))]

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        async def send(chunk: list[Mapping[str, Any]]) -> list[ItemResult]:
            return await self._batch(access, name, "create", [(None, v) for v in chunk])

        return await base.chunked(list(items), self.platform.bulk.size, send, lambda item: None)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        async def send(chunk: list[tuple[str, Mapping[str, Any]]]) -> list[ItemResult]:
            done = await self._batch(access, name, "update", chunk)
            for position, (record_id, values) in enumerate(chunk):  # links: v4, one by one
                links = {c: v for c, v in values.items() if c.startswith(LINK)}
                if done[position].error is None and links:
                    try:  # the properties are written: the links alone, as update does them
                        await self.update(access, name, record_id, links)
                    except CrmError as error:
                        done[position] = ItemResult(record_id, error)
            return done

        size = self.platform.bulk.size
        return await base.chunked_by_id(list(items), size, send, lambda i: i[0], _well_formed, name)

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        """HubSpot archives ids it does not have as well: each chunk is read first (one batch
        read), so that an unknown id is the contract's 404 and only the records found are
        archived."""
        objects = self._objects(access, name)

        async def send(valid: list[str]) -> list[ItemResult]:
            read = {"inputs": [{"id": i} for i in valid], "properties": ["hs_object_id"]}
            found = await batch.write(self, access, "POST", objects / "batch/read", read, valid)
            there = dict.fromkeys(r.id for r in found if r.error is None)
            if there:
                archive = {"inputs": [{"id": i} for i in there]}
                await self.json_call(access, "POST", objects / "batch/archive", body=archive)
            return found

        size = self.platform.bulk.size
        return await base.chunked_by_id(list(ids), size, send, lambda i: i, _well_formed, name)

    # ---- passthrough ------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to HubSpot's API host (``crm/v3/objects/contacts?limit=5``)."""
        return base.passthrough_on(access, path)


class HubSpotConnector(Connector):
    name = "hubspot"
    records_type = HubSpotRecords
