"""The outermost layer of every request: request id, body limit, security headers, access log,
and the last-resort 500.

It is plain ASGI (no framework) so that it wraps everything, the framework's own error handling
included, and costs little on the hot path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmgate import audit
from crmgate.api.clients import client_address, networks
from crmgate.api.errors import error_body

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_NO_STORE_PREFIXES = ("/v1", "/authorization")

access_log = logging.getLogger("crmgate.access")
error_log = logging.getLogger("crmgate.error")


class BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int = 1_048_576,
        trusted_proxies: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.trusted = networks(trusted_proxies)
        self._words: frozenset[str] | None = None  # for the access log (route_words)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        state["client_address"] = client_address(scope, self.trusted)
        # audit events carry the client and request id
        audit.bind_request(scope, request_id, state["client_address"])
        no_store = scope.get("path", "").startswith(_NO_STORE_PREFIXES)
        secure = scope.get("scheme") == "https"
        limit = self.max_body_bytes
        status = 0
        received = 0
        too_large = False

        async def send_decorated(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = _headers(
                    message.get("headers", []), request_id, no_store, secure
                )
            await send(message)

        async def send_error(error_status: int, code: str, message: str) -> None:
            start, body = _error_messages(error_status, code, message, request_id)
            await send_decorated(start)
            await send_decorated(body)

        async def send_app(message: Message) -> None:
            # Once the body was cut off, whatever the application answers (frameworks turn the
            # interrupted read into a 400) is replaced by one 413.
            if too_large:
                if message["type"] == "http.response.start" and status == 0:
                    await send_error(413, "REQUEST_TOO_LARGE", _too_large(limit))
                return
            await send_decorated(message)

        async def receive_limited() -> Message:
            # Content-Length can be absent (chunked) or wrong: count what really arrives.
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    raise BodyTooLarge
            return message

        try:
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                too_large = True
                raise BodyTooLarge
            await self.app(scope, receive_limited, send_app)
        except BodyTooLarge:
            if status == 0:
                await send_error(413, "REQUEST_TOO_LARGE", _too_large(limit))
        except Exception as exc:
            if too_large:
                if status == 0:
                    await send_error(413, "REQUEST_TOO_LARGE", _too_large(limit))
            else:
                if not exc.__dict__.get("crmgate_logged"):
                    error_log.exception("unhandled error in request %s", request_id)
                if status == 0:
                    message = (
                        f"the gateway failed to handle this request; quote request id {request_id}"
                    )
                    await send_error(500, "INTERNAL_ERROR", message)
        finally:
            if self._words is None and scope.get("route") is None:
                # once, for the first unmatched path; building the API document takes a moment
                self._words = await asyncio.to_thread(route_words, self.app)
            _log_access(scope, state, status, started, request_id, self._words or frozenset())


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit} bytes"


HSTS = b"max-age=31536000"  # a year; no includeSubDomains: the operator's other hosts are theirs


def _headers(
    headers: list[tuple[bytes, bytes]], request_id: str, no_store: bool, secure: bool = False
) -> list[tuple[bytes, bytes]]:
    result = [(name, value) for name, value in headers if name.lower() != b"server"]
    result.append((b"x-request-id", request_id.encode()))
    result.append((b"x-content-type-options", b"nosniff"))
    result.append((b"referrer-policy", b"no-referrer"))
    if no_store and not any(name.lower() == b"cache-control" for name, _ in result):
        result.append((b"cache-control", b"no-store"))
    if secure:  # only over TLS: a browser ignores it over http, and it must not pin http
        result.append((b"strict-transport-security", HSTS))
    return result


def _error_messages(
    status: int, code: str, message: str, request_id: str
) -> tuple[Message, Message]:
    body = json.dumps(error_body(status, code, message, request_id)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if status == 413:
        headers.append((b"connection", b"close"))  # the rest of the body is not read
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": body},
    )


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.match(text) else None
    return None


def _log_access(
    scope: Scope,
    state: dict[str, Any],
    status: int,
    started: float,
    request_id: str,
    words: frozenset[str] = frozenset(),
) -> None:
    route = scope.get("route")
    # A matched route is logged as its template (/v1/user/{internal_user_id}), so ids and anything
    # else in the path stay out of the log; an unmatched one keeps only the words of crmgate's own
    # routes (/v1/user/*/nope -> /v1/user/*/*): a path can hold anything a client pasted.
    path = getattr(route, "path", None) or _masked(scope, words)
    principal = state.get("principal")
    access_log.info(
        "%s %s %d %.2fms org=%s key=%s app=%s rid=%s",
        str(scope.get("method", "-"))[:16],
        path,
        status,
        (time.perf_counter() - started) * 1000,
        getattr(principal, "organisation_id", "-"),
        getattr(principal, "key_hint", "-"),
        _application_key_prefix(scope),
        request_id,
    )


_APPLICATION_KEY = re.compile(r"^[0-9a-f]{40}$")  # the shape of application keys (store)


def _application_key_prefix(scope: Scope) -> str:
    """The first 8 characters of the application key, if the header holds one (anything else a
    client sends there is not logged at all: it may be a secret pasted in the wrong place)."""
    for name, value in scope.get("headers", []):
        if name == b"x-api2crm-application-key":
            text = value.decode("latin-1")
            return text[:8] if _APPLICATION_KEY.match(text) else "?"
    return "-"


def _masked(scope: Scope, words: frozenset[str]) -> str:
    segments = scope.get("path", "").split("/")[1:20]
    return "/" + "/".join(s if s in words or not s else "*" for s in segments)


def route_words(app: Any) -> frozenset[str]:
    """The fixed segments of every path of the API document of the framework app inside
    ``app`` (the layers around it are followed through their ``app`` attribute)."""
    while not hasattr(app, "openapi") and hasattr(app, "app"):
        app = app.app
    paths = app.openapi().get("paths", {}) if hasattr(app, "openapi") else {}
    return frozenset(
        segment
        for path in [*paths, "/docs"]
        for segment in path.split("/")
        if segment and "{" not in segment
    )
