"""Microsoft Dynamics 365 / Dataverse (Web API v9.2, OData v4): the code its descriptor cannot say.

Each organisation has its own host (the credential's ``instance_url``); tokens come from Microsoft
Entra ID (``{login_url}/{tenant}/oauth2/v2.0/token``; the US Government and China clouds' own):
``oAuth-internal`` refreshes them with crmgate's app registration (the refresh_token grant with
the organisation's ``user_impersonation`` scope, at the credential's ``tenant`` or
``organizations``), ``oAuth-external-refresh`` takes the client's, and ``user`` is server to
server: an application user's client id and secret, for which crmgate asks its tenant's token
endpoint (client_credentials, scope ``{org}/.default``) before the token expires, or when
Dataverse answers 401. crmgate's own authorization flow is for one organisation the client names
(``instance_scoped`` in the descriptor: Entra ID's scope names the organisation, and its answer
does not), on the global cloud only (the sovereign clouds are ``regions`` with their own).

Tables are named by their entity set (``contacts``); the metadata API (``EntityDefinitions``)
tells each table's logical name, primary id column, columns and lookups, and is read once per
table and hour. A lookup is named by its single-valued navigation property (``parentaccountid``,
``regardingobjectid_contact_task``): it reads from ``_<lookup>_value`` (with the
``lookuplogicalname`` annotation telling the target of a polymorphic one) and writes as
``<navigation>@odata.bind: /<set>(<id>)`` (``null`` unlinks).

Cost in Dataverse calls: lists follow ``@odata.nextLink`` ($skiptoken paging cookies: Dataverse
has no ``$skip``), 100 records a call (``Prefer: odata.maxpagesize=100``), through CursorWalks:
pages read in order cost one call per 100 records (page N+1 right after page N at most one, most
pages of 25 none); a first jump to page *p* of size *s* walks the links from the start,
⌈(p·s)/100⌉ calls, and is refused past 10,000 records (read in order or filter). A count is one
``$count=true`` call, exact to 5,000 (Dataverse's cap on ``@odata.count``); at 5,000 a second
call counts with ``$apply=aggregate($count as total)``, exact to 50,000 (Dataverse's aggregate
limit), past which the count is refused. Bulk is one ``$batch`` call per 100 records
(``Prefer: odata.continue-on-error``, one request per record, results in order; not
CreateMultiple/UpdateMultiple, which fail or succeed as a whole); a batch that gets no answer in
time is reported for its records as possibly done, and the rest are not sent.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from cachetools import LRUCache, TTLCache
from yarl import URL

from crmgate.connectors import multipart, shapes
from crmgate.connectors.base import (
    Access,
    Connector,
    CursorWalks,
    Fetch,
    Identity,
    ItemResult,
    Records,
    Unanswered,
    Verified,
    chunked_checked,
    passthrough_on,
)
from crmgate.connectors.catalogue import Platform
from crmgate.connectors.dialect import COMPARISONS, Target, TextDialect
from crmgate.connectors.errors import (
    CredentialsRejected,
    CrmError,
    CrmUnavailable,
    EntityNotFound,
    GrantRevoked,
    NotValid,
    answer_of,
)
from crmgate.connectors.multipart import Answer, Request
from crmgate.connectors.paging import Pager
from crmgate.model.mapping import EntityMap
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.outbound import Outbound
from crmgate.query import Condition, QueryError, SortKey
from crmgate.settings import OAuthClient

API = "/api/data/v9.2"
MAX_COLD_OFFSET = 10_000  # a first jump deeper than this would cost more than 100 calls
COUNT_CAP = 5000  # Dataverse caps @odata.count here
METADATA_LIFETIME = 3600.0
_GUID_IN = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{4}){3}-[0-9A-Fa-f]{12}")
_GUID = re.compile(f"^{_GUID_IN.pattern}$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
# An Entra ID tenant: its id (a GUID) or one of its domains (contoso.onmicrosoft.com).
_DOMAIN = re.compile(
    r"^(?=.{4,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_CRM = "Microsoft.Dynamics.CRM."  # the namespace of Dataverse's types and annotations
_ANNOTATION = f"{_CRM}lookuplogicalname"
_TARGETS = f'odata.include-annotations="{_ANNOTATION}"'  # Prefer: say each lookup's target
_LOOKUPS = frozenset(("Lookup", "Customer", "Owner"))
# What a ManyToOneRelationships row says of a lookup: its navigation property, column and target.
_RELATIONSHIP = (
    "ReferencingEntityNavigationPropertyName,ReferencingAttribute,ReferencedEntity".split(",")
)
# What describe reads of a column (the descriptor's [describe.fields] paths).
_ATTRIBUTE = (
    "LogicalName,AttributeType,AttributeOf,IsCustomAttribute,IsValidForCreate,"
    "IsValidForUpdate,IsValidForRead,RequiredLevel,DisplayName"
).split(",")


@dataclass(frozen=True)
class Table:
    """What the metadata API says of one table: its logical name and primary id column, what
    crmgate shows of it (named by its entity set), and its lookups by navigation."""

    logical: str
    primary_id: str
    info: ObjectInfo
    # navigation property -> (lookup column, target table's logical name, its entity set)
    navigation: Mapping[str, tuple[str, str, str]]

    @property
    def entity_set(self) -> str:
        return self.info.name

    def column(self, name: str) -> str:
        """The column a query names for a field: ``Id`` is the primary id, a navigation property
        its lookup's ``_x_value``."""
        if name == "Id":
            return self.primary_id
        if name in self.navigation:
            return f"_{self.navigation[name][0]}_value"
        return name


