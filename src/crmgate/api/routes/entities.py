"""/v1/application/entity, /v1/application/field and /v1/application/request: the unified entity
API, made from the contract.

Every entity route of the reference document (27 entities x 11 operations, and the generic
routes over the CRM's own objects) is declared here in one loop: its path, operation id,
parameters (the path parameter keeps the contract's name, e.g. ``contact_id``), request body and
response schema are read from the reference, and each operation kind (list, count, get, ...) has
one handler shared by all entities; a handler answers with ``call.answer``, which gives the answer
the shape of the reference's response schema of the operation (contract/shape.py: no null, the
reference's types). Whether a platform offers an entity and an operation is the platform
descriptor's to say (403 NOT_SUPPORTED otherwise); this module knows no CRM.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Body, Header, Path, Query, Request, Response
from pydantic import BaseModel

from crmgate.api import schemas
from crmgate.api.auth import (
    CATALOGUE,
    CREATES,
    DELETES,
    MEMBER_ONLY,
    PASSTHROUGH,
    READS,
    UPDATES,
    access_of,
)
from crmgate.api.errors import ApiError
from crmgate.api.params import MAX_PAGE, MAX_PAGE_SIZE
from crmgate.api.responses import JSONResponse, contract_response
from crmgate.api.routes.users import ERRORS
from crmgate.api.routing import ScopedRouter
from crmgate.connectors.errors import NotSupported
from crmgate.contract.coverage import load_reference
from crmgate.entities import Connection, EntityService
from crmgate.model.contract import model
from crmgate.model.mapping import EntityMap, entity_schemas
from crmgate.query import QueryError, parse_fields, parse_filter, parse_pipeline, parse_sort
from crmgate.store.accounts import Principal

APPLICATION_KEY_HEADER = "X-API2CRM-APPLICATION-KEY"
USER_KEY_HEADER = "X-API2CRM-USER-KEY"
PREFIX = "/application/entity/"
GENERIC = "{entity_id}"

# One router for the entity routes, and within it one per unified entity (api/routing.py): a
# request walks only the routes of its own entity.
# Paths are whole (/v1/...) in every one of them: a route's path is the template the access log
# writes, and a prefix on a router that includes others would not be part of theirs.
router = ScopedRouter(scope="/v1/application", tags=["entity"], responses=ERRORS)


@dataclass
class Call:
    """One entity request, with its parameters under the contract's names."""

    request: Request
    principal: Principal
    entity: str  # a unified entity (contact), or GENERIC for the CRM's own objects
    values: dict[str, Any]
    body: Any = None
    connection: Connection | None = field(default=None)
    operation_id: str = ""  # the reference's operation: its answer's shape

    def answer(self, content: Any, status_code: int = 200) -> Response:
        """The operation's answer, in the reference's shape (contract/shape.py)."""
        return contract_response(self.operation_id, content, status_code)

    @property
    def service(self) -> EntityService:
        service: EntityService = self.request.app.state.services.entities
        return service

    def header(self, name: str) -> str | None:
        """A request header, whether or not the contract declares it on this operation (it
        lists X-API2CRM-DESCRIBE-LIFETIME on some routes that describe, not on all)."""
        value = self.values.get(name)
        return value if isinstance(value, str) else self.request.headers.get(name)

    @property
    def native(self) -> bool:
        return (self.header("X-API2CRM-NATIVE-ENABLE") or "").lower() == "true"

    @property
    def describe_lifetime(self) -> float | None:
        raw = self.header("X-API2CRM-DESCRIBE-LIFETIME")
        if raw is None or raw == "":
            return None
        try:
            lifetime = float(raw)
        except ValueError:
            lifetime = -1
        if not 0 <= lifetime <= 86400:
            raise ApiError(
                400,
                "NOT_VALID",
                "X-API2CRM-DESCRIBE-LIFETIME: seconds, from 0 to 86400",
                errors=[{"field": "X-API2CRM-DESCRIBE-LIFETIME", "message": "0 to 86400"}],
            )
        return lifetime

    def record_id(self) -> str:
        name = f"{self.entity}_id" if self.entity != GENERIC else "entity_item_id"
        return str(self.values[name])

    async def connect(self) -> Connection:
        if self.connection is not None:
            return self.connection
        key = self.header(APPLICATION_KEY_HEADER)
        if not key:
            raise ApiError(
                401, "SERVICE_UNAUTHORIZED", f"the {APPLICATION_KEY_HEADER} header is required"
            )
        self.connection = await self.service.connect(self.principal, key)
        return self.connection

    async def map(self, method: str) -> EntityMap:
        """The entity's map bound to the CRM's describe (custom fields, native types)."""
        connection = await self.connect()
        if self.entity == GENERIC:
            mapped, _ = await self.service.generic_map(
                connection, str(self.values["entity_id"]), self.describe_lifetime
            )
            return mapped
        mapped, _ = await self.service.bound_map(
            connection, self.entity, method, self.describe_lifetime
        )
        return mapped


