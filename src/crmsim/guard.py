"""The door every simulated API call passes: the credential found where the CRM reads it, an
unknown or expired one refused in the CRM's own shape, a sliding-window rate limit (429 with the
CRM's headers), the scripted faults (crmsim.faults), then the handler, whose raised ``Refusal``
becomes the CRM's error answer. Bearer tokens: RFC 6750 §2.1; HTTP Basic: RFC 7617.

A CRM subclasses ``Guard`` for its answer shapes (``unauthorized``, ``limited``,
``rate_headers``, ``insufficient_scope``) and passes where its credentials go.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from crmsim.faults import Faults
from crmsim.tokens import AccessToken, TokenStore

S = TypeVar("S")
Credential = Callable[[web.Request], str | None]  # the token text in a request, if there
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TokenHandler = Callable[[web.Request, AccessToken[S]], Awaitable[web.StreamResponse]]


class Refusal(Exception):
    """An error answer raised from anywhere inside a handler; each CRM's refusal builds its own
    body."""

    def response(self) -> web.StreamResponse:
        raise NotImplementedError


class Answer(Refusal):
    """A refusal answered with a JSON ``body`` (the shape most CRMs' errors take): a CRM makes
    its body once, in a function, and raises this or returns its ``response()``."""

    def __init__(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status, self.body, self.headers = status, body, dict(headers or {})

    def response(self) -> web.Response:
        return web.json_response(self.body, status=self.status, headers=self.headers)


# ---- where a credential travels -------------------------------------------------------------


def bearer(scheme: str = "Bearer") -> Credential:
    """``Authorization: <scheme> <token>`` (RFC 6750 §2.1; Zoho names its own scheme)."""

    def found(request: web.Request) -> str | None:
        name, _, value = request.headers.get("Authorization", "").partition(" ")
        return (value.strip() or None) if name == scheme else None

    return found


def header(name: str) -> Credential:
    """A header of its own (``x-api-token``, ``X-API-Key``)."""
    return lambda request: request.headers.get(name) or None


def query(name: str) -> Credential:
    """A query-string parameter (``api_token``; RFC 6750 §2.3 names ``access_token``)."""
    return lambda request: request.query.get(name) or None


def basic_user() -> Credential:
    """HTTP Basic with the key as the user name and the password ignored (RFC 7617), as
    ``curl -u key:`` sends it."""

    def found(request: web.Request) -> str | None:
        name, _, value = request.headers.get("Authorization", "").partition(" ")
        if name != "Basic":
            return None
        try:
            pair = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return pair.partition(":")[0] or None

    return found


# ---- the rate window ------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    used: int  # calls in the window before this one
    retry_after: int  # seconds until the oldest call leaves the window

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used - 1)


class RateWindow:
    """At most ``limit`` calls per key in any ``seconds`` (a sliding window). ``limit`` may be
    a callable, so a test can change the simulator's limit between calls."""

    def __init__(self, limit: int | Callable[[], int], seconds: float) -> None:
        self.limit = limit
        self.seconds = seconds
        self._calls: dict[Hashable, deque[float]] = {}

    def hit(self, key: Hashable) -> Verdict:
        """Count a call (unless it is over the limit) and say whether it may go on."""
        limit = self.limit() if callable(self.limit) else self.limit
        now = time.monotonic()
        calls = self._calls.setdefault(key, deque())
        while calls and now - calls[0] > self.seconds:
            calls.popleft()
        wait = int(self.seconds - (now - calls[0])) + 1 if calls else int(self.seconds)
        verdict = Verdict(len(calls) < limit, limit, len(calls), max(1, wait))
        if verdict.allowed:
            calls.append(now)
        return verdict


class Quota:
    """A fixed allowance of calls, spent one a call and refused once spent (Zoho's API credits
    per 24 hours, Salesforce's daily API requests): not a sliding window, for these CRMs count
    against a period whose reset is hours away. Every call counts, a refused one too, as
    Salesforce's usage shows it. ``limit`` and ``used`` are plain attributes a test may set."""

    def __init__(self, limit: int, retry_after: int = 3600) -> None:
        self.limit, self.used, self.retry_after = limit, 0, retry_after

    def hit(self, key: Hashable) -> Verdict:
        used, self.used = self.used, self.used + 1
        return Verdict(used < self.limit, self.limit, used, self.retry_after)


class Window(Protocol):
    """What the guard counts calls with: a `RateWindow`, a `Quota` or a CRM's own."""

    def hit(self, key: Hashable) -> Verdict: ...


# ---- the guard --------------------------------------------------------------------------------


class Guard(Generic[S]):
    """Wraps a handler ``(request, token) -> response``: ``router.add_get(path, guard(h))``."""

    def __init__(
        self,
        tokens: TokenStore[S],
        credentials: Sequence[Credential],
        window: Window | None = None,
        faults: Faults | None = None,
    ) -> None:
        self.tokens = tokens
        self.credentials = tuple(credentials)
        self.window = window
        self.faults = faults if faults is not None else Faults()

    def __call__(self, handler: TokenHandler[S]) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            text = next((t for t in (find(request) for find in self.credentials) if t), None)
            token = self.tokens.access.get(text or "")
            if token is None or not self.accepts(token):
                return self.unauthorized(request, token)
            headers: dict[str, str] = {}
            if self.window is not None:
                verdict = self.window.hit(self.rate_key(text or "", token))
                headers = self.rate_headers(verdict)
                if not verdict.allowed:
                    refused = self.limited(verdict)
                    refused.headers.update(headers)
                    return refused
            faulty = await self.faults.play(request)
            if faulty is not None:
                return faulty
            try:
                response = await handler(request, token)
            except Refusal as refusal:
                response = refusal.response()
            response.headers.update(headers)
            return response

        return guarded

    def require(self, token: AccessToken[S], *accepted: str) -> None:
        """Go on only if the token holds one of the ``accepted`` scopes."""
        if not any(scope in token.scopes for scope in accepted):
            raise self.insufficient_scope(accepted)

    # ---- hooks: the CRM's answers -------------------------------------------------------------

    def accepts(self, token: AccessToken[S]) -> bool:
        """Whether a known credential still works: not expired (Salesforce: its user active)."""
        return not token.expired()

    def unauthorized(
        self, request: web.Request, token: AccessToken[S] | None
    ) -> web.StreamResponse:
        """No credential, an unknown one (``token`` None) or an expired one."""
        challenge = 'Bearer error="invalid_token"'  # RFC 6750 §3
        return web.Response(status=401, headers={"WWW-Authenticate": challenge})

    def limited(self, verdict: Verdict) -> web.StreamResponse:
        return web.Response(status=429, headers={"Retry-After": str(verdict.retry_after)})

    def rate_headers(self, verdict: Verdict) -> dict[str, str]:
        """Headers every answer carries (the limit, what is left), 429s too."""
        return {}

    def rate_key(self, text: str, token: AccessToken[S]) -> Hashable:
        """What the limit counts per: the token by default (a CRM may count per user)."""
        return text

    def insufficient_scope(self, needed: tuple[str, ...]) -> Refusal:
        return _Forbidden(needed)


class _Forbidden(Refusal):
    def __init__(self, needed: tuple[str, ...]) -> None:
        super().__init__(" ".join(needed))
        self.needed = needed

    def response(self) -> web.StreamResponse:
        challenge = f'Bearer error="insufficient_scope", scope="{" ".join(self.needed)}"'
        return web.Response(status=403, headers={"WWW-Authenticate": challenge})


async def json_object(
    request: web.Request,
    refuse: Callable[[str], Exception],
    not_json: str = "Invalid JSON body",
    not_object: str = "Invalid JSON body: an object is expected",
) -> dict[str, Any]:
    """The request's JSON object body, or ``refuse(message)`` raised in the CRM's words."""
    body = await json_body(request, refuse, not_json)
    if not isinstance(body, dict):
        raise refuse(not_object)
    return body


async def json_body(
    request: web.Request, refuse: Callable[[str], Exception], not_json: str = "Invalid JSON body"
) -> Any:
    """The request's JSON body, whatever it holds (a list of a batch's items), or
    ``refuse(not_json)`` raised in the CRM's words."""
    try:
        return await request.json()
    except ValueError:
        raise refuse(not_json) from None
