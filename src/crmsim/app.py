"""The HTTP skeleton every simulator shares: a route table built into an aiohttp app (guarded
routes pass the CRM's `Guard`), a log of the calls that reached it, the base URL learnt from the
first call, the token conveniences tests use, and the parsing of paging parameters and opaque
cursors. A simulator subclasses `Simulator` and lists its `routes()`.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Generic, NamedTuple, TypeVar

from aiohttp import web

from crmsim.faults import Faults
from crmsim.guard import Guard, Handler
from crmsim.tokens import AuthorizationCode, RefreshToken, TokenStore

S = TypeVar("S")
T = TypeVar("T")
LOG = 100_000  # calls each log keeps, the oldest forgotten first


class Route(NamedTuple):
    """One line of a route table. A guarded handler takes ``(request, token)`` and runs behind
    the guard (credentials, rate window, faults); an open one (OAuth pages) takes the request."""

    method: str
    path: str
    handler: Callable[..., Awaitable[web.StreamResponse]]
    guarded: bool = True


class Simulator(Generic[S]):
    """A simulated CRM's HTTP side. ``calls`` holds ``(method, path)`` of every call in order;
    ``base_url`` is where the first call found the simulator (its answers name it)."""

    tokens: TokenStore[S]
    guard: Guard[S]
    client_max_size = 1024**2  # aiohttp's default request body limit

    def __init__(self) -> None:
        self.base_url = ""
        self.calls: deque[tuple[str, str]] = deque(maxlen=LOG)
        self.faults = Faults()  # scripted misbehaviour of the next API calls (crmsim.faults)

    def routes(self) -> Iterable[Route]:
        raise NotImplementedError

    def seen(self, request: web.Request) -> None:
        """A hook for what else a CRM's tests want to know of each call."""

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.calls.append((request.method, request.path))
            if not self.base_url:
                self.base_url = f"{request.scheme}://{request.host}"
            self.seen(request)
            return await handler(request)

        application = web.Application(middlewares=[record], client_max_size=self.client_max_size)
        for route in self.routes():
            handler = self.guard(route.handler) if route.guarded else route.handler
            application.router.add_route(route.method, route.path, handler)
        return application

    # ---- tokens, as tests reach them -------------------------------------------------------

    def expire_tokens(self) -> None:
        self.tokens.expire_all()

    @property
    def refresh_tokens(self) -> dict[str, RefreshToken[S]]:
        return self.tokens.refresh

    @property
    def codes(self) -> dict[str, AuthorizationCode[S]]:
        return self.tokens.codes


class UserTokens(Generic[S]):
    """The token conveniences tests use, for a CRM whose credentials act as one of its users
    (its ``admin`` unless another is named): API keys, access and refresh tokens, OAuth apps,
    each granted ``scopes`` (for a CRM whose tokens carry scopes). An access token lives the
    store's ``access_lifetime`` unless a ``lifetime`` is given."""

    tokens: TokenStore[S]
    admin: S
    scopes: tuple[str, ...] = ()

    def issue_key(self, user: S | None = None) -> str:
        return self.tokens.issue_key(user or self.admin, self.scopes)

    def issue_access_token(self, user: S | None = None, lifetime: float | None = None) -> str:
        return self.tokens.issue_access(user or self.admin, self.scopes, lifetime)

    def issue_refresh_token(self, client_id: str, user: S | None = None) -> str:
        return self.tokens.issue_refresh(client_id, user or self.admin, self.scopes)

    def add_app(self, client_id: str, client_secret: str, redirect_uri: str = "") -> None:
        """An OAuth app; with no redirect URI, any is taken."""
        self.tokens.add_client(client_id, client_secret, (redirect_uri,) if redirect_uri else None)


def one_of(name: str, choices: Iterable[str]) -> str:
    """A path segment matching one of ``choices``, found under ``name`` in ``match_info``: one
    route serves each of a CRM's objects (``"/v1/" + one_of("object", ("persons", "deals"))``)."""
    return "{" + name + ":" + "|".join(re.escape(choice) for choice in choices) + "}"


def mechanism(request: web.Request, *, header: str = "", parameter: str = "") -> str:
    """How a call authenticated, for tests (never the credential): the ``Authorization`` scheme
    in lower case, ``header`` when the CRM's own header came and ``query`` when its query
    parameter did, joined by ``+``; ``none`` when nothing came."""
    found = [request.headers.get("Authorization", "").partition(" ")[0].lower()]
    found.append("header" if header and header in request.headers else "")
    found.append("query" if parameter and parameter in request.query else "")
    return "+".join(part for part in found if part) or "none"


def overrides(
    platform: str, base_url: str, oauth: Mapping[str, str], *at_base: str
) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point a platform at a simulator running at ``base_url``:
    its instance host, its OAuth URLs (``{"token_url": "/oauth/token"}``: paths under it) and
    the settings named in ``at_base`` (``api_url``, ``login_url``) set to it."""
    entry: dict[str, Any] = dict.fromkeys(at_base, base_url)
    entry["instance_hosts"] = [base_url.removeprefix("https://")]
    entry["oauth"] = {name: base_url + path for name, path in oauth.items()}
    return {platform: entry}


# ---- paging ---------------------------------------------------------------------------------


def whole(text: str | None, default: int | None = None) -> int | None:
    """A parameter as a whole number (``default`` when absent), None when it is not one."""
    if text is None:
        return default
    return int(text) if text.isdigit() else None


def cursor(state: Any) -> str:
    """An opaque continuation token carrying ``state`` (base64 of its JSON), as CRMs that keep
    no server-side cursor make them."""
    return base64.b64encode(json.dumps(state).encode()).decode()


def uncursor(token: str) -> Any:
    """The state inside a `cursor` token; None when it is not one."""
    try:
        return json.loads(base64.b64decode(token, validate=True))
    except (binascii.Error, ValueError):
        return None


def after(rows: Iterable[T], key: Callable[[T], int], last: int | None, limit: int) -> list[T]:
    """Keyset paging: the first ``limit + 1`` rows whose ``key`` follows ``last`` (all rows when
    None), in key order; one row more than the page tells whether another page follows."""
    ordered = sorted(rows, key=key)
    return [row for row in ordered if last is None or key(row) > last][: limit + 1]
