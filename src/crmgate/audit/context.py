"""Who, where and which request an audit event comes from, bound to the running task.

Who, where and which request: a request's client address and id are bound to the running task
by the request middleware (``bind_request``), and its principal is read from the request's
state once authentication put it there; ``record`` falls back on them for what it is not told.
Background tasks (the flush, the anchor) run in a context of their own, never a request's.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Where an event comes from: the HTTP request being served, or the operator's CLI."""

    client: str | None
    request_id: str | None
    scope: Mapping[str, Any] | None = None  # the ASGI scope: its state holds the principal
    actor: str | None = None

    @property
    def principal(self) -> Any:
        if self.scope is None:
            return None
        return self.scope.get("state", {}).get("principal")


_context: ContextVar[RequestContext | None] = ContextVar("crmgate_audit_context", default=None)


def bind_request(scope: Mapping[str, Any], request_id: str, client: str | None) -> None:
    """Called by the request middleware: events of this request carry its client address (the
    connection's peer, or what a trusted proxy says: api/clients.py) and its request id."""
    _context.set(RequestContext(client, request_id, scope))


def bind_cli() -> None:
    """Events of an operator command: actor ``cli``."""
    _context.set(RequestContext(None, None, None, actor="cli"))


def current() -> RequestContext | None:
    return _context.get()