# Entra ID's refusals of an application user's own client id and secret.
_CLIENT_REFUSALS: dict[str, type[CrmError]] = {
    **dict.fromkeys(("invalid_client", "unauthorized_client", "invalid_grant"), GrantRevoked),
    **dict.fromkeys(("invalid_request", "invalid_scope", "invalid_resource"), CredentialsRejected),
}
_ODATA = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}


def _tenant(value: str, field: str) -> str:
    """An Entra ID tenant as the credential gives it: its id or a domain, nothing that could
    change the token endpoint's path."""
    if not (_GUID.match(value) or _DOMAIN.match(value)):
        raise NotValid(
            f"credential.{field}: an Entra ID tenant id (a GUID) or domain (contoso.com)",
            (f"credential.{field}",),
        )
    return value.lower()


class ODataFilter(TextDialect):
    """A $filter and $orderby for one table: ids and lookups take GUIDs (written bare, lower
    case); contains/startswith, which Dataverse runs as SQL LIKE, match their text literally."""

    crm = "Dynamics 365"
    operators: ClassVar[Mapping[str, str]] = {op: op for op in COMPARISONS}
    conjunction = " and "
    ascending, descending, then_by_id = " asc", " desc", " asc"
    sort_separator = ","
    id_pattern = _GUID
    id_refusal = "{field} takes a record id (a GUID)"

    def __init__(self, entity: EntityMap, table: Table) -> None:
        super().__init__(entity)
        self.table = table

    def name(self, field: str, column: str) -> str:
        name = self.table.column(column)
        if not _NAME.match(name):
            raise QueryError("filter", f"{field} cannot be filtered")
        return name

    def is_id(self, target: Target) -> bool:
        return target.name == self.table.primary_id or target.column in self.table.navigation

    def id_literal(self, value: str) -> str:
        return value.lower()

    def like(self, target: Target, op: str, text: str) -> str:
        """LIKE's wildcards ``[``, ``%`` and ``_`` made plain characters by enclosing them in
        brackets (``[`` first, as the others add brackets)."""
        plain = text.replace("[", "[[]").replace("%", "[%]").replace("_", "[_]")
        return f"{op}({target.name},{self.quote(plain)})"

    def sort_name(self, field: str, column: str) -> str:
        return self.table.column(column)