def _fields(call: Call) -> list[str] | None:
    fields = parse_fields(call.values.get("fields"))
    return None if fields is None else list(fields)


MAX_EXPAND = 5


def _expand(call: Call) -> list[str]:
    names = parse_fields(call.values.get("expand")) or ()
    if len(names) > MAX_EXPAND:
        raise QueryError("expand", f"at most {MAX_EXPAND} relations")
    return list(names)


def _unique(call: Call) -> bool:
    return (call.values.get("unique") or "").lower() == "true"


# ---- one handler per operation kind ------------------------------------------------------------


async def _list(call: Call) -> Response:
    conditions = parse_filter(call.values.get("filter"))
    sort = parse_sort(call.values.get("sort"))
    fields = _fields(call)
    expand = _expand(call)
    mapped = await call.map("list")
    assert call.connection is not None
    page, size = int(call.values.get("page") or 1), int(call.values.get("page_size") or 25)
    if _unique(call):
        if not fields or len(fields) != 1 or expand:
            raise QueryError("unique", "unique=true takes exactly one field in fields, no expand")
        if any(key.field != fields[0] for key in sort):
            raise QueryError("sort", f"with unique=true only {fields[0]} can be sorted")
        values = await call.service.unique(
            call.connection, mapped, fields[0], conditions, any(k.descending for k in sort)
        )
        return call.answer(values[(page - 1) * size : page * size])
    records = await call.service.list_records(
        call.connection,
        mapped,
        conditions=conditions,
        sort=sort,
        page=page,
        page_size=size,
        fields=fields,
        with_native=call.native,
    )
    if expand:
        await call.service.expand(call.connection, mapped, records, expand, call.describe_lifetime)
    return call.answer(records)


async def _count(call: Call) -> Response:
    conditions = parse_filter(call.values.get("filter"))
    mapped = await call.map("count")
    assert call.connection is not None
    return call.answer({"total": await call.service.count(call.connection, mapped, conditions)})


async def _get(call: Call) -> Response:
    fields = _fields(call)
    expand = _expand(call)
    mapped = await call.map("get")
    assert call.connection is not None
    record = await call.service.get_record(
        call.connection, mapped, call.record_id(), fields=fields, with_native=call.native
    )
    if expand:
        await call.service.expand(call.connection, mapped, [record], expand, call.describe_lifetime)
    return call.answer(record)


async def _create(call: Call) -> Response:
    mapped = await call.map("create")
    assert call.connection is not None
    record_id = await call.service.create(call.connection, mapped, call.body)
    return call.answer({"id": record_id}, status_code=201)


async def _update(call: Call) -> Response:
    mapped = await call.map("update")
    assert call.connection is not None
    record_id = call.record_id()
    await call.service.update(call.connection, mapped, record_id, call.body)
    return call.answer({"id": record_id})


async def _delete(call: Call) -> Response:
    mapped = await call.map("delete")
    assert call.connection is not None
    await call.service.delete(call.connection, mapped, call.record_id())
    return Response(status_code=204)


async def _describe(call: Call) -> Response:
    connection = await call.connect()
    if call.entity == GENERIC:
        mapped, info = await call.service.generic_map(
            connection, str(call.values["entity_id"]), call.describe_lifetime
        )
        name = info.name
    else:
        mapped, info = await call.service.bound_map(
            connection, call.entity, "describe", call.describe_lifetime
        )
        name = call.entity
    return call.answer(call.service.describe(name, mapped, info))


async def _aggregate(call: Call) -> Response:
    pipeline = parse_pipeline(call.values.get("pipeline"))
    conditions = parse_filter(call.values.get("filter"))
    mapped = await call.map("aggregate")
    assert call.connection is not None
    return call.answer(await call.service.aggregate(call.connection, mapped, pipeline, conditions))


