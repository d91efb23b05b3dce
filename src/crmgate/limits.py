"""Rate limits and quotas (OWASP API4:2023; API2:2023 for bursts of wrong keys).

Three things are counted, each over several periods at once (per second, minute, day, month):
every request of a user key; every request of an application on the routes that reach its CRM
(once it is one of the caller's organisation's); and every failed authentication from one client
address (api/clients.py); on a deprecated API version, also the version's own limit per user
key (api/versions.py), in the same step as the key's. The counting is the `limits` library's
(sliding-window counters by default), in this process's memory or, with ``CRMGATE_REDIS_URL``, in
Redis so that every gateway process shares one count.

Admission (``RateLimits._acquire``): a request needs a place in every window of its counters. It
looks at all of them first; one already full refuses it, and it counts nowhere. Otherwise it
takes its place in one window after another, the window with the fewest places left first (at
equal places the shorter period, then the deprecated version's before the key's before the
application's), and stops at the first that refuses. A window refuses there only when a
parallel request (another task, or another process through Redis) took its last place between
the look and the hit; the refused request has then still counted once in each window it took a
place in before: windows that had, at the look, no more places left than the refusing one.
`limits` cannot give a place back. So a request refused by the window nearest its end (in a
burst on a deprecated version, the version's) counts nowhere, and the requests that lose such
races spend at most one place each of the windows that were, at their look, as near their end.
A verdict is what the request itself found, at its look and its hits: a refusal names the window
that was full when it refused, though a read a moment later may find room there (only when it
frees is read again), so every 429 carries that window's RateLimit fields and a Retry-After.

What a client sees: 429 (RFC 6585) with ``Retry-After`` (RFC 9110, seconds) and, on every counted
answer, the header fields of draft-ietf-httpapi-ratelimit-headers-06: ``RateLimit-Limit``,
``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds) for the limit closest to refusing, and
``RateLimit-Policy`` listing every limit (``20;w=1, 600;w=60``).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from redis.asyncio import BlockingConnectionPool, ConnectionPool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from crmgate.settings import Settings

log = logging.getLogger("crmgate.limits")

STRATEGIES: dict[str, type[RateLimiter]] = {
    "moving-window": MovingWindowRateLimiter,
    "sliding-window-counter": SlidingWindowCounterRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
}
STATE_KEY = "rate_limit"  # where a request's verdict waits for RateLimitHeaders (scope state)
REDIS_CONNECTIONS = 100  # per gateway process (redis-py's default), shared by all its requests
REDIS_WAIT = 5.0  # seconds a count waits for a free connection before failing open


def parse_limits(text: str) -> tuple[RateLimitItem, ...]:
    """``"20/second;600/minute"`` -> its limits; an empty string is no limit at all."""
    text = text.strip()
    if not text:
        return ()
    return tuple(parse_many(text))


def _digest(value: str) -> str:
    # Application keys are credentials: the counters (and Redis) only ever see a digest.
    return hashlib.sha256(value.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Window:
    """One limit's state: how much of it is left, and when one more request fits again."""

    subject: str  # "user key", "application", "client address"
    item: RateLimitItem
    remaining: int
    reset: float  # epoch seconds

    @property
    def period(self) -> int:
        return int(self.item.get_expiry())

    @property
    def used(self) -> int:
        return self.item.amount - self.remaining

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0

    @property
    def name(self) -> str:
        granularity = self.item.GRANULARITY.name
        return granularity if self.item.multiples == 1 else f"{self.item.multiples} {granularity}"

    def reset_in(self, now: float) -> int:
        # at least a second: a counter whose window has just turned (a sliding-window counter
        # can report a reset at or before now) is not free to use "in 0 seconds" ago
        return max(1, math.ceil(self.reset - now))

    def taken(self) -> Window:
        return Window(self.subject, self.item, self.remaining - 1, self.reset)

    def refused(self, reset: float) -> Window:
        """This window as a hit that it refused found it: full."""
        return Window(self.subject, self.item, 0, reset)

    def describe(self) -> str:
        return f"{self.item.amount} per {self.name}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a request was admitted, and the windows it was decided on (as they were then).

    A refusal holds at least one exhausted window, the one that refused it: RateLimits builds
    no other (``_acquire``). Its methods do not rely on that, though: each is total, and a
    verdict without windows (no limits, or a counter store that failed open) has no header
    fields and a Retry-After of a second.
    """

    allowed: bool
    windows: tuple[Window, ...]

    @property
    def full(self) -> tuple[Window, ...]:
        return tuple(window for window in self.windows if window.exhausted)

    def retry_after(self, now: float) -> int:
        """Seconds until every exhausted window lets one more request through (at least 1)."""
        return max((window.reset_in(now) for window in self.full), default=1)

    def refusal(self) -> str:
        """What is over its limit, for the caller: "the user key's limit of 3 per minute"."""
        if not self.full:
            return "a rate limit"
        return " and ".join(
            f"the {window.subject}'s limit of {window.describe()}" for window in self.full
        )

    def refused_by(self, subject: str) -> bool:
        """Whether a full window of ``subject`` (``VersionLimit.subject``, ...) refused it."""
        return not self.allowed and any(window.subject == subject for window in self.full)

    def closest(self, now: float) -> Window | None:
        """The window the header fields describe: of a refusal, the full one that frees last;
        of an admission, the one with the fewest places left (at equal, the shorter period)."""
        if not self.allowed and self.full:
            return max(self.full, key=lambda window: window.reset_in(now))
        return min(self.windows, key=lambda window: (window.remaining, window.period), default=None)

    def headers(self, now: float) -> dict[str, str]:
        """draft-ietf-httpapi-ratelimit-headers-06 fields, for the window closest to refusing."""
        closest = self.closest(now)
        if closest is None:
            return {}
        headers = {
            "RateLimit-Limit": str(closest.item.amount),
            "RateLimit-Remaining": str(max(0, closest.remaining) if self.allowed else 0),
            "RateLimit-Reset": str(closest.reset_in(now)),
            "RateLimit-Policy": ", ".join(
                f"{window.item.amount};w={window.period}" for window in self.windows
            ),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after(now))
        return headers


def requests_limit(windows: Sequence[Window], now: float | None = None) -> dict[str, Any]:
    """The contract's ``RequestsLimit`` object from an application's live windows."""
    now = time.time() if now is None else now
    exhausted = [window for window in windows if window.exhausted]
    free_at = max((window.reset for window in exhausted), default=None)
    retry_after = None
    if free_at is not None:
        retry_after = datetime.fromtimestamp(math.ceil(free_at), UTC).isoformat()
    return {
        "is_exceeded": bool(exhausted),
        "retry_after": retry_after,
        "type": [
            {
                "type": window.name,
                "available": max(0, window.remaining),
                "count": window.used,
                "period": window.period,
            }
            for window in windows
        ],
    }


@dataclass(frozen=True, slots=True)
class Counter:
    """What is counted (its limits) and under which identifiers."""

    subject: str
    items: tuple[RateLimitItem, ...]
    identifiers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VersionLimit:
    """A deprecated API version's own limit on each user key (api/versions.py)."""

    name: str
    items: tuple[RateLimitItem, ...]
    link: str = ""  # where its callers learn to move to a current version

    @property
    def subject(self) -> str:
        return f"deprecated API {self.name}"


