"""The unified entity service: one request shape, any CRM.

Between the HTTP layer (api/routes/entities.py) and a connector: finds the caller's application,
opens its credentials, checks that the platform offers the entity and the operation, translates
records with the descriptor's entity map (bound to the CRM's describe, so custom fields and native
types are known), and turns a CRM's per-item answers into the contract's results. It knows no
CRM; the connector does.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crmgate.applications import ApplicationService
from crmgate.connectors import entity_scopes
from crmgate.connectors.base import CALL_FAILURES, Access, Connector, ItemResult
from crmgate.connectors.catalogue import Platform
from crmgate.connectors.errors import (
    CredentialsRejected,
    CrmError,
    EntityNotFound,
    GrantRevoked,
    NotSupported,
    NotValid,
    SessionExpired,
)
from crmgate.model.mapping import LISTS, METHODS, EntityMap, MappingError, entity_schema
from crmgate.model.objects import FieldInfo, ObjectInfo
from crmgate.outbound import OutboundRefused
from crmgate.query import Condition, Pipeline, QueryError, SortKey
from crmgate.store.accounts import Principal
from crmgate.store.applications import ApplicationView, Credentials
from crmgate.store.models import utcnow
from crmgate.tokens import TokenManager

log = logging.getLogger("crmgate.entities")

MAX_BULK_ITEMS = 1000
DEFAULT_DESCRIBE_LIFETIME = 300.0
MAX_DESCRIBE_LIFETIME = 86400.0
TOUCH_INTERVAL = 60.0
MAX_TOUCHED = 100_000
MAX_PASSTHROUGH_PATH = 4096
MAX_PASSTHROUGH_HEADERS = 50
PASSTHROUGH_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"})
# Headers a passthrough request may not set: crmgate authenticates the call, and the framing and
# routing of the request are the gateway's.
_FORBIDDEN_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "forwarded",
    }
)
# Headers of the CRM's answer that are not passed back (hop-by-hop, recomputed, or session).
_DROPPED_ANSWER_HEADERS = frozenset(
    {
        "set-cookie",
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "content-encoding",
        "proxy-authenticate",
        "trailer",
        "upgrade",
    }
)
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")


@dataclass(frozen=True)
class Connection:
    """One application's way to its CRM, for the length of a request."""

    view: ApplicationView
    platform: Platform
    connector: Connector
    access: Access
    granted: frozenset[str] | None = None  # the OAuth scopes granted, where known


