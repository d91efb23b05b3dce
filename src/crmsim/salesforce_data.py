"""The simulated org's data and its REST API (/services/data/...), as Salesforce documents it."""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from crmsim import columns, records, soql
from crmsim.app import Route
from crmsim.columns import REQUIRED, UNKNOWN, Invalid, Problem
from crmsim.guard import Quota, Refusal, json_object
from crmsim.salesforce_schema import SField, SObject, standard_objects
from crmsim.tokens import AccessToken

if TYPE_CHECKING:
    from crmsim.salesforce import SalesforceSimulator, SfUser

VERSIONS = ("58.0", "59.0", "60.0", "61.0", "62.0")
_ids = itertools.count(1)
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def new_id(prefix: str) -> str:
    """An 18-character Salesforce-style id starting with the object's key prefix."""
    number, body = next(_ids), []
    for _ in range(12):
        number, rest = divmod(number, 62)
        body.append(_BASE62[rest])
    return prefix + "".join(reversed(body)) + "AAA"


class Rejected(Refusal):
    """Salesforce's error answer, ``[{message, errorCode, fields}]`` (fields where it names
    them), or a failed item of an sObject Collections call (`result`)."""

    def __init__(
        self, status: int, code: str, message: str, fields: list[str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields

    def response(self) -> web.Response:
        error: dict[str, Any] = {"message": self.message, "errorCode": self.code}
        if self.fields is not None:
            error["fields"] = self.fields
        return web.json_response([error], status=self.status)

    def result(self) -> dict[str, Any]:
        error = {"statusCode": self.code, "message": self.message, "fields": self.fields or []}
        return {"id": None, "success": False, "errors": [error]}


# what each item that did not fail answers when another one of an allOrNone call did
_ROLLED_BACK = Rejected(
    400,
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone "
    "header",
)

# Salesforce field types by the kind of JSON value they take (the others take text)
_KINDS = {
    "boolean": "boolean",
    "int": "integer",
    "double": "number",
    "currency": "number",
    "percent": "number",
    "date": "date",
    "datetime": "datetime",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000+0000")


async def _json(request: web.Request) -> dict[str, Any]:
    return await json_object(
        request,
        lambda message: Rejected(400, "JSON_PARSER_ERROR", message),
        "Unexpected character: was expecting JSON",
        "The request body must be a JSON object",
    )


def _column(obj: SObject, name: str) -> SField:
    spec = obj.field(name)
    if spec is None:
        raise Rejected(400, "INVALID_FIELD", f"No such column '{name}' on entity '{obj.name}'.")
    return spec


class SalesforceData:
    def __init__(self, simulator: SalesforceSimulator) -> None:
        self.simulator = simulator
        self.objects: dict[str, SObject] = standard_objects()
        self.records = records.Store(
            self.objects,
            key=lambda name: "Id",
            new_id=lambda name: new_id(self.objects[name].key_prefix),
            now=_now,
            created=("CreatedDate",),
            modified=("LastModifiedDate", "SystemModstamp"),
        )
        # query locators: the rows of a query whose later batches are still to be read
        self.locators: records.Cursors[list[dict[str, Any]]] = records.Cursors(
            lambda: "01g" + secrets.token_hex(6)
        )
        self._prefixes = itertools.count(0)
        self.quota = Quota(15000)  # the org's API requests a day (the guard counts them)

    # ---- state helpers for tests and the demo ------------------------------------------------

    def add_user_record(self, user: SfUser) -> None:
        first, _, last = user.name.partition(" ")
        values = {
            "Id": user.id,
            "Username": user.username,
            "FirstName": first or None,
            "LastName": last or first,
            "Name": user.name,
            "Email": user.email,
            "IsActive": user.active,
            "OwnerId": user.id,
            "IsDeleted": False,
        }
        self.records.insert("User", {f.name: None for f in self.objects["User"].fields} | values)

    def define_object(self, name: str, label: str, fields: list[SField]) -> SObject:
        """A custom object (``Name__c``) with custom fields."""
        prefix = "a0" + _BASE62[next(self._prefixes) % 62]
        obj = SObject(name, label, prefix, [SField("Name", required=True), *fields], custom=True)
        self.objects[name] = obj
        self.records[name] = {}
        return obj

    def add_custom_field(self, object_name: str, spec: SField) -> None:
        """A custom field on an existing object; existing records get it empty."""
        if not spec.name.endswith("__c"):
            raise ValueError("custom field names end with __c")
        spec.custom = True
        self.objects[object_name].add_field(spec)
        for record in self.records[object_name].values():
            record.setdefault(spec.name, None)

    def insert(self, object_name: str, values: dict[str, Any], owner: str | None = None) -> str:
        """Create a record directly (seeding), with the same checks as the API."""
        obj = self.objects[object_name]
        return self._create(obj, values, owner or next(iter(self.records["User"]), None))

    # ---- HTTP ---------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        route = "/services/data/v{version:[0-9]+\\.0}"
        table = [
            ("GET", "/sobjects", self._describe_global),
            ("GET", "/sobjects/{object}/describe", self._describe),
            ("GET", "/sobjects/{object}", self._basic_info),
            ("POST", "/sobjects/{object}", self._create_route),
            ("GET", "/sobjects/{object}/{id}", self._get),
            ("PATCH", "/sobjects/{object}/{id}", self._update),
            ("DELETE", "/sobjects/{object}/{id}", self._delete),
            ("GET", "/query", self._query),
            ("GET", "/query/{locator}", self._query_more),
            ("POST", "/composite/sobjects", self._collection_create),
            ("PATCH", "/composite/sobjects", self._collection_update),
            ("DELETE", "/composite/sobjects", self._collection_delete),
            ("GET", "/limits", self._limits),
        ]
        return [  # Salesforce takes each resource with or without a trailing slash
            Route("GET", "/services/data", self._versions, guarded=False),
            Route("GET", "/services/data/", self._versions, guarded=False),
            *(
                Route(method, route + path + end, self._versioned(handler))
                for method, path, handler in table
                for end in ("", "/")
            ),
        ]

    @staticmethod
    def _versioned(handler: Callable[[web.Request, SfUser], Awaitable[web.StreamResponse]]) -> Any:
        """A handler of the user a session acts as, at a version this org serves."""

        async def versioned(
            request: web.Request, session: AccessToken[SfUser]
        ) -> web.StreamResponse:
            if request.match_info["version"] not in VERSIONS:
                raise Rejected(404, "NOT_FOUND", "The requested resource does not exist")
            return await handler(request, session.subject)

        return versioned

    async def _versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            [{"label": f"v{v}", "url": f"/services/data/v{v}", "version": v} for v in VERSIONS]
        )

    def _find(self, name: str) -> SObject | None:
        return next((o for n, o in self.objects.items() if n.lower() == name.lower()), None)

    def _object(self, request: web.Request) -> SObject:
        obj = self._find(request.match_info["object"])
        if obj is None:
            raise Rejected(404, "NOT_FOUND", "The requested resource does not exist")
        return obj

    async def _describe_global(self, request: web.Request, user: SfUser) -> web.Response:
        version = request.match_info["version"]
        return web.json_response(
            {
                "encoding": "UTF-8",
                "maxBatchSize": 200,
                "sobjects": [obj.summary(version) for obj in self.objects.values()],
            }
        )

    async def _basic_info(self, request: web.Request, user: SfUser) -> web.Response:
        """sObject Basic Information: the object's summary and its recently viewed items."""
        obj = self._object(request)
        return web.json_response(
            {"objectDescribe": obj.summary(request.match_info["version"]), "recentItems": []}
        )

    async def _describe(self, request: web.Request, user: SfUser) -> web.Response:
        obj = self._object(request)
        summary = obj.summary(request.match_info["version"], user.profile != "Read Only")
        return web.json_response(summary | {"fields": [f.describe() for f in obj.fields]})

    # ---- records ------------------------------------------------------------------------------

    @staticmethod
    def _check_access(user: SfUser, allowed: bool) -> None:
        """The object allows the write, and the user's profile may write."""
        if user.profile == "Read Only" or not allowed:
            raise Rejected(
                403, "INSUFFICIENT_ACCESS_OR_READONLY", "insufficient access rights on object id"
            )

    def _clean(self, obj: SObject, values: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        """A create's or an update's values as stored, by the shared ladder (crmsim.columns);
        Salesforce refuses the first problem (a missing required field: all of them)."""
        given = {obj.spelled(k): v for k, v in values.items() if k != "attributes"}
        clean, problems = columns.check(
            given,
            obj.field,
            lambda spec, value: self._value(spec, value, creating),
            creating=creating,
            columns=[spec for spec in obj.fields if spec.default is None],
            empty=(),  # a null is checked too: a read-only field refuses it
        )
        if not creating:  # an update may not clear a required field
            cleared = [n for n, v in clean.items() if v in (None, "")]
            problems += [Problem(n, REQUIRED) for n in cleared if obj.by_lower[n.lower()].required]
        if not problems:
            return clean
        first = problems[0]
        if first.code == REQUIRED:
            missing = [problem.name for problem in problems]
            message = f"Required fields are missing: [{', '.join(missing)}]"
            raise Rejected(400, "REQUIRED_FIELD_MISSING", message, missing)
        if first.code == UNKNOWN:
            message = f"No such column '{first.name}' on sobject of type {obj.name}"
            raise Rejected(400, "INVALID_FIELD", message)
        # a value not of the field's type is a JSON parse error, which names no field
        named = None if first.code == "JSON_PARSER_ERROR" else [first.name]
        raise Rejected(400, first.code, first.message, named)

    def _value(self, spec: SField, value: Any, creating: bool) -> Any:
        if not (spec.createable if creating else spec.updateable):
            raise Invalid(
                f"Unable to {'create' if creating else 'update'} fields: {spec.name}. Please check "
                "the security settings of this field and verify that it is read/write for your "
                "profile or permission set.",
                "INVALID_FIELD_FOR_INSERT_UPDATE",
            )
        if value is None:
            return None
        kind = spec.type
        if kind == "int":  # Salesforce takes any JSON value that reads as an integer
            with contextlib.suppress(TypeError, ValueError):
                value = int(value)
        if not records.conforms(value, _KINDS.get(kind, "text")):
            raise Invalid(
                f"Cannot deserialize instance of {kind} from {type(value).__name__} "
                f"value {value!r} for field {spec.name}",
                "JSON_PARSER_ERROR",
            )
        if kind == "email" and "@" not in value:
            message = f"{spec.label or spec.name}: invalid email address: {value}"
            raise Invalid(message, "INVALID_EMAIL_ADDRESS")
        if kind == "reference":
            if not any(value in self.records.get(target, {}) for target in spec.reference_to):
                raise Invalid("invalid cross reference id", "INVALID_CROSS_REFERENCE_KEY")
        limit = max(spec.length, 32000 if kind == "textarea" else 0)
        if kind in ("string", "textarea", "email", "phone", "url") and len(value) > limit:
            raise Invalid(f"{spec.name}: data value too large", "STRING_TOO_LONG")
        return value

    def _create(self, obj: SObject, values: dict[str, Any], owner: str | None) -> str:
        data = self._clean(obj, values, creating=True)
        defaults = {spec.name: spec.default for spec in obj.fields if spec.default is not None}
        record = {f.name: None for f in obj.fields} | defaults | data | {"IsDeleted": False}
        record["OwnerId"] = record["OwnerId"] or owner
        return str(self.records.insert(obj.name, record)["Id"])

    def _record(self, obj: SObject, record_id: str) -> dict[str, Any]:
        record = self.records[obj.name].get(record_id)
        if record is None and len(record_id) == 15:
            record = next(
                (r for i, r in self.records[obj.name].items() if i[:15] == record_id), None
            )
        if record is None:
            raise Rejected(404, "NOT_FOUND", "The requested resource does not exist")
        return record

    def _render(
        self, obj: SObject, record: dict[str, Any], version: str, fields: list[str] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {
                "type": obj.name,
                "url": f"/services/data/v{version}/sobjects/{obj.name}/{record['Id']}",
            }
        }
        names = [f.name for f in obj.fields] if fields is None else fields
        for name in names:
            spec = _column(obj, name)
            out[spec.name] = record.get(spec.name)
        return out

    async def _create_route(self, request: web.Request, user: SfUser) -> web.Response:
        obj = self._object(request)
        self._check_access(user, obj.createable)
        values = await _json(request)
        if any(k.lower() == "id" for k in values):
            raise Rejected(
                400, "INVALID_FIELD", "The Id field should not be specified in the sobject data."
            )
        record_id = self._create(obj, values, user.id)
        return web.json_response({"id": record_id, "success": True, "errors": []}, status=201)

    async def _get(self, request: web.Request, user: SfUser) -> web.Response:
        obj = self._object(request)
        record = self._record(obj, request.match_info["id"])
        fields = request.query.get("fields")
        selected = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
        return web.json_response(self._render(obj, record, request.match_info["version"], selected))

    async def _update(self, request: web.Request, user: SfUser) -> web.Response:
        obj = self._object(request)
        self._check_access(user, obj.updateable)
        record = self._record(obj, request.match_info["id"])
        values = self._clean(obj, await _json(request), creating=False)
        self.records.change(obj.name, record, values)
        return web.Response(status=204)

    async def _delete(self, request: web.Request, user: SfUser) -> web.Response:
        obj = self._object(request)
        self._check_access(user, obj.deletable)
        record = self._record(obj, request.match_info["id"])
        del self.records[obj.name][record["Id"]]
        return web.Response(status=204)

    # ---- SOQL -------------------------------------------------------------------------------

    async def _query(self, request: web.Request, user: SfUser) -> web.Response:
        text = request.query.get("q")
        if not text:
            raise Rejected(400, "MALFORMED_QUERY", "A query string has to be specified")
        try:
            query = soql.parse(text)
        except soql.SoqlError as error:
            raise Rejected(400, error.code, error.message) from None
        obj = self._find(query.object)
        if obj is None:
            raise Rejected(400, "INVALID_TYPE", f"sObject type '{query.object}' is not supported.")
        names = [
            *query.fields,
            *(order[0] for order in query.order),
            *query.group_by,
            *(argument for _, argument, _ in query.aggregates),
        ]
        for name in names:
            _column(obj, name)
        rows = [
            r
            for r in self.records[obj.name].values()
            if query.where is None or query.where({k.lower(): v for k, v in r.items()})
        ]
        if query.aggregates or query.group_by:
            return web.json_response(self._aggregate(obj, query, rows))
        rows = records.order(rows, *self._sorts(obj, query))
        rows = records.page(rows, query.offset, query.limit)[0]
        if query.count:
            return web.json_response({"totalSize": len(rows), "done": True, "records": []})
        version = request.match_info["version"]
        rendered = [self._render(obj, r, version, query.fields) for r in rows]
        return web.json_response(self._batch(rendered, request, None, 0))

    @staticmethod
    def _sorts(obj: SObject, query: soql.Query) -> list[records.Sort]:
        return [
            records.Sort(_column(obj, name).name, descending, nulls_last)
            for name, descending, nulls_last in query.order
        ]

    def _aggregate(
        self, obj: SObject, query: soql.Query, rows: list[dict[str, Any]]
    ) -> dict[str, Any]:
        """GROUP BY and aggregate functions: one AggregateResult record per group."""
        keys = [_column(obj, name).name for name in query.group_by]
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(tuple(row.get(key) for key in keys), []).append(row)
        if not keys and not groups:
            groups[()] = []  # an aggregate without GROUP BY always has one result row
        results = []
        for group, members in groups.items():
            record: dict[str, Any] = {"attributes": {"type": "AggregateResult"}}
            record.update(zip(keys, group, strict=True))
            for function, argument, alias in query.aggregates:
                column = _column(obj, argument).name
                record[alias] = soql.aggregate(function, [m.get(column) for m in members])
            results.append(record)
        results = records.order(results, *self._sorts(obj, query))
        results = records.page(results, 0, query.limit)[0]
        return {"totalSize": len(results), "done": True, "records": results}

    def _batch(
        self,
        rows: list[dict[str, Any]],
        request: web.Request,
        locator: str | None,
        start: int,
    ) -> dict[str, Any]:
        """One batch of a query's rows from ``start``, as big as Sforce-Query-Options asks (200
        to 2,000), and the URL of the next while rows are left (their query locator)."""
        size = 2000
        options = request.headers.get("Sforce-Query-Options", "")
        for part in options.split(","):
            key, _, value = part.strip().partition("=")
            if key == "batchSize" and value.isdigit():
                size = min(2000, max(200, int(value)))
        batch, more = records.page(rows, start, size)
        result = {"totalSize": len(rows), "done": not more, "records": batch}
        if more:
            locator = locator or self.locators.issue(rows)
            version = request.match_info["version"]
            result["nextRecordsUrl"] = f"/services/data/v{version}/query/{locator}-{start + size}"
        return result

    async def _query_more(self, request: web.Request, user: SfUser) -> web.Response:
        locator, _, position = request.match_info["locator"].rpartition("-")
        rows = self.locators.get(locator)
        if rows is None or not position.isdigit():
            raise Rejected(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return web.json_response(self._batch(rows, request, locator, int(position)))

    # ---- sObject Collections ----------------------------------------------------------------

    async def _collection_body(self, request: web.Request) -> tuple[list[dict[str, Any]], bool]:
        body = await _json(request)
        if not isinstance(body.get("records"), list):
            raise Rejected(400, "JSON_PARSER_ERROR", "records must be a list")
        if len(body["records"]) > 200:
            raise Rejected(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        return body["records"], bool(body.get("allOrNone", False))

    def _object_of(self, record: dict[str, Any]) -> SObject:
        name = (record.get("attributes") or {}).get("type")
        obj = self.objects.get(name or "")
        if obj is None:
            raise Rejected(400, "INVALID_TYPE", "Must send a concrete entity type.")
        return obj

    def _collection(
        self, items: list[Any], all_or_none: bool, write: Callable[[Any], str]
    ) -> web.Response:
        """``write`` each item (it returns the record's id), one result per item; with allOrNone,
        one failure rolls every write of the call back."""
        saved = self.records.snapshot() if all_or_none else None
        results = []
        for item in items:
            try:
                results.append({"id": write(item), "success": True, "errors": []})
            except Rejected as rejected:
                failure = rejected.result()
                # a delete names the id it was given, even when it fails
                results.append(failure | {"id": item} if isinstance(item, str) else failure)
        if saved is not None and any(not r["success"] for r in results):
            self.records.restore(saved)
            results = [r if not r["success"] else _ROLLED_BACK.result() for r in results]
        return web.json_response(results)

    async def _collection_create(self, request: web.Request, user: SfUser) -> web.Response:
        def create(record: dict[str, Any]) -> str:
            obj = self._object_of(record)
            self._check_access(user, obj.createable)
            return self._create(obj, record, user.id)

        return self._collection(*await self._collection_body(request), create)

    async def _collection_update(self, request: web.Request, user: SfUser) -> web.Response:
        def update(record: dict[str, Any]) -> str:
            obj = self._object_of(record)
            self._check_access(user, obj.updateable)
            target = self._record(obj, str(record.get("id") or record.get("Id") or ""))
            values = {k: v for k, v in record.items() if k.lower() != "id"}
            self.records.change(obj.name, target, self._clean(obj, values, creating=False))
            return str(target["Id"])

        return self._collection(*await self._collection_body(request), update)

    async def _collection_delete(self, request: web.Request, user: SfUser) -> web.Response:
        def delete(record_id: str) -> str:
            owner = self.records.holding(record_id)
            if owner is None:
                raise Rejected(404, "ENTITY_IS_DELETED", "entity is deleted")
            self._check_access(user, self.objects[owner].deletable)
            del self.records[owner][record_id]
            return record_id

        ids = [i for i in request.query.get("ids", "").split(",") if i]
        all_or_none = request.query.get("allOrNone", "false").lower() == "true"
        return self._collection(ids, all_or_none, delete)

    async def _limits(self, request: web.Request, user: SfUser) -> web.Response:
        return web.json_response(
            {
                "DailyApiRequests": {
                    "Max": self.quota.limit,
                    "Remaining": max(0, self.quota.limit - self.quota.used),
                }
            }
        )