def _bulk(action: str) -> Callable[[Call], Awaitable[Response]]:
    async def handler(call: Call) -> Response:
        mapped = await call.map("bulk")
        assert call.connection is not None
        result = await call.service.bulk(call.connection, mapped, action, call.body)
        return call.answer(result, status_code=201 if action == "create" else 200)

    return handler


async def _object(call: Call) -> Response:
    """GET /application/entity/{entity_id}: one object of the CRM's catalogue."""
    connection = await call.connect()
    wanted = str(call.values["entity_id"])
    for entry in await call.service.objects(connection):
        if entry["id"] == wanted:
            return call.answer(_trim(entry, _fields(call)))
    raise ApiError(404, "ENTITY_NOT_FOUND", f"the CRM has no object {wanted[:80]!r}")


async def _objects(call: Call) -> Response:
    """GET /application/entity/list: the CRM's catalogue, custom objects included."""
    connection = await call.connect()
    return _page(call, await call.service.objects(connection))


async def _objects_count(call: Call) -> Response:
    connection = await call.connect()
    return call.answer({"total": len(await call.service.objects(connection))})


async def _request(call: Call) -> Response:
    connection = await call.connect()
    return call.answer(await call.service.passthrough(connection, call.body), status_code=201)


def _page(call: Call, entries: list[dict[str, Any]]) -> Response:
    """A list the gateway built itself (catalogue, fields): filter on its own top-level fields
    with eq, then the page."""
    for condition in parse_filter(call.values.get("filter")):
        if condition.op != "eq":
            raise QueryError("filter", "only eq conditions are supported here")
        entries = [e for e in entries if _matches(e.get(condition.field), condition.value)]
    page, size = int(call.values.get("page") or 1), int(call.values.get("page_size") or 25)
    fields = _fields(call)
    return call.answer([_trim(e, fields) for e in entries[(page - 1) * size : page * size]])


def _matches(value: Any, wanted: Any) -> bool:
    return wanted in value if isinstance(value, list) else value == wanted


async def _fields_list(call: Call) -> Response:
    """GET /application/field/list: every field of the unified entities, custom ones included."""
    connection = await call.connect()
    return _page(call, await call.service.fields(connection, call.describe_lifetime))


async def _fields_count(call: Call) -> Response:
    connection = await call.connect()
    return call.answer({"total": len(await call.service.fields(connection))})


async def _field(call: Call) -> Response:
    connection = await call.connect()
    found = await call.service.field(
        connection, str(call.values["field_id"]), call.describe_lifetime
    )
    return call.answer(_trim(found, _fields(call)))


async def _field_items(call: Call) -> Response:
    """GET /application/field/{field_id}/list: the values of an enum (picklist) field."""
    connection = await call.connect()
    found = await call.service.field(
        connection, str(call.values["field_id"]), call.describe_lifetime
    )
    return _page(call, call.service.field_items(found))


async def _field_items_count(call: Call) -> Response:
    connection = await call.connect()
    found = await call.service.field(connection, str(call.values["field_id"]))
    return call.answer({"total": len(found["enum"])})


async def _field_item(call: Call) -> Response:
    connection = await call.connect()
    found = await call.service.field(
        connection, str(call.values["field_id"]), call.describe_lifetime
    )
    wanted = str(call.values["field_item_id"])
    for item in call.service.field_items(found):
        if item["id"] == wanted:
            return call.answer(_trim(item, _fields(call)))
    raise ApiError(404, "ENTITY_NOT_FOUND", f"the field has no item {wanted[:80]!r}")


async def _field_items_describe(call: Call) -> Response:
    connection = await call.connect()
    found = await call.service.field(
        connection, str(call.values["field_id"]), call.describe_lifetime
    )
    item = {
        "id": {"type": "string", "read_only": True},
        "name": {"type": "string", "read_only": True},
        "label": {"type": "string", "read_only": True},
    }
    return call.answer(
        {
            "entity": found["id"],
            "schema": {
                "create": {"allowed": False, "fields": {}},
                "update": {"allowed": False, "fields": {}},
                "fetch": {"allowed": True, "fields": item},
                "fetchAll": {"allowed": True, "fields": item},
                "delete": {"allowed": False},
            },
        }
    )


async def _field_item_change(call: Call) -> Response:
    connection = await call.connect()
    await call.service.field(connection, str(call.values["field_id"]))  # 404 first
    raise NotSupported(
        f"{connection.platform.name}: the values of a field are changed in the CRM's own setup, "
        "not through crmgate"
    )


