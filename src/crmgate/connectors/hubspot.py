"""HubSpot (CRM API v3): the code its descriptor cannot say.

One API host for every account (the descriptor's ``api_url``); records are
``{id, properties: {name: text}}`` and are flattened to ``{hs_object_id, **properties}`` for the
entity maps. Lists, counts, filters and sorts go through the search API (``filterGroups``; at
most 10,000 results, one sort key); bulk through the batch endpoints (100 records a call).

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

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time
from typing import Any

from yarl import URL

from crmgate.connectors import local
from crmgate.connectors.base import (
    Access,
    Connector,
    CursorWalks,
    Fetch,
    ItemResult,
    Records,
    chunked,
    chunked_by_id,
    passthrough_on,
)
from crmgate.connectors.catalogue import ObjectEntry, Platform
from crmgate.connectors.dialect import Dialect, Scalar, Target, pattern
from crmgate.connectors.errors import (
    CrmError,
    CrmUnavailable,
    EntityNotFound,
    NotAllowed,
    NotValid,
    Refusal,
)
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.outbound import Outbound
from crmgate.query import Condition, QueryError, SortKey

log = logging.getLogger("crmgate.connectors.hubspot")

SEARCH_LIMIT = 10_000  # the search API returns at most this many results of one query
BATCH_LIMIT = 100
MAX_FILTERS = 6  # filters in one filter group of the search API
_RECORD_ID = re.compile(r"^[0-9]{1,20}$")


def _well_formed(record_id: str) -> bool:
    return _RECORD_ID.match(record_id) is not None


_OBJECT_TYPE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_OPERATORS = {"eq": "EQ", "ne": "NEQ", "gt": "GT", "ge": "GTE", "lt": "LT", "le": "LTE"}
LINK = "associations."  # the pseudo-column prefix of an association (associations.companies)
OWNERS = "owners"


class HubSpotConnector(Connector):
    name = "hubspot"

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        super().__init__(platform, outbound)
        self.records = HubSpotRecords(self)

    def api(self) -> URL:
        if not self.platform.api_url:
            raise CrmUnavailable(f"{self.platform.type} has no api_url configured")
        return self.instance_url(self.platform.api_url)

    def access(
        self, authorization: str, credential: Mapping[str, str], derived: Mapping[str, str]
    ) -> Access:
        return Access(self.api(), credential["access_token"])


def _flat(
    record: Any, links: Sequence[str] = (), primary: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """HubSpot's ``{id, properties, associations}`` as one flat native record for the entity
    maps; each of ``links`` (object types) becomes ``associations.<type>``: the id of the
    primary associated record where the pair has a primary (``primary``, the descriptor's
    labels: ``deal_to_company``, beside ``deal_to_company_unlabeled``), else the first, else
    None."""
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
        known = self.objects.get(column.removeprefix(LINK))
        target = known.singular if known else None
        value = condition.value
        if (
            condition.op != "eq"
            or not isinstance(value, str)
            or not _RECORD_ID.match(value)
            or target is None
        ):
            raise QueryError("filter", f"{condition.field} takes eq and a record id on HubSpot")
        return {"propertyName": f"associations.{target}", "operator": "EQ", "value": value}

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


def search_body(
    objects: Mapping[str, ObjectEntry],
    entity: EntityMap,
    columns: Sequence[str],
    conditions: Sequence[Condition],
    sort: Sequence[SortKey],
    *,
    limit: int,
    after: int,
) -> dict[str, Any]:
    """crmgate's filter and sort as HubSpot's search request: one filter group (AND), values
    as JSON strings (nothing to escape: no query text is built)."""
    filters = SearchFilters(entity, objects).terms(conditions)
    if len(sort) > 1:
        raise QueryError("sort", "HubSpot sorts by one field")
    if any(entity.filter_column("sort", key.field).startswith(LINK) for key in sort):
        raise QueryError("sort", "HubSpot does not sort by an association")
    sorts = [
        {
            "propertyName": entity.filter_column("sort", key.field),
            "direction": "DESCENDING" if key.descending else "ASCENDING",
        }
        for key in sort
    ] or [{"propertyName": entity.id, "direction": "ASCENDING"}]
    body: dict[str, Any] = {
        "filterGroups": [{"filters": filters}] if filters else [],
        "sorts": sorts,
        "properties": _split(columns)[0],
        "limit": limit,
        "after": str(after),
    }
    return body


class HubSpotRecords(Records):
    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.walks = CursorWalks()

    def _objects(self, access: Access, object_type: str) -> URL:
        if not _OBJECT_TYPE.match(object_type):
            raise EntityNotFound(f"HubSpot has no object type {object_type[:64]!r}")
        return access.instance_url / "crm/v3/objects" / object_type

    def _record(self, access: Access, object_type: str, record_id: str) -> URL:
        if not _RECORD_ID.match(record_id):
            raise EntityNotFound(f"{object_type} {record_id[:40]!r} not found")
        return self._objects(access, object_type) / record_id

    def _entry(self, name: str) -> ObjectEntry:
        """The descriptor's entry of an object (a custom object has none: no links)."""
        return self.platform.objects.get(name) or ObjectEntry(label=name)

    @property
    def _primary_types(self) -> set[int]:
        """The association types that link a primary record (a contact's primary company)."""
        objects = self.platform.objects.values()
        return {entry.links[t] for entry in objects for t in entry.primary_links}

    def _singular(self, name: str) -> str:
        entry = self.platform.objects.get(name)
        return entry.singular if entry and entry.singular else name

    def refine_error(self, refusal: Refusal) -> Refusal:
        # A 429 without Retry-After: the policy hit says the window (ten seconds, or the day).
        policy = str(refusal.entry.get("policyName") or "")
        if refusal.retry_after is None and policy and "SECONDLY" not in policy:
            return replace(refusal, retry_after=3600)
        return refusal

    # ---- owners (users): not objects, read whole ---------------------------------------------

    def _owner(self, owner: Any) -> dict[str, Any]:
        if not isinstance(owner, dict) or "id" not in owner:
            raise CrmUnavailable("HubSpot answered an owner of an unexpected shape")
        fields = self.platform.objects[OWNERS].fields
        return {f.name: owner.get(f.name) for f in fields} | {"id": str(owner["id"])}

    async def _owners(self, access: Access) -> list[dict[str, Any]]:
        pager = Pager(self, self.platform.paging.of(OWNERS))
        owners = await pager.whole(access, access.instance_url / "crm/v3/owners", what="owners")
        # a queue (type QUEUE) owns records but is no user
        return [self._owner(owner) for owner in owners if owner.get("type") != "QUEUE"]

    # ---- the catalogue ----------------------------------------------------------------------

    async def objects(self, access: Access) -> list[ObjectInfo]:
        """The standard objects (the descriptor's), and the custom objects of the schemas API
        (by their fully qualified name, p<portal>_<name>), when the token may read schemas."""
        standard = [
            entry.info(name, "hs_object_id")
            for name, entry in self.platform.objects.items()
            if entry.listed
        ]
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
        if entry is not None and entry.read_only:  # owners: described by the descriptor
            return entry.info(name, "hs_object_id")
        if not _OBJECT_TYPE.match(name):
            raise EntityNotFound(f"HubSpot has no object type {name[:64]!r}")
        known = (
            entry.info(name, "hs_object_id") if entry else (await self._custom(access)).get(name)
        )
        if known is None:
            raise EntityNotFound(f"HubSpot has no object type {name[:64]!r}")
        answer = await self.json_call(
            access, "GET", access.instance_url / "crm/v3/properties" / name
        )
        fields = self.read_fields(answer)
        fields += [
            FieldInfo(
                LINK + target,
                f"Associated {self.platform.objects[target].singular}",
                "string",
                "association",
            )
            for target in self._entry(name).links
        ]
        # HubSpot does not tell what the token's user may do; its scopes decide, and a call it
        # refuses answers 403 NOT_ALLOWED.
        return replace(known, fields=tuple(fields))

    # ---- reading ----------------------------------------------------------------------------

    async def _search(
        self, access: Access, entity: EntityMap, body: dict[str, Any]
    ) -> dict[str, Any]:
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
        by_id = not sort or (len(sort) == 1 and sort[0].field == "id" and not sort[0].descending)
        plain = by_id and not conditions and not entity.match
        key = CursorWalks.key(access, entity.object, ",".join(columns))
        ahead = 2 * BATCH_LIMIT  # farther than that, one search call is cheaper (within reach)
        reach = None if after + page_size > SEARCH_LIMIT else ahead
        if plain and (after == 0 or self.walks.continues(key, after, reach)):
            # An unfiltered list read in order walks the objects API's cursor: one call per
            # 100 records, with no end (the search API stops at 10,000).
            try:
                return await self.walks.page(
                    key, after, page_size, self._list_fetch(access, entity, columns), 0, reach
                )
            except (NotValid, QueryError):
                if after + page_size > SEARCH_LIMIT:
                    raise
        if after + page_size > SEARCH_LIMIT:
            raise QueryError(
                "page",
                f"HubSpot's search reaches {SEARCH_LIMIT:,} records; read an unfiltered list "
                "page by page from the first, or narrow it with a filter",
            )
        body = search_body(
            self.platform.objects, entity, columns, conditions, sort, limit=page_size, after=after
        )
        rows = [_flat(r) for r in (await self._search(access, entity, body))["results"]]
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
        record that has none)."""
        if not ids:
            return {}
        url = access.instance_url / "crm/v4/associations" / name / target / "batch/read"
        answer = await self.json_call(
            access, "POST", url, body={"inputs": [{"id": i} for i in ids]}
        )
        found: dict[str, str] = {}
        for result in (answer or {}).get("results") or ():
            if not isinstance(result, dict):
                continue
            linked = [t for t in result.get("to") or () if isinstance(t, dict)]
            primary = [
                t
                for t in linked
                if any(
                    isinstance(k, dict) and k.get("typeId") in self._primary_types
                    for k in t.get("associationTypes") or ()
                )
            ]
            chosen = next(iter(primary or linked), None)
            if chosen is not None:
                found[str((result.get("from") or {}).get("id"))] = str(chosen.get("toObjectId"))
        return found

    def _list_fetch(self, access: Access, entity: EntityMap, columns: Sequence[str]) -> Fetch:
        properties, links = _split(columns)
        query = {"properties": ",".join(properties)}
        if links:
            query["associations"] = ",".join(links)
        url = self._objects(access, entity.object).with_query(query)
        primary = self._entry(entity.object).primary_links
        pager = Pager(self, self.platform.paging, lambda r: _flat(r, links, primary))
        return pager.fetch(access, url)

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        if entity.object == OWNERS:
            return len(local.select(await self._owners(access), entity, conditions))
        body = search_body(
            self.platform.objects, entity, [entity.id], conditions, (), limit=1, after=0
        )
        total = (await self._search(access, entity, body)).get("total")
        if not isinstance(total, int):
            raise CrmUnavailable("HubSpot answered a search without its total")
        return total

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        if entity.object == OWNERS:
            if not _RECORD_ID.match(record_id):
                raise EntityNotFound(f"owner {record_id[:40]!r} not found")
            url = access.instance_url / "crm/v3/owners" / record_id
            return self._owner(await self.json_call(access, "GET", url))
        url = self._record(access, entity.object, record_id)
        properties, links = _split(columns)
        query = {"properties": ",".join(properties)}
        if links:
            query["associations"] = ",".join(links)
        answer = await self.json_call(access, "GET", url.with_query(query))
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
            if type_id is None or not _RECORD_ID.match(str(value)):
                raise NotValid(f"HubSpot: {column} cannot link {str(value)[:40]!r}", (column,))
            links.append(
                {
                    "to": {"id": str(value)},
                    "types": [
                        {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id}
                    ],
                }
            )
        if links:
            body["associations"] = links
        return body

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        made = await self.json_call(
            access, "POST", self._objects(access, name), body=self._input(name, values)
        )
        return str(_flat(made)["hs_object_id"])

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        """The properties with one PATCH; a changed relation by adding the new link before the
        properties are written and removing the one crmgate showed after (so a failure leaves
        no link lost, and a link crmgate does not show is never touched)."""
        url = self._record(access, name, record_id)
        body = self._input(name, values)  # refuses a bad relation id before anything is sent
        changes = [(c, v) for c, v in values.items() if c.startswith(LINK)]
        if not changes:
            await self.json_call(access, "PATCH", url, body={"properties": body["properties"]})
            return
        added, stale = await self._link_new(access, name, record_id, changes)
        try:
            if body["properties"]:
                await self.json_call(access, "PATCH", url, body={"properties": body["properties"]})
        except CrmError:
            await self._unlink(access, name, record_id, added)  # as it was
            raise
        await self._unlink(access, name, record_id, stale)

    async def _shown(self, access: Access, name: str, record_id: str, target: str) -> str | None:
        """The id of the ``target`` record crmgate shows as this record's relation."""
        record = await self.json_call(
            access,
            "GET",
            self._record(access, name, record_id).with_query(
                properties="hs_object_id", associations=target
            ),
        )
        shown = _flat(record, (target,), self._entry(name).primary_links)[LINK + target]
        return None if shown is None else str(shown)

    async def _link_new(
        self, access: Access, name: str, record_id: str, changes: Sequence[tuple[str, Any]]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """Add the new links of ``changes`` (with the create's association type): the links
        added, and the links they replace (to remove once the rest is written). A link that
        cannot be made undoes the ones made before it and is NOT_VALID on its relation."""
        added: list[tuple[str, str]] = []
        stale: list[tuple[str, str]] = []
        base = access.instance_url / "crm/v4/objects" / name / record_id / "associations"
        for column, value in changes:
            target = column.removeprefix(LINK)
            shown = await self._shown(access, name, record_id, target)
            if value is not None and str(value) == shown:
                continue
            if value is not None:
                types = self._input(name, {column: value})["associations"][0]["types"]
                try:
                    await self.json_call(access, "PUT", base / target / str(value), body=types)
                except (EntityNotFound, NotValid) as refused:
                    await self._unlink(access, name, record_id, added)
                    raise NotValid(
                        f"HubSpot: no {self._singular(target)} {str(value)[:40]!r} to link "
                        f"({refused.message})",
                        (column,),
                    ) from None
                added.append((target, str(value)))
            if shown is not None:
                stale.append((target, shown))
        return added, stale

    async def _unlink(
        self, access: Access, name: str, record_id: str, links: Sequence[tuple[str, str]]
    ) -> None:
        base = access.instance_url / "crm/v4/objects" / name / record_id / "associations"
        for target, linked in links:
            await self.json_call(access, "DELETE", base / target / linked)

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        """HubSpot archives an id it does not have with 204 as well (its DELETE is idempotent):
        the record is read first, so that an unknown one is the contract's 404 (a call more)."""
        url = self._record(access, name, record_id)
        await self.json_call(access, "GET", url.with_query(properties="hs_object_id"))
        await self.json_call(access, "DELETE", url)

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        url = self._objects(access, name) / "batch/create"

        async def send(chunk: list[Mapping[str, Any]]) -> list[ItemResult]:
            # HubSpot validates a whole batch first: one bad record refuses the chunk (each of
            # its items then reports that refusal), the others go through.
            # HubSpot does not answer in the order sent: each input carries its position as
            # objectWriteTraceId, which comes back on its result.
            # An item crmgate can tell is wrong (a bad relation id) fails alone, unsent.
            done: dict[int, ItemResult] = {}
            inputs = []
            for position, values in enumerate(chunk):
                try:
                    inputs.append(
                        {**self._input(name, values), "objectWriteTraceId": str(position)}
                    )
                except NotValid as refused:
                    done[position] = ItemResult(None, refused)
            if inputs:
                answer = await self.json_call(access, "POST", url, body={"inputs": inputs})
                results = answer.get("results") if isinstance(answer, dict) else None
                if not isinstance(results, list) or len(results) != len(inputs):
                    raise CrmUnavailable("HubSpot answered a batch with the wrong results")
                by_trace = {
                    str(r.get("objectWriteTraceId")): str(_flat(r)["hs_object_id"])
                    for r in results
                    if isinstance(r, dict)
                }
                if set(by_trace) != {i["objectWriteTraceId"] for i in inputs}:
                    raise CrmUnavailable(
                        "HubSpot answered a batch whose results cannot be told apart; the "
                        "records were created: list them before sending them again"
                    )
                done |= {int(trace): ItemResult(made) for trace, made in by_trace.items()}
            return [done[i] for i in range(len(chunk))]

        return await chunked(list(items), BATCH_LIMIT, send, lambda item: None)

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        url = self._objects(access, name) / "batch/update"

        async def send(chunk: list[tuple[str, Mapping[str, Any]]]) -> list[ItemResult]:
            failed: dict[str, CrmError] = {}
            for record_id, values in chunk:  # a bad relation id fails its item alone, unsent
                try:
                    self._input(name, values)
                except NotValid as refused:
                    failed[record_id] = refused
            valid = [(i, v) for i, v in chunk if i not in failed]
            if valid:
                inputs = [
                    {"id": i, "properties": self._input(name, v)["properties"]} for i, v in valid
                ]
                answer = await self.json_call(access, "POST", url, body={"inputs": inputs})
                for error in (answer or {}).get("errors") or ():
                    ids = ((error or {}).get("context") or {}).get("ids") or ()
                    for record_id in ids:  # errors inside a 200: OBJECT_NOT_FOUND is a 404
                        failed[str(record_id)] = self.refused(400, error)
                done = {
                    str(r.get("id"))
                    for r in (answer or {}).get("results") or ()
                    if isinstance(r, dict)
                }
                for record_id, _ in valid:  # neither in the results nor named by an error
                    if record_id not in done and record_id not in failed:
                        failed[record_id] = CrmUnavailable(
                            "HubSpot did not say what became of this record"
                        )
                for record_id, values in valid:  # associations: v4 calls, record by record
                    changes = [(c, v) for c, v in values.items() if c.startswith(LINK)]
                    if record_id not in failed and changes:
                        try:  # the properties are written; a link is added before one removed
                            _, stale = await self._link_new(access, name, record_id, changes)
                            await self._unlink(access, name, record_id, stale)
                        except CrmError as error:
                            failed[record_id] = error
            return [ItemResult(i, failed.get(i)) for i, _ in chunk]

        return await chunked_by_id(
            list(items), BATCH_LIMIT, send, lambda item: item[0], _well_formed, name
        )

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        url = self._objects(access, name) / "batch/archive"

        async def send(valid: list[str]) -> list[ItemResult]:
            await self.json_call(access, "POST", url, body={"inputs": [{"id": i} for i in valid]})
            return [ItemResult(i) for i in valid]

        return await chunked_by_id(
            list(ids), BATCH_LIMIT, send, lambda item: item, _well_formed, name
        )

    # ---- passthrough ------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to HubSpot's API host (``crm/v3/objects/contacts?limit=5``)."""
        return passthrough_on(access, path)