class DescribeCache:
    """The CRM's describes, per application and object (case-insensitive, as object names are),
    valid for the credential revision they were read with; least recently used go first."""

    def __init__(self, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[int, float, ObjectInfo]] = OrderedDict()
        self._max = max_entries

    def get(self, key: str, revision: int, name: str, lifetime: float) -> ObjectInfo | None:
        entry = self._entries.get((key, name.casefold()))
        if entry is None or entry[0] != revision or time.monotonic() - entry[1] >= lifetime:
            return None
        self._entries.move_to_end((key, name.casefold()))
        return entry[2]

    def put(self, key: str, revision: int, name: str, info: ObjectInfo) -> None:
        self._entries[(key, name.casefold())] = (revision, time.monotonic(), info)
        self._entries.move_to_end((key, name.casefold()))
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class EntityService:
    def __init__(self, applications: ApplicationService, tokens: TokenManager) -> None:
        self.applications = applications
        self.tokens = tokens
        self.describes = DescribeCache()
        self._touched: OrderedDict[str, float] = OrderedDict()

    # ---- the application ----------------------------------------------------------------------

    async def connect(self, principal: Principal, application_key: str | None) -> Connection:
        """The caller's application (404 for a key of another organisation, as for none),
        with its access refreshed first when its token is known to expire now."""
        store = self.applications.store
        view, credentials = await store.credentials(
            principal.organisation_id, application_key or ""
        )
        platform = self.applications.platform(view.type)
        connector = self.applications.connector(platform)
        if not view.is_authorized:
            how = (
                "authorize it again (the OAuth flow) or send"
                if view.authorization.startswith("oAuth")
                else "send"
            )
            raise CredentialsRejected(
                f"{platform.name} refused this application's authorization; {how} new "
                "credentials with PUT /v1/application/{key}"
            )
        if self.tokens.expiring(view, credentials):
            try:
                renewed = await self.tokens.renew(view, platform, connector)
            except GrantRevoked:
                raise
            except CrmError as failure:
                if not self.tokens.still_valid(credentials):
                    raise
                # refreshing ahead of time failed, but the token still works: use it
                log.warning("application %s: early refresh failed: %s", view.key[:8], failure)
                renewed = None
            if renewed is not None:
                view, credentials = renewed
        await self._touch(view.key)
        return self._connection(view, credentials, platform, connector)

    def _connection(
        self,
        view: ApplicationView,
        credentials: Credentials,
        platform: Platform,
        connector: Connector,
    ) -> Connection:
        async def renewal() -> Access | None:
            # The CRM said the session expired (it did nothing): new credentials where crmgate
            # can make them (oAuth-internal: refresh; user: log in again), one renewal at a
            # time per application; where it cannot, the client must.
            renewed = await self.tokens.renew(view, platform, connector)
            if renewed is not None:
                return self._connection(*renewed, platform, connector).access
            if view.authorization == "oAuth-external-refresh":
                raise SessionExpired(
                    f"{platform.name} refused the access token (expired or revoked); send a "
                    "new access token with PUT /v1/application/{key}"
                )
            return None

        try:
            access = connector.session(
                view.authorization, credentials.fields, credentials.derived, renewal
            )
        except OutboundRefused as refused:
            # e.g. the operator narrowed the platform's hosts after the application was made
            raise CredentialsRejected(
                f"{platform.name}: the application's instance URL is not allowed ({refused}); "
                "send new credentials with PUT /v1/application/{key}"
            ) from None
        granted = entity_scopes.granted(credentials.derived)
        return Connection(view, platform, connector, access, granted)

    async def _touch(self, key: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
            return
        self._touched[key] = now
        self._touched.move_to_end(key)
        while len(self._touched) > MAX_TOUCHED:
            self._touched.popitem(last=False)
        try:
            await self.applications.store.touch(key, utcnow())
        except Exception:
            log.warning("could not record the use of application %s", key[:8], exc_info=True)

    # ---- describe, cached -----------------------------------------------------------------------

    async def object_info(
        self, connection: Connection, name: str, lifetime: float | None = None
    ) -> ObjectInfo:
        """The CRM's describe of one object for this application's user. Cached in memory for
        ``lifetime`` seconds (X-API2CRM-DESCRIBE-LIFETIME; 0 asks the CRM again); new
        credentials start a new cache entry."""
        ttl = min(
            DEFAULT_DESCRIBE_LIFETIME if lifetime is None else lifetime, MAX_DESCRIBE_LIFETIME
        )
        key, revision = connection.view.key, connection.view.credentials_revision
        cached = self.describes.get(key, revision, name, ttl)
        if cached is not None:
            return cached
        info = await connection.connector.records.describe(connection.access, name)
        self.describes.put(key, revision, name, info)
        return info

    def entity_map(self, connection: Connection, entity: str, method: str) -> EntityMap:
        """The platform's map of a unified entity, if it offers ``method`` on it (else 403
        NOT_SUPPORTED) and the application was granted its OAuth scope (else 403 NOT_ALLOWED)."""
        mapped = connection.platform.entities.get(entity)
        if mapped is None or method not in mapped.methods:
            raise NotSupported(
                f"{connection.platform.name} does not support {method} of {entity}"
                + ("" if mapped is None else f" (it supports: {', '.join(mapped.methods)})")
            )
        entity_scopes.check(connection.platform, connection.granted, entity)
        return mapped

    async def bound_map(
        self, connection: Connection, entity: str, method: str, lifetime: float | None = None
    ) -> tuple[EntityMap, ObjectInfo]:
        mapped = self.entity_map(connection, entity, method)
        info = await self.object_info(connection, mapped.object, lifetime)
        return mapped.bind(info), info

    async def generic_map(
        self, connection: Connection, name: str, lifetime: float | None = None
    ) -> tuple[EntityMap, ObjectInfo]:
        entity_scopes.check(connection.platform, connection.granted, name=name)
        info = await self.object_info(connection, name, lifetime)
        return EntityMap.generic(info), info

    # ---- reading ------------------------------------------------------------------------------

    @staticmethod
    def columns(mapped: EntityMap, fields: Sequence[str] | None) -> list[str]:
        if fields is not None:
            known = set(mapped.known_fields())
            if mapped.entity:
                known |= set(entity_schema(mapped.entity))
            unknown = sorted(set(fields) - known)
            if unknown:
                raise QueryError("fields", f"unknown field(s) {', '.join(unknown)}")
        return mapped.native_columns(fields)

    @staticmethod
    def render(
        mapped: EntityMap, native: Mapping[str, Any], *, with_native: bool, fields: Any = None
    ) -> dict[str, Any]:
        record = mapped.to_unified(native)
        if fields is not None:
            keep = {"id", *fields}
            record = {name: value for name, value in record.items() if name in keep}
        if with_native:
            record["native"] = {k: v for k, v in native.items() if k != "attributes"}
        return record

    async def list_records(
        self,
        connection: Connection,
        mapped: EntityMap,
        *,
        conditions: Sequence[Condition],
        sort: Sequence[SortKey],
        page: int,
        page_size: int,
        fields: Sequence[str] | None,
        with_native: bool,
    ) -> list[dict[str, Any]]:
        columns = self.columns(mapped, fields)
        _listed_by_parent(connection, mapped, conditions)
        rows = await connection.connector.records.list_page(
            connection.access,
            mapped,
            columns,
            conditions=conditions,
            sort=sort,
            page=page,
            page_size=page_size,
        )
        return [self.render(mapped, row, with_native=with_native, fields=fields) for row in rows]

    async def expand(
        self,
        connection: Connection,
        mapped: EntityMap,
        records: list[dict[str, Any]],
        targets: Sequence[str],
        lifetime: float | None = None,
    ) -> None:
        """`expand`: each linked record of the named relations is read (one CRM call per
        relation and page) and put, unified, in place of its bare ``{"id"}``."""
        for target in targets:
            if target not in mapped.relations:
                known = ", ".join(sorted(mapped.relations)) or "none"
                raise QueryError(
                    "expand", f"{target!r} is not a relation here (relations: {known})"
                )
            target_map, _ = await self.bound_map(connection, target, "get", lifetime)
            links = [
                link
                for record in records
                for link in (record.get("relation") or {}).get(target, [])
                if isinstance(link.get("entity"), dict)
            ]
            ids = [str(link["entity"]["id"]) for link in links]
            if not ids:
                continue
            rows = await connection.connector.records.get_many(
                connection.access, target_map, ids, target_map.native_columns()
            )
            found = {str(row.get(target_map.id)): target_map.to_unified(row) for row in rows}
            for link in links:
                wanted = str(link["entity"]["id"])
                match = found.get(wanted) or next(
                    (r for i, r in found.items() if i[:15] == wanted[:15]), None
                )
                if match is not None:
                    link["entity"] = match

    async def unique(
        self,
        connection: Connection,
        mapped: EntityMap,
        field: str,
        conditions: Sequence[Condition],
        descending: bool,
    ) -> list[dict[str, Any]]:
        """`unique=true`: the distinct values of one field (grouped by the CRM), as records
        holding only that field, in its order."""
        column = mapped.filter_column("fields", field)
        _listed_by_parent(connection, mapped, conditions)
        rows = await connection.connector.records.aggregate(
            connection.access, mapped, [], [column], conditions
        )
        values = [{field: mapped.unified_value(field, row.get(column))} for row in rows]
        return values[::-1] if descending else values

    async def count(
        self, connection: Connection, mapped: EntityMap, conditions: Sequence[Condition]
    ) -> int:
        _listed_by_parent(connection, mapped, conditions)
        return await connection.connector.records.count(connection.access, mapped, conditions)

    async def get_record(
        self,
        connection: Connection,
        mapped: EntityMap,
        record_id: str,
        *,
        fields: Sequence[str] | None,
        with_native: bool,
    ) -> dict[str, Any]:
        columns = [*self.columns(mapped, fields), *mapped.match]
        row = await connection.connector.records.get(connection.access, mapped, record_id, columns)
        if any(row.get(column) != value for column, value in mapped.match.items()):
            # e.g. a plain task asked for as a call
            raise EntityNotFound(f"{mapped.entity or mapped.object} {record_id[:40]} not found")
        return self.render(mapped, row, with_native=with_native, fields=fields)

    # ---- writing ------------------------------------------------------------------------------

    @staticmethod
    def to_native(mapped: EntityMap, record: Any, *, where: str = "") -> dict[str, Any]:
        if not isinstance(record, Mapping):
            raise NotValid(f"{where or 'the body'} must be a JSON object", (where,))
        try:
            return mapped.to_native({k: v for k, v in record.items() if k != "native"})
        except MappingError as error:
            field = f"{where}.{error.field}" if where else error.field
            raise NotValid(f"{field}: {error.message}", (field,)) from None

    async def create(self, connection: Connection, mapped: EntityMap, record: Any) -> str:
        values = mapped.on_create(self.to_native(mapped, record))
        try:
            return await connection.connector.records.create(
                connection.access, mapped.object, values
            )
        except NotValid as refused:
            raise _unified(mapped, refused) from None

    async def _require_match(
        self, connection: Connection, mapped: EntityMap, record_id: str
    ) -> None:
        """Through a map with match values (call = Task of subtype Call), only its own records
        may be changed: a plain task is not found as a call."""
        if mapped.match and record_id not in await connection.connector.records.matching(
            connection.access, mapped, [record_id]
        ):
            raise EntityNotFound(f"{mapped.entity or mapped.object} {record_id[:40]} not found")

    async def update(
        self, connection: Connection, mapped: EntityMap, record_id: str, record: Any
    ) -> None:
        values = self.to_native(mapped, {k: v for k, v in dict(record or {}).items() if k != "id"})
        await self._require_match(connection, mapped, record_id)
        try:
            await connection.connector.records.update(
                connection.access, mapped.object, record_id, values
            )
        except NotValid as refused:
            raise _unified(mapped, refused) from None

    async def delete(self, connection: Connection, mapped: EntityMap, record_id: str) -> None:
        await self._require_match(connection, mapped, record_id)
        await connection.connector.records.delete(connection.access, mapped.object, record_id)

    # ---- aggregate ----------------------------------------------------------------------------

    async def aggregate(
        self,
        connection: Connection,
        mapped: EntityMap,
        pipeline: Pipeline,
        conditions: Sequence[Condition],
    ) -> dict[str, Any]:
        """The contract's Aggregate: ``result.groups``, one per group of ``by`` values, each
        with the value of every function (count, sum_amount, ...), computed by the CRM."""
        functions = []
        for aggregation in pipeline.aggregations:
            if aggregation.field is None:
                functions.append((aggregation.function, mapped.id))
                continue
            column = mapped.filter_column("pipeline", aggregation.field)
            kind = mapped.kind(aggregation.field)
            if aggregation.function in ("sum", "avg") and kind not in ("number", "integer"):
                raise QueryError(
                    "pipeline", f"{aggregation.function} needs a number field, not {kind}"
                )
            functions.append((aggregation.function, column))
        columns = [mapped.filter_column("pipeline", name) for name in pipeline.group_by]
        _listed_by_parent(connection, mapped, conditions)
        rows = await connection.connector.records.aggregate(
            connection.access, mapped, functions, columns, conditions
        )
        groups = []
        for row in rows:
            group: dict[str, Any] = {
                "by": {
                    name: mapped.unified_value(name, row.get(column))
                    for name, column in zip(pipeline.group_by, columns, strict=True)
                }
            }
            for position, aggregation in enumerate(pipeline.aggregations):
                value = row.get(f"a{position}")
                if aggregation.function in ("min", "max") and aggregation.field is not None:
                    value = mapped.unified_value(aggregation.field, value)
                group[aggregation.name] = value
            groups.append(group)
        return {"id": str(uuid.uuid4()), "result": {"groups": groups}}

    # ---- bulk ---------------------------------------------------------------------------------

    @staticmethod
    def _items(body: Any) -> list[Any]:
        items = body.get("item") if isinstance(body, Mapping) else None
        if not isinstance(items, list) or not items:
            raise NotValid("item: a non-empty list of records is required", ("item",))
        if len(items) > MAX_BULK_ITEMS:
            raise NotValid(f"item: at most {MAX_BULK_ITEMS} records a call", ("item",))
        return items

    async def bulk(
        self, connection: Connection, mapped: EntityMap, action: str, body: Any
    ) -> dict[str, Any]:
        """POST (create), PUT (update: each item has its id) or DELETE (each item is {id}).
        Every item gets a result in the order sent; an item the gateway can already tell is
        wrong is reported without being sent, the rest go to the CRM's batch API."""
        items = self._items(body)
        results: list[ItemResult | None] = [None] * len(items)
        sendable: list[tuple[int, Any]] = []
        for index, item in enumerate(items):
            where = f"item[{index}]"
            try:
                if action == "create":
                    values = self.to_native(mapped, item, where=where)
                    sendable.append((index, mapped.on_create(values)))
                    continue
                record_id = item.get("id") if isinstance(item, Mapping) else None
                if not isinstance(record_id, str) or not record_id:
                    raise NotValid(f"{where}.id: is required", (f"{where}.id",))
                if action == "update":
                    rest = {k: v for k, v in item.items() if k != "id"}
                    sendable.append((index, (record_id, self.to_native(mapped, rest, where=where))))
                else:
                    sendable.append((index, record_id))
            except CrmError as error:
                results[index] = ItemResult(
                    item.get("id") if isinstance(item, Mapping) else None, error
                )
        records, access, name = connection.connector.records, connection.access, mapped.object
        if mapped.match and action != "create" and sendable:
            ids = [value[0] if action == "update" else value for _, value in sendable]
            own = await records.matching(access, mapped, ids)
            for position, record_id in zip([i for i, _ in sendable], ids, strict=True):
                if record_id not in own:
                    results[position] = ItemResult(
                        record_id, EntityNotFound(f"{mapped.entity} {record_id[:40]} not found")
                    )
            sendable = [(i, v) for i, v in sendable if results[i] is None]
        payload = [value for _, value in sendable]
        if payload:
            if action == "create":
                answered = await records.bulk_create(access, name, payload)
            elif action == "update":
                answered = await records.bulk_update(access, name, payload)
            else:
                answered = await records.bulk_delete(access, name, payload)
            for (index, _), result in zip(sendable, answered, strict=True):
                if isinstance(result.error, NotValid):
                    result = ItemResult(result.id, _unified(mapped, result.error))
                results[index] = result
            failures = {id(r.error) for r in answered if r.error is not None}
            first = answered[0].error if answered else None
            if (
                len(failures) == 1
                and all(r.error is not None for r in answered)
                and isinstance(first, CALL_FAILURES)
            ):
                raise first  # nothing was done: the call's failure, e.g. 429 with Retry-After
        done = {"create": 201, "update": 200, "delete": 204}[action]
        return {
            "id": str(uuid.uuid4()),
            "item": [_item(result, done) for result in results if result is not None],
        }

    # ---- describe -----------------------------------------------------------------------------

    @staticmethod
    def describe(entity: str, mapped: EntityMap, info: ObjectInfo) -> dict[str, Any]:
        """The contract's XxxDescribe: per operation, whether the connected CRM user may do it
        and the fields it takes or returns (type, required, read-only, enum, custom, native)."""
        fields = _describe_fields(mapped, info)
        create = {n: f for n, f in fields.items() if f.get("createable")}
        update = {n: f for n, f in fields.items() if f.get("updateable")}
        return {
            "entity": entity,
            "native_entity": info.name,
            "custom": info.custom,
            "schema": {
                "create": {
                    "allowed": info.createable,
                    "fields": {n: {**f, "required": f["required"]} for n, f in create.items()},
                },
                "update": {
                    "allowed": info.updateable,
                    "fields": {n: {**f, "required": False} for n, f in update.items()},
                },
                "fetch": {"allowed": info.queryable, "fields": fields},
                "fetchAll": {
                    "allowed": info.queryable,
                    "fields": fields,
                    "filter": sorted(n for n, f in fields.items() if f["filterable"]),
                    "sort": sorted(n for n, f in fields.items() if f["sortable"]),
                },
                "delete": {"allowed": info.deletable},
            },
        }

    # ---- the CRM's catalogue -------------------------------------------------------------------

    async def objects(self, connection: Connection) -> list[dict[str, Any]]:
        """EntityEntity for each object of the CRM: the unified entities it backs, and the rest
        (custom objects included) for the generic entity routes."""
        unified = {m.object: name for name, m in connection.platform.entities.items() if m.methods}
        entries = []
        for info in await connection.connector.records.objects(connection.access):
            entity = unified.get(info.name)
            entries.append(
                {
                    "id": info.name,
                    "name": info.name,
                    "entity": info.label,
                    "collection": info.plural_label or info.label,
                    "type": "custom" if info.custom else "standard",
                    "internalType": "unified" if entity else "not_unified",
                    "category": "basic" if entity else "additional",
                    "similarTo": [entity] if entity else [],
                    "methods": {
                        "list": info.queryable,
                        "get": info.queryable,
                        "create": info.createable,
                        "update": info.updateable,
                        "delete": info.deletable,
                    },
                }
            )
        return entries

    # ---- fields: every field of the unified entities, custom fields included -----------------

    async def fields(
        self, connection: Connection, lifetime: float | None = None
    ) -> list[dict[str, Any]]:
        """FieldEntity for each field of each unified entity the platform describes
        (``contact.first_name``, ``contact.Loyalty_Tier__c``), from the CRM's describe."""
        found = []
        for entity, declared in connection.platform.entities.items():
            if "describe" not in declared.methods:
                continue
            mapped, info = await self.bound_map(connection, entity, "describe", lifetime)
            for name, spec in _describe_fields(mapped, info).items():
                if name == "id":
                    continue
                found.append(
                    {
                        "id": f"{entity}.{name}",
                        "name": name,
                        "label": spec["label"],
                        "type": spec["type"],
                        "format": spec["type"] if spec["type"] in ("date", "date-time") else None,
                        "entity": [entity],
                        "isEnum": bool(spec.get("enum")),
                        "arrayItem": "object" if spec["type"] == "array" else None,
                        "relation": [name.split(".", 1)[1]] if name.startswith("relation.") else [],
                        "custom": bool(spec.get("custom")),
                        "native": spec["native"],
                        "methods": {
                            "create": bool(spec.get("createable")),
                            "update": bool(spec.get("updateable")),
                            "filter": bool(spec.get("filterable")),
                            "sort": bool(spec.get("sortable")),
                        },
                        "enum": spec.get("enum", []),
                    }
                )
        return found

    async def field(
        self, connection: Connection, field_id: str, lifetime: float | None = None
    ) -> dict[str, Any]:
        entity = field_id.partition(".")[0]
        if entity in connection.platform.entities:
            for candidate in await self.fields(connection, lifetime):
                if candidate["id"] == field_id:
                    return candidate
        raise EntityNotFound(f"no field {field_id[:120]!r}")

    @staticmethod
    def field_items(field: Mapping[str, Any]) -> list[dict[str, Any]]:
        """FieldItemEntity for each value of an enum field (a picklist); the id is the value in
        URL-safe base64, since values may hold slashes."""
        return [
            {
                "id": base64.urlsafe_b64encode(value.encode()).decode().rstrip("="),
                "name": value,
                "label": value,
                "description": None,
                "entity": field["entity"][0],
            }
            for value in field["enum"]
        ]

    # ---- passthrough --------------------------------------------------------------------------

    async def passthrough(self, connection: Connection, request: Any) -> dict[str, Any]:
        if not isinstance(request, Mapping):
            raise NotValid("the body must be a JSON object")
        method = str(request.get("method") or "GET").upper()
        if method not in PASSTHROUGH_METHODS:
            raise NotValid(f"method: one of {', '.join(sorted(PASSTHROUGH_METHODS))}", ("method",))
        path = request.get("path")
        if not isinstance(path, str) or not path or len(path) > MAX_PASSTHROUGH_PATH:
            raise NotValid(f"path: required, at most {MAX_PASSTHROUGH_PATH} characters", ("path",))
        if "://" in path or path.startswith("//") or any(ord(c) < 33 for c in path):
            raise NotValid(
                "path: a path relative to the CRM's API, not a URL (no scheme, host or spaces)",
                ("path",),
            )
        headers = _passthrough_headers(request.get("header"))
        content = request.get("content")
        body: bytes | None = None
        if content not in (None, ""):
            if not isinstance(content, str):
                raise NotValid("content: base64 text", ("content",))
            try:
                body = base64.b64decode(content, validate=True)
            except (binascii.Error, ValueError):
                raise NotValid("content: not valid base64", ("content",)) from None
        answer = await connection.connector.records.passthrough(
            connection.access, method, path, headers, body
        )
        return {
            "status_code": answer.status,
            "header": [
                {"name": name, "value": value}
                for name, value in answer.headers
                if name.lower() not in _DROPPED_ANSWER_HEADERS
            ],
            "content": base64.b64encode(answer.body).decode("ascii"),
        }


def _listed_by_parent(
    connection: Connection, mapped: EntityMap, conditions: Sequence[Condition]
) -> None:
    """Records the CRM lists only per parent record (the map's ``list_by``) are never read
    whole: a list, count or aggregate of them names its parent, else 403."""
    wanted = mapped.parent_wanted(conditions)
    if wanted:
        raise NotSupported(
            f"{connection.platform.name} lists {mapped.entity} records only by the record they "
            f"belong to: filter by {wanted}"
        )


def _passthrough_headers(value: Any) -> list[tuple[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_PASSTHROUGH_HEADERS:
        raise NotValid(f"header: a list of at most {MAX_PASSTHROUGH_HEADERS} headers", ("header",))
    headers = []
    for index, entry in enumerate(value):
        where = f"header[{index}]"
        name = entry.get("name") if isinstance(entry, Mapping) else None
        text = entry.get("value", "") if isinstance(entry, Mapping) else None
        if not isinstance(name, str) or not _HEADER_NAME.match(name):
            raise NotValid(f"{where}.name: a header name", (f"{where}.name",))
        if not isinstance(text, str) or len(text) > 8192 or any(c in text for c in "\r\n\0"):
            raise NotValid(f"{where}.value: a header value on one line", (f"{where}.value",))
        lowered = name.lower()
        if lowered in _FORBIDDEN_HEADERS or lowered.startswith(("proxy-", "x-forwarded-")):
            raise NotValid(
                f"{where}.name: {name} is set by crmgate and cannot be sent", (f"{where}.name",)
            )
        headers.append((name, text))
    return headers


def _unified(mapped: EntityMap, refused: NotValid) -> NotValid:
    """The CRM's refusal with the fields it names as the client knows them (unified names)."""
    if not refused.fields:
        return refused
    return NotValid(refused.message, tuple(mapped.unified_name(f) for f in refused.fields))


def _item(result: ItemResult, done: int) -> dict[str, Any]:
    if result.error is None:
        return {"id": result.id, "status": done}
    error = result.error
    entry: dict[str, Any] = {
        "id": result.id,
        "status": error.status,
        "error": {"code": error.code, "message": error.message},
    }
    fields = getattr(error, "fields", ())
    if fields:
        entry["error"]["fields"] = list(fields)
    return entry


def _describe_fields(mapped: EntityMap, info: ObjectInfo) -> dict[str, dict[str, Any]]:
    """Unified field name -> what the client needs to know to read and write it."""
    schema = entity_schema(mapped.entity) if mapped.entity else {}
    fields: dict[str, dict[str, Any]] = {
        "id": {
            "type": "string",
            "label": "Identifier",
            "required": False,
            "read_only": True,
            "filterable": True,
            "sortable": True,
            "native": [mapped.id],
        }
    }

    def native(name: str) -> FieldInfo | None:
        return info.field(name)

    for unified, column in mapped.fields.items():
        field = native(column)
        if field is None:
            continue
        declared = schema.get(unified, {})
        kind = declared.get("format") if declared.get("format") in ("date", "date-time") else None
        kind = kind or declared.get("type") or field.kind
        entry = _field(field, kind, [column], declared)
        if mapped.kind(unified) != kind:
            entry["filter_type"] = mapped.kind(unified)  # e.g. text shown, compared as a number
        fields[unified] = entry
    for name, items in mapped.lists().items():
        columns = [c for item in items for c in item.fields.values() if native(c) is not None]
        if not columns:
            continue
        parts = [f for c in columns if (f := native(c)) is not None]
        fields[name] = {
            "type": "array",
            "label": name.capitalize(),
            "required": False,
            "read_only": not any(p.createable or p.updateable for p in parts),
            "createable": any(p.createable for p in parts),
            "updateable": any(p.updateable for p in parts),
            "filterable": name in LISTS,
            "sortable": True,
            "item_types": [item.type for item in items],
            "native": columns,
        }
    for target, column in mapped.relations.items():
        field = native(column)
        if field is not None:
            fields[f"relation.{target}"] = {
                **_field(field, "string", [column], {}),
                "label": target,
            }
    for column in mapped.extra:
        field = native(column)
        if field is not None:
            fields[column] = _field(field, field.kind, [column], {})
    return fields


def _field(
    field: FieldInfo, kind: str, columns: list[str], schema: Mapping[str, Any]
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": kind,
        "label": schema.get("description") or field.label,
        "required": field.required,
        "read_only": not (field.createable or field.updateable),
        "createable": field.createable,
        "updateable": field.updateable,
        "filterable": field.filterable,
        "sortable": field.sortable,
        "custom": field.custom,
        "native": columns,
        "native_type": field.native_type,
    }
    if field.enum:
        entry["enum"] = list(field.enum)
    if field.reference_to:
        entry["reference_to"] = list(field.reference_to)
    return entry


__all__ = ["METHODS", "Connection", "EntityNotFound", "EntityService"]