def _trim(entry: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    if fields is None:
        return entry
    return {k: v for k, v in entry.items() if k in fields or k == "id"}


# Each route kind with what it needs (api/auth.py: the role, and a restricted key's permission).
HANDLERS: dict[tuple[str, str], Callable[[Call], Awaitable[Response]]] = {
    ("post", ""): CREATES(_create),
    ("get", "/list"): READS(_list),
    ("get", "/count"): READS(_count),
    ("get", "/describe"): READS(_describe),
    ("get", "/aggregate"): READS(_aggregate),
    ("post", "/bulk"): CREATES(_bulk("create")),
    ("put", "/bulk"): UPDATES(_bulk("update")),
    ("delete", "/bulk"): DELETES(_bulk("delete")),
    ("get", "/{id}"): READS(_get),
    ("put", "/{id}"): UPDATES(_update),
    ("delete", "/{id}"): DELETES(_delete),
}
CATALOGUE_HANDLERS: dict[tuple[str, str], Callable[[Call], Awaitable[Response]]] = {
    ("get", "/application/entity/list"): CATALOGUE(_objects),
    ("get", "/application/entity/count"): CATALOGUE(_objects_count),
    ("get", "/application/entity/{entity_id}"): CATALOGUE(_object),
    ("post", "/application/request"): PASSTHROUGH(_request),
    ("get", "/application/field/list"): CATALOGUE(_fields_list),
    ("get", "/application/field/count"): CATALOGUE(_fields_count),
    ("get", "/application/field/{field_id}"): CATALOGUE(_field),
    ("post", "/application/field/{field_id}"): MEMBER_ONLY(_field_item_change),
    ("get", "/application/field/{field_id}/list"): CATALOGUE(_field_items),
    ("get", "/application/field/{field_id}/count"): CATALOGUE(_field_items_count),
    ("get", "/application/field/{field_id}/describe"): CATALOGUE(_field_items_describe),
    ("get", "/application/field/{field_id}/{field_item_id}"): CATALOGUE(_field_item),
    ("put", "/application/field/{field_id}/{field_item_id}"): MEMBER_ONLY(_field_item_change),
    ("delete", "/application/field/{field_id}/{field_item_id}"): MEMBER_ONLY(_field_item_change),
}


# ---- the routes, from the contract -------------------------------------------------------------


def _python_name(name: str) -> str:
    return "p_" + "".join(c if c.isalnum() else "_" for c in name.lower())


def _parameter(spec: dict[str, Any]) -> inspect.Parameter:
    name, where = spec["name"], spec["in"]
    description = spec.get("description")
    annotation: Any
    default: Any = None
    if where == "path":
        annotation = Annotated[str, Path(alias=name, description=description, max_length=255)]
        default = inspect.Parameter.empty
    elif where == "header":
        annotation = Annotated[str | None, Header(alias=name, description=description)]
    elif name == "page":
        annotation = Annotated[int, Query(alias=name, ge=1, le=MAX_PAGE, description=description)]
        default = 1
    elif name == "page_size":
        annotation = Annotated[
            int,
            Query(
                alias=name,
                ge=1,
                le=MAX_PAGE_SIZE,
                description=f"Amount of results (default: 25, at most {MAX_PAGE_SIZE})",
            ),
        ]
        default = 25
    else:
        annotation = Annotated[str | None, Query(alias=name, description=description)]
    return inspect.Parameter(
        _python_name(name), inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
    )


def _body_model(operation: dict[str, Any], reference: dict[str, Any]) -> Any:
    body = operation.get("requestBody")
    if body is None:
        return None
    if "$ref" in body:
        body = reference["components"]["requestBodies"][body["$ref"].rsplit("/", 1)[-1]]
    return model(body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1])


def _schema_model(name: str) -> Any:
    """The model of a contract schema: crmgate's own where api/schemas.py declares one (so the
    document has one Count, not two), else the one built from the contract."""
    own = getattr(schemas, name, None)
    if isinstance(own, type) and issubclass(own, BaseModel):
        return own
    return model(name)


