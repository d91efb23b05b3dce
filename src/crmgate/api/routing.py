"""A router that knows where its routes live.

FastAPI tries the routes of every included router in order, with some bookkeeping per route,
until one matches: a request to the 200th of 347 routes paid for the 199 before it (route
matching was the largest cost of a warm passthrough call, docs/performance.md). A
``ScopedRouter`` says no at once to a path outside its ``scope`` (a path prefix every one of its
routes starts with), so a request only walks the routes of the router it belongs to.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette._utils import get_route_path
from starlette.routing import Match
from starlette.types import Scope


class ScopedRouter(APIRouter):
    def __init__(self, *, scope: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scope = scope.rstrip("/")

    def covers(self, path: str) -> bool:
        return path == self.scope or path.startswith(self.scope + "/")

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if not self.covers(get_route_path(scope)):
            return Match.NONE, {}
        return super().matches(scope)
