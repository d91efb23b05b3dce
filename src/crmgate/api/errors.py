"""The contract's error shape, and the mapping of every failure onto it.

    {"type": ..., "title": "Unauthorized", "status": 401,
     "detail": {"code": "SERVICE_UNAUTHORIZED", "message": "..."}, "request_id": "..."}

``request_id`` is crmgate's addition: it is also in the ``X-Request-ID`` header and in the logs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import compile_path
from starlette.types import Scope, Send

from crmgate.api.responses import JSONResponse, render_json
from crmgate.connectors.errors import CrmError, RateLimited
from crmgate.query import QueryError
from crmgate.security.vault import DecryptionError
from crmgate.store.accounts import AccountError

ERROR_TYPE = "http://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"
log = logging.getLogger("crmgate.error")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        errors: Sequence[Mapping[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.errors = list(errors or [])


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "SERVICE_UNAUTHORIZED", message)


def error_body(
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    errors: Sequence[Mapping[str, str]] = (),
) -> dict[str, Any]:
    detail: dict[str, Any] = {"code": code, "message": message}
    if errors:
        detail["errors"] = list(errors)
    return {
        "type": ERROR_TYPE,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "request_id": request_id,
    }


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    errors: Sequence[Mapping[str, str]] = (),
) -> None:
    """The contract's error answer, sent by ASGI middleware that refuses a request before any
    route runs (request bounds, retired API versions, the text rule)."""
    request_id = scope.get("state", {}).get("request_id")
    body = render_json(error_body(status, code, message, request_id, errors))
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def error_response(request: Request, error: ApiError) -> JSONResponse:
    return JSONResponse(
        error_body(error.status, error.code, error.message, _request_id(request), error.errors),
        status_code=error.status,
        headers=error.headers,
    )


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _location(loc: Sequence[Any]) -> str:
    # ("body", "email") -> "email"; ("query", "page_size") -> "page_size"; ("header", x) -> x
    parts = [str(part) for part in loc[1:]] if len(loc) > 1 else [str(part) for part in loc]
    return ".".join(parts) or "body"


async def _validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = list(exc.errors())
    about_body = any(tuple(problem.get("loc", ()))[:1] == ("body",) for problem in problems)
    content_type = request.headers.get("content-type", "")
    if about_body and content_type and not _is_json(content_type):
        return error_response(
            request,
            ApiError(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "the body must be JSON, sent with Content-Type: application/json, "
                f"not {content_type[:80]}",
            ),
        )
    if any(problem.get("type") == "json_invalid" for problem in problems):
        return error_response(
            request, ApiError(400, "MALFORMED_REQUEST", "the request body is not valid JSON")
        )
    errors = [
        {"field": _location(problem.get("loc", ())), "message": str(problem.get("msg", ""))}
        for problem in problems
    ]
    message = "; ".join(f"{error['field']}: {error['message']}" for error in errors)
    return error_response(request, ApiError(422, "NOT_VALID", message, errors=errors))


async def _http(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
    messages = {
        404: "no such route; see /v1/openapi.json for the routes this gateway serves",
        405: f"{request.method} is not allowed on this route",
    }
    status = exc.status_code
    if status == 400:
        # The framework's own 400s are all failures to read the body (bad UTF-8, nesting, ...).
        return error_response(
            request, ApiError(400, "MALFORMED_REQUEST", "the request body cannot be read as JSON")
        )
    headers = dict(exc.headers or {})
    if status == 405:
        headers["Allow"] = ", ".join(_allowed_methods(request)) or headers.get("Allow", "")
    error = ApiError(
        status,
        codes.get(status, HTTPStatus(status).name),
        messages.get(status, str(exc.detail)),
        headers=headers,
    )
    return error_response(request, error)


_METHODS = frozenset(("get", "put", "post", "delete", "patch", "head", "options"))


def _allowed_methods(request: Request) -> list[str]:
    """Every method the routes give this path (the framework's own Allow names only the first
    route it matched: each method of a path is a route of its own). Read off the route table,
    not the API document: building that takes seconds of the event loop, and any caller could
    make the first 405 of a process pay for it."""
    table = getattr(request.app.state, "allowed_methods", None)
    if table is None:
        served: dict[str, set[str]] = {}
        for context in iter_route_contexts(request.app.routes):
            route = context.original_route
            if isinstance(route, APIRoute) and route.include_in_schema and context.path_format:
                served.setdefault(context.path_format, set()).update(
                    m for m in route.methods or () if m.lower() in _METHODS
                )
        table = [
            (compile_path(path)[0], path.count("{"), methods) for path, methods in served.items()
        ]
        request.app.state.allowed_methods = table
    # the most specific paths that match (/v1/application/count, not /v1/application/{key})
    matching = [
        (params, served) for pattern, params, served in table if pattern.match(request.url.path)
    ]
    fewest = min((params for params, _ in matching), default=0)
    return sorted({m for params, served in matching if params == fewest for m in served})


async def _api(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request, exc)


async def _account(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AccountError)
    errors = [{"field": exc.field, "message": exc.message}] if exc.field else None
    return error_response(request, ApiError(exc.status, exc.code, exc.message, errors=errors))


async def _crm(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CrmError)
    headers = {}
    if isinstance(exc, RateLimited):
        headers["Retry-After"] = str(exc.retry_after)
    fields = getattr(exc, "fields", ())
    errors = [{"field": field, "message": exc.message} for field in fields if field]
    return error_response(
        request, ApiError(exc.status, exc.code, exc.message, headers=headers, errors=errors)
    )


async def _vault(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DecryptionError)
    log.error("request %s: %s", _request_id(request), exc)
    message = (
        "the stored credentials of this application cannot be decrypted; send complete "
        "credentials with PUT /v1/application/{key} to replace them"
    )
    return error_response(request, ApiError(500, "CREDENTIALS_UNREADABLE", message))


async def _query(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QueryError)
    error = ApiError(
        400, "NOT_VALID", str(exc), errors=[{"field": exc.parameter, "message": exc.message}]
    )
    return error_response(request, error)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(ApiError, _api)
    app.add_exception_handler(AccountError, _account)
    app.add_exception_handler(QueryError, _query)
    app.add_exception_handler(CrmError, _crm)
    app.add_exception_handler(DecryptionError, _vault)
    app.add_exception_handler(Exception, _unexpected)


async def _unexpected(request: Request, exc: Exception) -> Response:
    request_id = _request_id(request)
    log.error("unhandled error in request %s", request_id, exc_info=exc)
    exc.__dict__["crmgate_logged"] = True  # Starlette may re-raise it to the outer middleware
    message = f"the gateway failed to handle this request; quote request id {request_id}"
    return JSONResponse(error_body(500, "INTERNAL_ERROR", message, request_id), status_code=500)
