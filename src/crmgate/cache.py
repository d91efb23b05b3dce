"""The warm path's in-memory cache: who a user key is, and an application with its decrypted
credentials, for a few seconds, so that a request of a key and an application seen a moment ago
makes no database round trip and no vault decrypt.

What is kept, per process (one ``WarmCache`` in ``Services``, used by the stores):
- a key's ``Principal``, under the key's HMAC digest (never the key itself: a process's memory
  then holds no more of a key than the database does);
- an application's ``ApplicationView`` and decrypted ``Credentials``, under organisation and
  application key. The objects are shared by the requests that read them and never changed.
Each entry lives ``CRMGATE_CACHE_TTL`` seconds at most (0: no cache) and each map holds
``CRMGATE_CACHE_SIZE`` entries at most, least recently used out first (cachetools' TTLCache).
Nothing is cached for an unknown key or application: a guess always costs a lookup (and counts
toward the failed-authentication throttle).

Invalidation: every change that makes an entry wrong (a key revoked, rotated or replaced, a
user disabled, deleted or given another role; an application updated, deleted, renewed or
marked unauthorized) calls ``invalidate`` inside its own transaction, which
- appends the subject ("user:<id>", "application:<organisation>|<key>") to the
  ``cache_invalidations`` table, numbered from the one-row ``cache_invalidation_head`` whose
  row lock it holds until commit: numbers commit in order, so a reader that has seen number n
  has seen every number before it;
- drops the subject from this process's cache when the transaction commits (before the
  change's answer is sent: the next request of this process sees it at once).
Every process polls the table every ``CRMGATE_CACHE_POLL_INTERVAL`` seconds (0.25), one small
indexed query whatever the traffic, never one per request, and drops what it finds; a gap in
the numbers (rows pruned while the poll was down) drops everything. A read races a change: the
process's generation counter goes up with every drop, and an entry read before a drop is not
stored after it. The cache serves nothing before its first poll has read where the log stands.

Why a table and not Redis pub/sub or PostgreSQL LISTEN/NOTIFY: it works on every supported
deployment (the embedded SQLite, PostgreSQL without Redis, a CLI command on another host), the
row commits or rolls back with the change itself (a message sent before a rollback, or lost
while a subscriber reconnects, cannot happen), and the gateway needs no long-lived extra
connection. The price is up to one poll interval of staleness in the other processes. If the
poll fails or hangs (the database unreachable, its pool exhausted), the cache stops serving
once its last good poll is older than ``stale_after`` (four intervals, at least a second) and
serves again after the next one; and no entry outlives its TTL. Either bounds a missed
invalidation, whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from cachetools import TTLCache
from sqlalchemy import delete, event, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.store.models import CacheInvalidation, CacheInvalidationHead

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from crmgate.store.accounts import Principal
    from crmgate.store.applications import ApplicationView, Credentials
    from crmgate.store.db import SessionFactory

log = logging.getLogger("crmgate.cache")

POLL_BATCH = 1000  # rows read per query; a fuller backlog is read in further queries
KEEP = 10_000  # invalidations kept in the table; older ones are pruned by the writers
PRUNE_EVERY = 1000  # a writer prunes when its number is a multiple of this
_WARN_EVERY = 60.0  # seconds between two warnings about a failing poll
_PENDING = "crmgate_cache_forget"  # session.info key: subjects to drop at commit


def user_subject(user_id: str) -> str:
    """A user's keys (all of them: their principals carry the user's role and status)."""
    return f"user:{user_id}"


def application_subject(organisation_id: str, key: str) -> str:
    return f"application:{organisation_id}|{key}"


class WarmCache:
    def __init__(
        self,
        sessions: SessionFactory | None,
        ttl: float = 5.0,
        size: int = 10_000,
        poll_interval: float = 0.25,
    ) -> None:
        self._sessions = sessions
        self.ttl = ttl
        self.size = size
        self.poll_interval = poll_interval
        self.enabled = sessions is not None and ttl > 0 and size > 0
        bound = max(size, 1)
        self._principals: TTLCache[bytes, Principal] = TTLCache(bound, max(ttl, 0.001))
        self._applications: TTLCache[tuple[str, str], tuple[ApplicationView, Credentials]] = (
            TTLCache(bound, max(ttl, 0.001))
        )
        self._generation = 0
        self._cursor: int | None = None  # the last invalidation seen; None: not polled yet
        self.stale_after = max(1.0, 4 * poll_interval)  # seconds: no good poll, no serving
        self._polled_at = 0.0  # monotonic time the last good poll began
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None  # set by close(): the poll loop ends
        self._last_warning = 0.0
        self.hits = 0
        self.misses = 0

    @classmethod
    def off(cls, sessions: SessionFactory | None = None) -> WarmCache:
        """No cache in this process; ``invalidate`` still tells the others."""
        return cls(sessions, ttl=0)

    def __repr__(self) -> str:
        # counts only: entries hold principals and decrypted credentials
        return (
            f"WarmCache(ttl={self.ttl}, size={self.size}, enabled={self.enabled}, "
            f"principals={len(self._principals)}, applications={len(self._applications)}, "
            f"hits={self.hits}, misses={self.misses}, cursor={self._cursor})"
        )

    # ---- reads ----------------------------------------------------------------------------------

    def ticket(self) -> int:
        """Taken before a database read whose result is to be stored: see ``_storable``."""
        return self._generation

    def _ready(self) -> bool:
        if not self.enabled:
            return False
        if self._task is None:
            # a context of its own: not that of the request that happened to start it
            self._stop = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )
        return self._cursor is not None and time.monotonic() - self._polled_at <= self.stale_after

    def _storable(self, ticket: int) -> bool:
        # Nothing dropped since the read began (else it may have read what was just changed),
        # and the log's position known (else a change committed before it could be missed).
        return self._ready() and ticket == self._generation

    def principal(self, digest: bytes) -> Principal | None:
        if not self._ready():
            return None
        found = self._principals.get(digest)
        self._count(found is not None)
        return found

    def keep_principal(self, digest: bytes, principal: Principal, ticket: int) -> None:
        if self._storable(ticket):
            self._principals[digest] = principal

    def application(
        self, organisation_id: str, key: str
    ) -> tuple[ApplicationView, Credentials] | None:
        if not self._ready():
            return None
        found = self._applications.get((organisation_id, key))
        self._count(found is not None)
        return found

    def keep_application(self, entry: tuple[ApplicationView, Credentials], ticket: int) -> None:
        if self._storable(ticket):
            view = entry[0]
            self._applications[(view.organisation_id, view.key)] = entry

    def _count(self, hit: bool) -> None:
        if hit:
            self.hits += 1
        else:
            self.misses += 1

    # ---- invalidation ---------------------------------------------------------------------------

    async def invalidate(self, session: AsyncSession, *subjects: str) -> None:
        """Within a write transaction: tell every process (this one when it commits) to drop
        ``subjects``. Written even when this process caches nothing: others may."""
        if not subjects:
            return
        last = await session.scalar(
            update(CacheInvalidationHead)
            .where(CacheInvalidationHead.id == 1)
            .values(seq=CacheInvalidationHead.seq + len(subjects))
            .returning(CacheInvalidationHead.seq)
        )
        if last is None:  # the head row is made by migration 0008; never deleted
            raise RuntimeError("cache_invalidation_head has no row: run `crmgate migrate`")
        first = last - len(subjects) + 1
        await session.execute(
            insert(CacheInvalidation),
            [{"seq": first + n, "subject": subject} for n, subject in enumerate(subjects)],
        )
        if last // PRUNE_EVERY > (first - 1) // PRUNE_EVERY:
            await session.execute(
                delete(CacheInvalidation).where(CacheInvalidation.seq <= last - KEEP)
            )
        pending: list[str] | None = session.info.get(_PENDING)
        if pending is None:
            pending = session.info[_PENDING] = []
            event.listen(session.sync_session, "after_commit", self._committed, once=True)
            event.listen(session.sync_session, "after_rollback", _discard, once=True)
        pending.extend(subjects)

    def _committed(self, session: Session) -> None:
        self.forget(session.info.pop(_PENDING, ()))

    def forget(self, subjects: Iterable[str]) -> None:
        """Drop the subjects from this process's cache, now."""
        self._generation += 1
        users: set[str] = set()
        for subject in subjects:
            kind, _, rest = subject.partition(":")
            if kind == "user":
                users.add(rest)
            elif kind == "application":
                organisation_id, _, key = rest.partition("|")
                self._applications.pop((organisation_id, key), None)
        if users:
            # a scan, on a rare event (a key or user change), instead of an index kept per hit
            for digest in [d for d, p in self._principals.items() if p.user_id in users]:
                self._principals.pop(digest, None)

    def clear(self) -> None:
        self._generation += 1
        self._principals.clear()
        self._applications.clear()

    # ---- the poll -------------------------------------------------------------------------------

    async def poll(self) -> int:
        """Apply the invalidations committed since the last poll; how many there were."""
        began = time.monotonic()  # what committed before this is seen by the poll
        seen = await self._poll()
        self._polled_at = began
        return seen

    async def _poll(self) -> int:
        assert self._sessions is not None
        seen = 0
        async with self._sessions() as session:
            cursor = self._cursor
            if cursor is None:
                # where the log stands now: what is cached from here on is read after it
                head = await session.scalar(
                    select(CacheInvalidationHead.seq).where(CacheInvalidationHead.id == 1)
                )
                self._cursor = int(head or 0)
                return 0
            while True:
                rows = (
                    await session.execute(
                        select(CacheInvalidation.seq, CacheInvalidation.subject)
                        .where(CacheInvalidation.seq > cursor)
                        .order_by(CacheInvalidation.seq)
                        .limit(POLL_BATCH)
                    )
                ).all()
                if not rows:
                    return seen
                if rows[0].seq != cursor + 1:
                    log.warning(
                        "cache invalidations were pruned before this process read them: "
                        "its cache is emptied"
                    )
                    self.clear()
                else:
                    self.forget(row.subject for row in rows)
                cursor = self._cursor = int(rows[-1].seq)
                seen += len(rows)
                if len(rows) < POLL_BATCH:
                    return seen

    async def _run(self) -> None:
        assert self._stop is not None
        while not self._stop.is_set():
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as failure:  # the database is away: entries still end at their TTL
                now = time.monotonic()
                if now - self._last_warning >= _WARN_EVERY:
                    self._last_warning = now
                    log.warning("cache invalidation poll failed: %s", type(failure).__name__)
            # expired entries are dropped here too, not only when another is stored: decrypted
            # credentials leave memory within a poll interval of their TTL
            self._principals.expire()
            self._applications.expire()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.poll_interval)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and self._stop is not None:
            # the loop ends after the poll in flight, if any: a query cancelled mid-way would
            # answer after the event loop is gone
            self._stop.set()
            try:
                await asyncio.wait_for(task, 2)
            except TimeoutError:  # a poll that hangs: wait_for has cancelled it
                log.warning("cache invalidation poll did not end at shutdown")
        self._cursor = None
        self.clear()


def _discard(session: Session) -> None:
    session.info.pop(_PENDING, None)
