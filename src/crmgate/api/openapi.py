"""crmgate's own OpenAPI document, adjusted to say what the gateway really does.

FastAPI derives the document from the routes. Two things it cannot know are fixed here, once for
every route: the key headers are required (the gateway answers their absence with 401, not with a
validation error, so they are optional to FastAPI), and validation failures use the contract's
error body rather than FastAPI's own.

Building it means building every route's dependencies and schemas (seconds for 347
operations), so it is built once per process and route table: every app ``create_app`` makes
has the same routes, and each gets its own copy of the one document.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute

from crmgate import __version__
from crmgate.api.auth import declare_roles

ENFORCED_HEADERS = frozenset({"X-API2CRM-USER-KEY", "X-API2CRM-APPLICATION-KEY"})
_ERROR_REF = {"$ref": "#/components/schemas/Error"}
_BUILT: dict[tuple[Any, ...], dict[str, Any]] = {}  # route table -> its document


def build(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    table = _route_table(app)
    if table not in _BUILT:
        _BUILT.clear()  # one route table per process in practice: keep only the newest
        _BUILT[table] = _build(app)
    app.openapi_schema = copy.deepcopy(_BUILT[table])
    return app.openapi_schema


def _route_table(app: FastAPI) -> tuple[Any, ...]:
    """What the document is made of: each route's path, methods, handler and principal."""
    return tuple(
        (
            route.path,
            tuple(sorted(route.methods or ())),
            route.endpoint.__module__,
            route.endpoint.__qualname__,
            route.name,
        )
        if isinstance(route, APIRoute)
        else (getattr(route, "path", ""), type(route).__name__)
        for route in app.routes
    )


def _build(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title="crmgate",
        version=__version__,
        summary="Unified CRM API gateway implementing the Data2CRM.API v1 contract",
        description="Every call needs the `X-API2CRM-USER-KEY` header. Errors use the contract's "
        "shape: `{type, title, status, detail: {code, message}}`. "
        "Operations tagged `crmgate` are crmgate's additions to the contract.",
        routes=app.routes,
    )
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                _drop_null(parameter)
                if parameter.get("in") == "header" and parameter["name"] in ENFORCED_HEADERS:
                    parameter["required"] = True
                    schema = parameter.get("schema", {})
                    parameter["schema"] = {"type": "string", "title": schema.get("title", "")}
            for status, response in operation.get("responses", {}).items():
                if status == "422":
                    response["content"] = {"application/json": {"schema": _ERROR_REF}}
    declare_roles(app, document)  # x-crmgate-role: what each operation needs (api/auth.py)
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return document


def _drop_null(parameter: dict[str, Any]) -> None:
    # An optional query or header parameter is absent, never null: `anyOf [T, null]` -> T.
    schema = parameter.get("schema", {})
    variants = schema.get("anyOf")
    if not variants:
        return
    kept = [variant for variant in variants if variant.get("type") != "null"]
    if len(kept) == 1:
        del schema["anyOf"]
        schema.update(kept[0])