@dataclass(frozen=True, slots=True)
class Policy:
    user_key: tuple[RateLimitItem, ...]
    application: tuple[RateLimitItem, ...]


class RateLimits:
    """The counters of one gateway process (shared with the others through Redis)."""

    def __init__(
        self,
        *,
        user_key: str,
        application: str,
        bad_keys: str,
        organisations: dict[str, dict[str, str | None]] | None = None,
        strategy: str = "moving-window",
        redis_url: str | None = None,
        redis_prefix: str = "crmgate-limits",
    ) -> None:
        self.default = Policy(parse_limits(user_key), parse_limits(application))
        self.bad_keys = parse_limits(bad_keys)
        self.organisations = {
            organisation: Policy(
                self.default.user_key
                if limits.get("user_key") is None
                else parse_limits(limits["user_key"] or ""),
                self.default.application
                if limits.get("application") is None
                else parse_limits(limits["application"] or ""),
            )
            for organisation, limits in (organisations or {}).items()
        }
        self._pool: ConnectionPool | None = None
        storage: Storage
        if redis_url:
            # Our own pool, so that close() can empty it; the `limits` storage borrows it. One
            # that waits for a free connection: the plain pool raises once its 100 are busy (a
            # burst of a dozen requests, each counting in several windows), and a counter store
            # that raises fails open, which would lift the limits exactly under a burst.
            self._pool = BlockingConnectionPool.from_url(
                redis_url.removeprefix("async+"),
                max_connections=REDIS_CONNECTIONS,
                timeout=REDIS_WAIT,
            )
            storage = RedisStorage(
                "async+" + redis_url.removeprefix("async+"),
                implementation="redispy",
                key_prefix=redis_prefix,
                wrap_exceptions=True,
                connection_pool=self._pool,  # type: ignore[arg-type]
            )
        else:
            storage = MemoryStorage()
        self.limiter = STRATEGIES[strategy](storage)
        self._last_storage_warning = 0.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimits:
        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        return cls(
            user_key=settings.rate_limit_user_key,
            application=settings.rate_limit_application,
            bad_keys=settings.rate_limit_bad_keys,
            organisations={
                organisation: limits.model_dump()
                for organisation, limits in settings.rate_limit_organisations.items()
            },
            strategy=settings.rate_limit_strategy,
            redis_url=redis_url,
            redis_prefix=settings.rate_limit_redis_prefix,
        )

    def policy(self, organisation_id: str) -> Policy:
        return self.organisations.get(organisation_id, self.default)

    # ---- the three counters -------------------------------------------------------------------

    def _user_key(self, organisation_id: str, key_id: str) -> Counter:
        return Counter("user key", self.policy(organisation_id).user_key, ("key", key_id))

    def _application(self, organisation_id: str, application_key: str) -> Counter:
        identifiers = ("app", organisation_id, _digest(application_key))
        return Counter("application", self.policy(organisation_id).application, identifiers)

    def _address(self, address: str) -> Counter:
        return Counter("client address", self.bad_keys, ("badkey", address))

    async def hit_request(
        self,
        organisation_id: str,
        key_id: str,
        application_key: str | None = None,
        version: VersionLimit | None = None,
    ) -> Verdict:
        """Count one request of a user key (and of the application it reaches, and of the
        deprecated API version it calls, if any), or refuse it (see the module's admission)."""
        counters = []
        if version is not None:  # the strictest: taken first at equal room
            identifiers = ("version", version.name, key_id)
            counters.append(Counter(version.subject, version.items, identifiers))
        counters.append(self._user_key(organisation_id, key_id))
        if application_key:
            counters.append(self._application(organisation_id, application_key))
        return await self._acquire(counters)

    async def application_windows(
        self, organisation_id: str, application_key: str
    ) -> tuple[Window, ...]:
        return await self._windows([self._application(organisation_id, application_key)])

    async def user_key_windows(self, organisation_id: str, key_id: str) -> tuple[Window, ...]:
        """A key's windows as they are now (counts nothing): the portal's usage page."""
        return await self._windows([self._user_key(organisation_id, key_id)])

    async def address_throttled(self, address: str | None) -> Verdict | None:
        """The refusal for an address over its limit of failed authentications, else None (an
        unknown client is never throttled: one bucket for all would let one lock out all)."""
        if address is None:
            return None
        windows = await self._windows([self._address(address)])
        if any(window.exhausted for window in windows):
            return Verdict(False, windows)
        return None

    async def authentication_failed(self, address: str | None) -> None:
        if address is not None:
            await self._acquire([self._address(address)])

    async def over(self, counters: Sequence[Counter]) -> Verdict | None:
        """The refusal when any window of these counters is full, else None (counts nothing):
        for counters of other things than requests (the portal's failed sign-ins)."""
        windows = await self._windows(counters)
        if any(window.exhausted for window in windows):
            return Verdict(False, windows)
        return None

    async def count(self, counters: Sequence[Counter]) -> None:
        await self._acquire(counters)

    # ---- counting -----------------------------------------------------------------------------

    async def _windows(self, counters: Sequence[Counter]) -> tuple[Window, ...]:
        pairs = [(counter, item) for counter in counters for item in counter.items]
        if not pairs:
            return ()
        try:
            stats = await asyncio.gather(
                *(
                    self.limiter.get_window_stats(item, *counter.identifiers)
                    for counter, item in pairs
                )
            )
        except StorageError as failure:
            self._storage_failed(failure)
            return ()
        return tuple(
            Window(counter.subject, item, stat.remaining, stat.reset_time)
            for (counter, item), stat in zip(pairs, stats, strict=True)
        )

    async def _acquire(self, counters: Sequence[Counter]) -> Verdict:
        """Count one request in every window of the counters (listed strictest first), or
        refuse it: look at all, then take a place in each, the fullest first, one after another,
        stopping at the first refusal. What a refused request still counted: the module's
        docstring, "Admission". The verdict holds the windows as this request found them: the
        look's, with the places it took and the window that refused it."""
        windows = await self._windows(counters)
        if any(window.exhausted for window in windows):
            return Verdict(False, windows)  # refused at the look: counted nowhere
        identifiers = {counter.subject: counter.identifiers for counter in counters}
        decided = list(windows)
        # sorted() is stable: at equal room and period, the counters' own order decides
        for index, window in sorted(
            enumerate(windows), key=lambda pair: (pair[1].remaining, pair[1].period)
        ):
            try:
                taken = await self.limiter.hit(window.item, *identifiers[window.subject])
            except StorageError as failure:
                self._storage_failed(failure)
                return Verdict(True, ())
            if not taken:
                # A parallel request took its last place since the look, so the window was
                # full at this hit, and the verdict says so. Not a read's word: a moment later
                # the window may have room again (a sliding counter decays, a moving window's
                # oldest entry ages out, a fixed window turns), and a refusal naming no full
                # window has no RateLimit fields to give.
                decided[index] = window.refused(await self._frees_at(window, identifiers))
                return Verdict(False, tuple(decided))
            decided[index] = window.taken()
        return Verdict(True, tuple(decided))

    async def _frees_at(self, window: Window, identifiers: dict[str, tuple[str, ...]]) -> float:
        """When a window found full at a hit lets one more in: the later of the look's reset and
        a read's (the look's may be a window that did not exist yet, "free now")."""
        try:
            stats = await self.limiter.get_window_stats(window.item, *identifiers[window.subject])
        except StorageError:
            return window.reset  # the refusal stands; the next request's look will say more
        return max(window.reset, stats.reset_time)

    def _storage_failed(self, failure: StorageError) -> None:
        # Fail open: an unreachable Redis must not take the API down with it. Said loudly, but
        # at most once a minute, and without the URL (it may hold a password).
        now = time.monotonic()
        if now - self._last_storage_warning > 60:
            self._last_storage_warning = now
            log.error(
                "rate limits are not enforced: the counter store failed (%s)",
                type(failure.storage_error).__name__,
            )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.disconnect()


class RateLimitHeaders:
    """Adds a request's RateLimit header fields (left in the scope state by the authentication
    dependency) to its answer, whatever produced the answer: a route or an error handler."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                verdict = scope.get("state", {}).get(STATE_KEY)
                if isinstance(verdict, Verdict):
                    extra = [
                        (name.lower().encode(), value.encode())
                        for name, value in verdict.headers(time.time()).items()
                    ]
                    present = {name.lower() for name, _ in message.get("headers", [])}
                    message["headers"] = [
                        *message.get("headers", []),
                        *(pair for pair in extra if pair[0] not in present),
                    ]
            await send(message)

        await self.app(scope, receive, send_with_headers)