class DynamicsRecords(Records):
    """Records of a Dataverse organisation through its Web API, in its own column names."""

    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        # instance -> (when read, entity set -> Table without navigation)
        # bounded: one entry per organisation (and table) in use, least recently used out
        self._catalogues: LRUCache[str, tuple[float, dict[str, Table]]] = LRUCache(256)
        self._tables: TTLCache[tuple[str, str], Table] = TTLCache(4096, METADATA_LIFETIME)

    # ---- calls ------------------------------------------------------------------------------

    def _api(self, access: Access) -> URL:
        return access.instance_url.with_path(API)

    async def _json(self, access: Access, url: URL, prefer: str = "") -> dict[str, Any]:
        headers = {**_ODATA, "Prefer": prefer} if prefer else _ODATA
        answer = await self.json_call(access, "GET", url, headers=headers)
        if not isinstance(answer, dict):
            raise CrmUnavailable("Dynamics 365 answered an unexpected shape")
        return answer

    # ---- metadata ---------------------------------------------------------------------------

    async def _catalogue(
        self, access: Access, fresher: float = METADATA_LIFETIME
    ) -> dict[str, Table]:
        """The organisation's tables by entity set, read with the descriptor's
        ``[describe.objects]``."""
        key = str(access.instance_url)
        kept = self._catalogues.get(key)
        if kept is not None and time.monotonic() - kept[0] < fresher:
            return kept[1]
        url = (self._api(access) / "EntityDefinitions").with_query(
            {
                "$select": "LogicalName,EntitySetName,PrimaryIdAttribute,DisplayName,"
                "DisplayCollectionName,IsCustomEntity",
                "$filter": "IsPrivate eq false",
            }
        )
        objects, found = self.platform.describe.objects, {}
        assert objects is not None, "the descriptor reads the tables with [describe.objects]"
        for row in _rows(await self._json(access, url), "a table catalogue"):
            try:
                info = objects.read(row, "Id")
            except ValueError:
                raise shapes.unexpected("Dynamics 365", "a table catalogue") from None
            if info is not None and _NAME.match(info.name):
                logical, primary = str(row["LogicalName"]), str(row["PrimaryIdAttribute"])
                found[info.name] = Table(logical, primary, info, {})
        if not found:
            raise CrmUnavailable("Dynamics 365 answered an empty table catalogue")
        self._catalogues[key] = (time.monotonic(), found)
        return found

    async def _table(self, access: Access, set_name: str) -> Table:
        """A table by its entity set, with its lookups (cached for an hour per organisation)."""
        if not _NAME.match(set_name):
            raise EntityNotFound(f"Dynamics 365 has no table {set_name[:64]!r}")
        key = (str(access.instance_url), set_name)
        kept = self._tables.get(key)
        if kept is not None:
            return kept
        catalogue = await self._catalogue(access)
        if set_name not in catalogue:  # a table made since: read again, at most once a minute
            catalogue = await self._catalogue(access, fresher=60.0)
        table = catalogue.get(set_name)
        if table is None:
            raise EntityNotFound(f"Dynamics 365 has no table {set_name[:64]!r}")
        sets = {t.logical: t.entity_set for t in catalogue.values()}
        relationships = await self._metadata(access, table, "ManyToOneRelationships", _RELATIONSHIP)
        navigation: dict[str, tuple[str, str, str]] = {}
        for row in _rows(relationships, "relationships"):
            said = [row.get(k) for k in _RELATIONSHIP]
            nav, column, target = map(str, said)
            if all(isinstance(v, str) for v in said) and _NAME.match(nav) and target in sets:
                navigation[nav] = (column, target, sets[target])
        self._tables[key] = table = replace(table, navigation=navigation)
        return table

    async def _metadata(
        self, access: Access, table: Table, path: str, select: Sequence[str], expand: str = ""
    ) -> dict[str, Any]:
        """A table's metadata at ``path`` (``Attributes``, ``ManyToOneRelationships``)."""
        query = {"$select": ",".join(select), **({"$expand": expand} if expand else {})}
        url = self._api(access) / f"EntityDefinitions(LogicalName='{table.logical}')" / path
        return await self._json(access, url.with_query(query))

    async def objects(self, access: Access) -> list[ObjectInfo]:
        return [t.info for t in (await self._catalogue(access)).values()]

    async def _options(self, access: Access, table: Table, cast: str) -> dict[str, tuple[str, ...]]:
        path, expand = f"Attributes/{_CRM}{cast}", "OptionSet($select=Options)"
        answer = await self._metadata(access, table, path, ["LogicalName"], expand)
        found = {}
        for row in _rows(answer, "choices"):
            options = _part(row, "OptionSet").get("Options") or []
            if not isinstance(options, list) or not all(
                isinstance(o, dict) and isinstance(o.get("Value"), int) for o in options
            ):
                raise CrmUnavailable("Dynamics 365 answered choices of an unexpected shape")
            found[str(row.get("LogicalName"))] = tuple(str(o["Value"]) for o in options)
        return found

    async def describe(self, access: Access, name: str) -> ObjectInfo:
        table = await self._table(access, name)
        attributes = await self._metadata(access, table, "Attributes", _ATTRIBUTE)
        path = f"Attributes/{_CRM}DateTimeAttributeMetadata"
        dates = await self._metadata(access, table, path, ["LogicalName", "DateTimeBehavior"])
        # A date is a column of DateOnly behaviour (stored and read as 2024-05-31); a DateOnly
        # Format is only how the apps show it, its value a date and time still.
        date_only = {
            str(row.get("LogicalName"))
            for row in _rows(dates, "date columns")
            if _part(row, "DateTimeBehavior").get("Value") == "DateOnly"
        }
        options = {
            **await self._options(access, table, "PicklistAttributeMetadata"),
            **await self._options(access, table, "StatusAttributeMetadata"),
        }

        def column(spec: Mapping[str, Any], info: FieldInfo) -> list[FieldInfo]:
            """A lookup shows as its navigation properties; a plain column with its kind (a
            date where DateOnly) and choices; any other is not shown."""
            _part(spec, "RequiredLevel")
            if not _NAME.match(info.name):
                return []
            if info.native_type in _LOOKUPS:
                return [
                    replace(
                        info,
                        name=nav,
                        label=info.label if nav == info.name else f"{info.label} ({target})",
                        required=False,
                        reference_to=(target,),
                    )
                    for nav, (lookup, target, _) in table.navigation.items()
                    if lookup == info.name
                ]
            if info.native_type not in self.platform.describe.fields.kinds:
                return []  # virtual, party-list and image columns are not shown
            kind = "date" if info.name in date_only else info.kind
            return [replace(info, kind=kind, enum=options.get(info.name, ()))]

        return replace(table.info, fields=tuple(self.read_fields(attributes, column)))

    # ---- reading ----------------------------------------------------------------------------

    @staticmethod
    def _select(table: Table, columns: Sequence[str]) -> str:
        return ",".join(dict.fromkeys(table.column(c) for c in columns))

    @staticmethod
    def _flat(table: Table, row: Any, columns: Sequence[str]) -> dict[str, Any]:
        """A Dataverse record as one flat native record for the entity maps: its columns as
        read, ``Id``, and each asked navigation property's id when the lookup points there."""
        if not isinstance(row, dict):
            raise CrmUnavailable("Dynamics 365 answered a record of an unexpected shape")
        flat = {k: v for k, v in row.items() if not k.startswith("@odata.") and "@" not in k}
        flat["Id"] = row.get(table.primary_id)
        for column in columns:
            if column not in table.navigation:
                continue
            lookup, target, _ = table.navigation[column]
            value = row.get(f"_{lookup}_value")
            said = row.get(f"_{lookup}_value@{_ANNOTATION}")
            single = sum(1 for c, _, _ in table.navigation.values() if c == lookup) == 1
            flat[column] = (
                value if value and (said == target or (said is None and single)) else None
            )
        return flat

    def _query(
        self, table: Table, entity: EntityMap, conditions: Sequence[Condition]
    ) -> tuple[str, dict[str, str]]:
        """The $filter of ``conditions`` (empty for none), and a query with it."""
        expression = ODataFilter(entity, table).where(conditions)
        return expression, {"$filter": expression} if expression else {}

    def _fetch(self, access: Access, table: Table, first: URL, columns: Sequence[str]) -> Fetch:
        prefer = f"odata.maxpagesize={self.platform.paging.batch},{_TARGETS}"
        pager = Pager(self, self.platform.paging, lambda row: self._flat(table, row, columns))
        return pager.fetch(access, first, headers={**_ODATA, "Prefer": prefer})

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
        table = await self._table(access, entity.object)
        query = {
            "$select": self._select(table, columns),
            # ending with the primary id: a stable order for the paging cookies
            "$orderby": ODataFilter(entity, table).order(sort),
            **self._query(table, entity, conditions)[1],
        }
        first = (self._api(access) / table.entity_set).with_query(query)
        key = CursorWalks.key(access, table.entity_set, *(f"{k}={v}" for k, v in query.items()))
        offset = (page - 1) * page_size
        return await self.walks.page(
            key, offset, page_size, self._fetch(access, table, first, columns), MAX_COLD_OFFSET
        )

    async def count(
        self, access: Access, entity: EntityMap, conditions: Sequence[Condition] = ()
    ) -> int:
        table = await self._table(access, entity.object)
        expression, where = self._query(table, entity, conditions)
        query = {"$select": table.primary_id, "$count": "true", **where}
        url = (self._api(access) / table.entity_set).with_query(query)
        answer = await self._json(access, url, "odata.maxpagesize=1")
        total = shapes.integer(answer.get("@odata.count"), "Dynamics 365", "a count")
        if total < COUNT_CAP:
            return total
        # @odata.count stops at 5,000: the aggregate counts on, up to Dataverse's 50,000
        apply = "aggregate($count as total)"
        if expression:
            apply = f"filter({expression})/{apply}"
        url = (self._api(access) / table.entity_set).with_query({"$apply": apply})
        try:
            rows = _rows(await self._json(access, url), "an aggregate")
        except NotValid as refused:
            raise QueryError(
                "filter", f"more records than Dynamics 365 counts at once; narrow it ({refused})"
            ) from None
        return shapes.integer(rows[0].get("total") if rows else None, "Dynamics 365", "a count")

    def _record(self, access: Access, table: Table, record_id: str) -> URL:
        if not _GUID.match(record_id):
            raise EntityNotFound(f"{table.logical} {record_id[:40]!r} not found")
        return self._api(access) / f"{table.entity_set}({record_id.lower()})"

    async def get(
        self, access: Access, entity: EntityMap, record_id: str, columns: Sequence[str]
    ) -> dict[str, Any]:
        table = await self._table(access, entity.object)
        url = self._record(access, table, record_id).with_query(
            {"$select": self._select(table, columns)}
        )
        return self._flat(table, await self._json(access, url, _TARGETS), columns)

    async def get_many(
        self, access: Access, entity: EntityMap, ids: Sequence[str], columns: Sequence[str]
    ) -> list[dict[str, Any]]:
        """The records of ``ids`` in one query per 50 (``expand``)."""
        table = await self._table(access, entity.object)
        wanted = sorted({i.lower() for i in ids if _GUID.match(i)})
        found: list[dict[str, Any]] = []
        for start in range(0, len(wanted), 50):
            chunk = wanted[start : start + 50]
            query = {
                "$select": self._select(table, columns),
                "$filter": " or ".join(f"{table.primary_id} eq {i}" for i in chunk),
            }
            url = (self._api(access) / table.entity_set).with_query(query)
            rows = _rows(await self._json(access, url, _TARGETS), "records")
            found += [self._flat(table, r, columns) for r in rows]
        return found

    # ---- writing ----------------------------------------------------------------------------

    def _payload(self, table: Table, values: Mapping[str, Any]) -> dict[str, Any]:
        """Native values as a Dataverse body: navigation properties become ``@odata.bind``
        (``null`` unlinks, unless another navigation of the same lookup links it)."""
        body: dict[str, Any] = {}
        linked = {
            table.navigation[k][0]
            for k, v in values.items()
            if k in table.navigation and v is not None
        }
        for key, value in values.items():
            if key not in table.navigation:
                body[key] = value
                continue
            column, _, target_set = table.navigation[key]
            if value is None:
                if column not in linked:
                    body[f"{key}@odata.bind"] = None
                continue
            if not isinstance(value, str) or not _GUID.match(value):
                raise NotValid(f"{key}: a record id (a GUID)", (key,))
            body[f"{key}@odata.bind"] = f"/{target_set}({value.lower()})"
        return body

    def _request(
        self, access: Access, table: Table, method: str, item: tuple[str | None, Any]
    ) -> Request:
        """The request that creates (POST), updates (PATCH) or deletes a record: ``item`` is its
        id (None to create) and values (None to delete)."""
        record_id, values = item
        url = self._api(access) / table.entity_set
        url = url if record_id is None else self._record(access, table, record_id)
        body = None if values is None else self._payload(table, values)
        # If-Match: * makes a PATCH an update only (without it, it creates a missing record)
        return (method, str(url), body, {"If-Match": "*"} if method == "PATCH" else {})

    async def _write(self, access: Access, name: str, method: str, item: tuple[Any, Any]) -> str:
        """One record written; the id Dataverse says it created (POST)."""
        table = await self._table(access, name)
        method, url, body, headers = self._request(access, table, method, item)
        response = await self.send_json(
            access, method, URL(url, encoded=True), body=body, headers={**_ODATA, **headers}
        )
        if response.status >= 400:
            raise self.error(response)
        return _created_id(response.headers.get("OData-EntityId", "")) if method == "POST" else ""

    async def create(self, access: Access, name: str, values: Mapping[str, Any]) -> str:
        return await self._write(access, name, "POST", (None, values))

    async def update(
        self, access: Access, name: str, record_id: str, values: Mapping[str, Any]
    ) -> None:
        await self._write(access, name, "PATCH", (record_id, values))

    async def delete(self, access: Access, name: str, record_id: str) -> None:
        await self._write(access, name, "DELETE", (record_id, None))

    async def _batch(self, access: Access, requests: list[Request]) -> list[Answer]:
        """One $batch call: each request on its own (no change set), Dataverse going on past a
        failure; the answers in the order sent. Raises ``Unanswered`` when the call got no
        answer (a timeout): Dataverse may have run any of its requests."""
        kind, body = multipart.encode(requests)
        sent = {**_ODATA, "Content-Type": kind, "Prefer": "odata.continue-on-error"}
        url = self._api(access) / "$batch"
        try:
            response = await self.send(access, "POST", url, headers=sent, data=body)
        except CrmUnavailable as failure:
            reason = failure.message.removeprefix(f"{self.platform.name}: ")
            raise Unanswered(
                f"Dynamics 365 gave no answer to the batch holding this item ({reason}), so it "
                "may have been done: list the records before sending it again",
                "Dynamics 365: not sent, as an earlier batch of this call got no answer",
            ) from None
        if response.status >= 400:
            raise self.error(response)
        try:
            answers = multipart.decode(response.headers.get("Content-Type", ""), response.body)
        except ValueError as odd:
            raise CrmUnavailable(f"Dynamics 365 answered a batch that {odd}") from None
        if len(answers) > len(requests):
            raise CrmUnavailable("Dynamics 365 answered a batch with more results than requests")
        return answers

    def _result(self, answer: Answer | None, record_id: str | None, creating: bool) -> ItemResult:
        """One item's result from its answer in a batch (None: the batch ended before it)."""
        if answer is None:
            return ItemResult(record_id, CrmUnavailable("Dynamics 365 did not process this item"))
        status, headers, body = answer
        if status >= 400:
            return ItemResult(record_id, self.refused(status, answer_of(body), headers))
        if not creating:
            return ItemResult(record_id)
        try:
            return ItemResult(_created_id(headers.get("odata-entityid", "")))
        except CrmUnavailable as odd:
            return ItemResult(None, odd)

    async def _bulk(
        self,
        access: Access,
        name: str,
        method: str,
        items: Sequence[tuple[str | None, Mapping[str, Any] | None]],
    ) -> list[ItemResult]:
        """``items`` (record id, values) in $batch calls of ``[bulk] size`` requests, a result
        for each: an item whose request cannot be made (a malformed id, a lookup id that is no
        GUID) is reported alone and the others sent; after a batch with no answer, whose items
        may or may not be done, the rest are not sent (``Unanswered``)."""
        table = await self._table(access, name)

        def request(item: tuple[str | None, Mapping[str, Any] | None]) -> Request:
            return self._request(access, table, method, item)

        def refuse(item: tuple[str | None, Mapping[str, Any] | None]) -> CrmError | None:
            try:
                request(item)
            except CrmError as wrong:
                return wrong
            return None

        async def send(chunk: list[tuple[str | None, Any]]) -> list[ItemResult]:
            answers = await self._batch(access, [request(item) for item in chunk])
            return [
                self._result(answers[n] if n < len(answers) else None, item[0], method == "POST")
                for n, item in enumerate(chunk)
            ]

        return await chunked_checked(
            list(items), self.platform.bulk.size, send, lambda item: item[0], refuse, "Dynamics 365"
        )

    async def bulk_create(
        self, access: Access, name: str, items: Sequence[Mapping[str, Any]]
    ) -> list[ItemResult]:
        return await self._bulk(access, name, "POST", [(None, values) for values in items])

    async def bulk_update(
        self, access: Access, name: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[ItemResult]:
        return await self._bulk(access, name, "PATCH", items)

    async def bulk_delete(self, access: Access, name: str, ids: Sequence[str]) -> list[ItemResult]:
        return await self._bulk(access, name, "DELETE", [(i, None) for i in ids])

    # ---- passthrough ------------------------------------------------------------------------

    def passthrough_url(self, access: Access, path: str) -> URL:
        """``path`` relative to the organisation's Web API (``contacts?$top=5``, ``WhoAmI``),
        or absolute under ``/api/data/``."""
        return passthrough_on(access, path, API, "/api/data/")


class DynamicsConnector(Connector):
    name = "dynamics"
    records_type = DynamicsRecords

    def __init__(self, platform: Platform, outbound: Outbound) -> None:
        super().__init__(platform, outbound)
        # digest of an application user's credential -> who it acts as (see verify)
        self._identities: LRUCache[str, Identity] = LRUCache(1024)

    async def verify(self, authorization: str, credential: Mapping[str, str]) -> Verified:
        """Who the credential acts as: the descriptor's ``[verify]`` (WhoAmI, then the user's
        systemusers record); an application user's after its first token."""
        if authorization != "user":
            if credential.get("tenant"):
                _tenant(credential["tenant"], "tenant")
            return await super().verify(authorization, credential)
        instance = self.instance_url(credential["instance_url"])
        derived = await self._client_credentials(instance, credential)
        # A renewal of the same application user needs the grant alone: who it acts as was
        # asked once (WhoAmI, systemusers) and does not change with its tokens.
        said = (credential[k] for k in ("tenant_id", "client_id", "client_secret"))
        key = hashlib.sha256("\n".join((str(instance), *said)).encode()).hexdigest()
        identity = self._identities.get(key)
        if identity is None:
            identity = await self.identify(Access(instance, derived["access_token"]))
            self._identities[key] = identity
        return Verified(identity, derived)

    # ---- Microsoft Entra ID -----------------------------------------------------------------

    def token_url(self, instance: URL, tenant: str | None) -> URL:
        """The Entra ID token endpoint for an organisation: its cloud's (the descriptor's
        ``regions``; its ``login_url`` for the global one), of ``tenant``, or without one of
        any work or school account (``organizations``)."""
        return self.login_at(f"/{tenant or 'organizations'}/oauth2/v2.0/token", str(instance))

    async def _client_credentials(
        self, instance: URL, credential: Mapping[str, str]
    ) -> dict[str, str]:
        """An application user's token: the client_credentials grant (RFC 6749 section 4.4)
        with its own client id and secret, at its tenant's token endpoint. Its expiry is
        derived, so the token manager renews it before it expires (not after a 401)."""
        secret = credential["client_secret"]
        client = OAuthClient(client_id=credential["client_id"], client_secret=secret)
        url = self.token_url(instance, _tenant(credential["tenant_id"], "tenant_id"))
        form = {"grant_type": "client_credentials", "scope": f"{instance}/.default"}
        fields, derived = await self.token_request(form, client, url, _CLIENT_REFUSALS)
        return {"access_token": fields["access_token"], **derived}

    def refresh_url(self, credential: Mapping[str, str]) -> URL | None:
        """The token endpoint of the credential's tenant when it names one."""
        tenant = _tenant(credential["tenant"], "tenant") if credential.get("tenant") else None
        return self.token_url(self.instance_url(credential["instance_url"]), tenant)


def _rows(answer: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    """The ``value`` list of a collection answer, each row an object."""
    return shapes.rows(answer, "value", "Dynamics 365", what)


def _part(row: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """A complex property of a metadata row (``RequiredLevel``, ``OptionSet``)."""
    return shapes.obj(row.get(name), "Dynamics 365", f"a {name}")


def _created_id(location: str) -> str:
    found = _GUID_IN.findall(location)
    if not found:
        raise CrmUnavailable("Dynamics 365 created a record without saying its id")
    return str(found[-1]).lower()
