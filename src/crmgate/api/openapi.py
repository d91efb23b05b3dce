"""crmgate's own OpenAPI document, adjusted to say what the gateway really does.

FastAPI derives the document from the routes. What it cannot know is fixed here, once for every
route: the key headers are required (the gateway answers their absence with 401, not with a
validation error, so they are optional to FastAPI); validation failures use the contract's error
body rather than FastAPI's own; and the answers of the contract's operations never hold null
(contract/shape.py), so the schemas they are made of say ``string``, not ``anyOf [string,
null]``, as the reference does. A request body still takes null ("clear this field",
docs/entities.md): a schema that is both written and answered gets a copy for requests,
``<Name>Write``, that keeps its nulls, and the request bodies refer to the copy.

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
from crmgate.contract.shape import operations as shape_operations

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
    _answers_without_null(document)
    return document


def _answers_without_null(document: dict[str, Any]) -> None:
    """The schemas the contract's answers are made of, without their null variants; those that
    request bodies use too are first copied for the requests (``<Name>Write``, nulls kept)."""
    schemas: dict[str, Any] = document["components"]["schemas"]
    contract = set(shape_operations())
    answers: set[str] = set()
    requests: set[str] = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            # the contract's answers, and crmgate's own (its additions follow the same rule)
            if operation.get("operationId") in contract or "crmgate" in operation.get("tags", []):
                for status, response in operation.get("responses", {}).items():
                    if status.startswith("2"):
                        _refs(response, answers)
            if "requestBody" in operation:
                _refs(operation["requestBody"], requests)
    answers, requests = _closure(answers, schemas), _closure(requests, schemas)
    shared = answers & requests
    copies = {name: f"{name}Write" for name in shared}
    clashes = sorted(set(copies.values()) & set(schemas))
    assert not clashes, f"request copies would replace schemas: {clashes}"
    for name in sorted(shared):
        schemas[copies[name]] = _renamed(copy.deepcopy(schemas[name]), copies)
    for operations in document["paths"].values():
        for operation in operations.values():
            if "requestBody" in operation:
                _renamed(operation["requestBody"], copies)
    for name in answers:
        _without_null(schemas[name])


_SCHEMA_REF = "#/components/schemas/"


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMA_REF):
            found.add(ref[len(_SCHEMA_REF) :])
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _closure(names: set[str], schemas: dict[str, Any]) -> set[str]:
    """``names`` and every schema they refer to, directly or not."""
    found: set[str] = set()
    waiting = list(names)
    while waiting:
        name = waiting.pop()
        if name not in found:
            found.add(name)
            referred: set[str] = set()
            _refs(schemas[name], referred)
            waiting += referred - found
    return found


def _renamed(node: Any, names: dict[str, str]) -> Any:
    """``node`` with its references to ``names`` pointed at their new names, in place."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref[len(_SCHEMA_REF) :] in names:
            node["$ref"] = _SCHEMA_REF + names[ref[len(_SCHEMA_REF) :]]
        for value in node.values():
            _renamed(value, names)
    elif isinstance(node, list):
        for value in node:
            _renamed(value, names)
    return node


def _without_null(node: Any) -> None:
    """``anyOf [T, null]`` -> T, and no ``default: null``, throughout one schema, in place."""
    if isinstance(node, dict):
        variants = node.get("anyOf")
        if isinstance(variants, list) and any(v.get("type") == "null" for v in variants):
            kept = [v for v in variants if v.get("type") != "null"]
            del node["anyOf"]
            if len(kept) == 1:
                node.update({k: v for k, v in kept[0].items() if k not in node})
            elif kept:
                node["anyOf"] = kept
        if "default" in node and node["default"] is None:
            del node["default"]
        for value in node.values():
            _without_null(value)
    elif isinstance(node, list):
        for value in node:
            _without_null(value)


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
