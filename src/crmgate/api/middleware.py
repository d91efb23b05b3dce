"""The outermost layer of every request: request id, security headers, access log, last-resort 500.

It is plain ASGI (no framework) so that it wraps everything, the framework's own error handling
included, and costs little on the hot path.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from crmgate.api.errors import error_body
from crmgate.logs import redact

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_NO_STORE_PREFIXES = ("/v1", "/authorization")

access_log = logging.getLogger("crmgate.access")
error_log = logging.getLogger("crmgate.error")


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        path: str = scope.get("path", "")
        no_store = path.startswith(_NO_STORE_PREFIXES)
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"server"
                ]
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                if no_store and not any(name.lower() == b"cache-control" for name, _ in headers):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:
            if not exc.__dict__.get("crmgate_logged"):
                error_log.exception("unhandled error in request %s", request_id)
            if status == 0:
                body = json.dumps(
                    error_body(
                        500,
                        "INTERNAL_ERROR",
                        f"the gateway failed to handle this request; quote request id {request_id}",
                        request_id,
                    )
                ).encode()
                await send_wrapper(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send_wrapper({"type": "http.response.body", "body": body})
        finally:
            _log_access(scope, state, status, started, request_id)


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_REQUEST_ID.match(text) else None
    return None


def _log_access(
    scope: Scope, state: dict[str, Any], status: int, started: float, request_id: str
) -> None:
    route = scope.get("route")
    # A matched route is logged as its template (/v1/user/{internal_user_id}), so ids and anything
    # else in the path stay out of the log; an unmatched path is logged masked and truncated.
    path = getattr(route, "path", None) or redact(scope.get("path", ""))[:200]
    principal = state.get("principal")
    access_log.info(
        "%s %s %d %.2fms org=%s key=%s rid=%s",
        scope.get("method", "-"),
        path,
        status,
        (time.perf_counter() - started) * 1000,
        getattr(principal, "organisation_id", "-"),
        getattr(principal, "key_hint", "-"),
        request_id,
    )