def _response_model(operation: dict[str, Any]) -> tuple[int, Any]:
    for status, response in sorted(operation["responses"].items()):
        if status.startswith("2"):
            content = response.get("content", {}).get("application/json")
            if content is None:
                return int(status), None
            schema = content["schema"]
            if schema.get("type") == "array":
                item = _schema_model(schema["items"]["$ref"].rsplit("/", 1)[-1])
                return int(status), list[item]  # type: ignore[valid-type]
            return int(status), _schema_model(schema["$ref"].rsplit("/", 1)[-1])
    return 200, None


def _endpoint(
    handler: Callable[[Call], Awaitable[Response]],
    entity: str,
    operation: dict[str, Any],
    body_model: Any,
) -> Callable[..., Awaitable[Response]]:
    specs = [p for p in operation.get("parameters", []) if p["name"] != USER_KEY_HEADER]
    names = {_python_name(p["name"]): p["name"] for p in specs}
    principal_type = access_of(handler).principal(entity)
    operation_id = operation["operationId"]

    async def endpoint(request: Request, principal: Principal, **kwargs: Any) -> Response:
        body = kwargs.pop("body", None)
        values = {names[key]: value for key, value in kwargs.items() if key in names}
        if body is not None:
            body = body.model_dump(mode="json", exclude_unset=True)
        return await handler(
            Call(request, principal, entity, values, body, operation_id=operation_id)
        )

    parameters = [
        inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Request),
        inspect.Parameter(
            "principal", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=principal_type
        ),
        *(_parameter(spec) for spec in specs),
    ]
    if body_model is not None:
        parameters.append(
            inspect.Parameter(
                "body", inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[body_model, Body()]
            )
        )
    endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    endpoint.__name__ = operation["operationId"]
    return endpoint


def _routes() -> list[tuple[str, str, Callable[[Call], Awaitable[Response]], str]]:
    """(method, path, handler, entity) for every entity operation of the contract, static
    paths before those with an identifier so that /contact/list is never read as an id."""
    found = []
    unified = set(entity_schemas())
    for path, operations in load_reference()["paths"].items():
        for method in operations:
            if method not in ("get", "post", "put", "delete"):
                continue
            if (method, path) in CATALOGUE_HANDLERS:
                found.append((method, path, CATALOGUE_HANDLERS[(method, path)], ""))
                continue
            if not path.startswith(PREFIX):
                continue
            entity, _, rest = path[len(PREFIX) :].partition("/")
            if entity not in unified and entity != GENERIC:
                continue
            suffix = f"/{rest}" if rest else ""
            if suffix.startswith("/{"):
                suffix = "/{id}"
            handler = HANDLERS.get((method, suffix))
            if handler is not None:
                found.append((method, path, handler, entity))

    def order(route: tuple[str, str, Any, str]) -> tuple[int, bool, str]:
        path = route[1]
        # the router tries routes in order, at some cost each: the passthrough, the busiest
        # route, goes first (no other path of this router can match its path)
        return (path.count("{"), path != "/application/request", path)

    return sorted(found, key=order)


def _register() -> None:
    """The routes in ``_routes()``'s order, each unified entity's in a router of its own, placed
    after the catalogue's fixed paths (no entity is called ``list`` or ``count``, and none of
    its paths is another's) and before the generic ``{entity_id}`` ones, which would take
    ``/contact/list`` for an object called ``contact``."""
    reference = load_reference()
    entities: dict[str, ScopedRouter] = {}
    included = False
    for method, path, handler, entity in _routes():
        target = router
        if entity not in ("", GENERIC):
            if entity not in entities:
                entities[entity] = ScopedRouter(scope=f"/v1{PREFIX}{entity}")
            target = entities[entity]
        elif "{" in path and not included:
            for each in entities.values():
                router.include_router(each)
            included = True
        operation = reference["paths"][path][method]
        status, response_model = _response_model(operation)
        target.add_api_route(
            f"/v1{path}",
            _endpoint(handler, entity, operation, _body_model(operation, reference)),
            methods=[method.upper()],
            status_code=status,
            response_model=response_model,
            response_class=JSONResponse if response_model is not None else Response,
            operation_id=operation["operationId"],
            summary=operation.get("summary"),
            description=operation.get("description"),
            tags=[_tag(path)],
        )
    assert included, "the generic entity routes are registered after the unified ones"


def _tag(path: str) -> str:
    if path.startswith(PREFIX):
        entity = path[len(PREFIX) :].partition("/")[0]
        return "entity" if entity.startswith("{") or entity in ("list", "count") else entity
    return path.strip("/").split("/")[1]


_register()
