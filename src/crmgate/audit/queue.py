"""Noisy events, which an attacker can cause at will: folded per client, capped, flushed.

Events an attacker can cause at will (``NOISY``: failed authentications, limits hit) never
touch the database on the request path: they are folded per client (one row opens a window,
one row at its end counts the events folded into it), queued in memory under a global cap per
window (beyond it one ``audit.dropped`` event counts what was dropped), and written in one
transaction every ``audit_flush_interval`` seconds and at shutdown. A batch whose write fails
goes back to the queue, whatever the failure; a failed commit that may have succeeded is looked
up (the last event's seq and hash) before the batch is written again, so it is never written
twice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from crmgate.audit.chain import AUDIT_DROPPED, Detail, _clean, _Draft
from crmgate.audit.keys import AuditKeyError
from crmgate.store.db import SessionFactory
from crmgate.store.models import AuditEvent, utcnow

log = logging.getLogger("crmgate.audit")

CAP_WINDOW = 60.0  # seconds: the global cap on noisy events counts per this window
FOLD_CLIENTS = 10_000  # clients whose noisy events are being folded, at most (least recent out)


@dataclass(slots=True)
class _Fold:
    """One client's window of a noisy event: the row that opened it, and what was folded."""

    started: float  # monotonic time of the row that opened the window
    folded: int = 0  # events folded into it since
    last: _Draft | None = None  # the newest of them: what the window's closing row shows


@dataclass(frozen=True, slots=True)
class _Unsure:
    """A batch whose commit failed after it was chained: it may have been written after all.
    Its last event's number and hash tell (the hash covers the seq and the creation time)."""

    drafts: list[_Draft]
    seq: int
    hash: str


class NoisyQueue:
    """AuditLog's part that folds, caps, queues and flushes noisy events (its state is set in
    ``AuditLog.__init__``)."""

    _sessions: SessionFactory
    _repeat_window: float
    _flush_interval: float
    _cap: int
    _cap_window: float
    _fold_clients: int
    _recent: OrderedDict[tuple[str, str | None, str | None], _Fold]
    _queue: list[_Draft]
    _unsure: _Unsure | None
    _window_start: float
    _window_count: int
    _dropped: Counter[str]
    _timer: asyncio.Task[None] | None
    _writing: asyncio.Lock | None
    _closed: bool

    if TYPE_CHECKING:  # AuditLog's and the chain's

        def _start(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]: ...

        async def _append(
            self, session: AsyncSession, drafts: Sequence[_Draft]
        ) -> list[tuple[int, str]]: ...

    def _enqueue(self, draft: _Draft) -> None:
        """Fold ``draft`` into its client's window, or open a window with it (queued)."""
        key = (draft.event, draft.client, draft.organisation_id)
        now = time.monotonic()
        fold = self._recent.get(key)
        if fold is not None and now - fold.started < self._repeat_window:
            fold.folded, fold.last = fold.folded + 1, draft
            self._recent.move_to_end(key)
            # the window's closing row is due when it ends, even if nothing else comes
            self._schedule(max(self._flush_interval, fold.started + self._repeat_window - now))
            return
        if fold is not None:  # its window ended before the flush closed it
            self._close_fold(fold)
        self._recent[key] = _Fold(now)
        self._recent.move_to_end(key)
        while len(self._recent) > self._fold_clients:  # a hard bound: rotating addresses
            self._close_fold(self._recent.popitem(last=False)[1])
        self._admit(draft)
        self._schedule(self._flush_interval)

    def _close_fold(self, fold: _Fold) -> None:
        """The row that ends a window: the newest folded event, ``repeated`` counting all."""
        if fold.folded and fold.last is not None:
            details = {**fold.last.details, "repeated": fold.folded}
            self._admit(dataclasses.replace(fold.last, details=details))
            fold.folded, fold.last = 0, None

    def _sweep(self, now: float, *, closing: bool = False) -> None:
        """Close the windows that ended (all of them at shutdown)."""
        for key, fold in list(self._recent.items()):
            if closing or now - fold.started >= self._repeat_window:
                self._close_fold(fold)
                del self._recent[key]

    def _admit(self, draft: _Draft) -> None:
        """Queue ``draft`` within the cap of the window; beyond it, count it as dropped."""
        self._roll_window(time.monotonic())
        if self._window_count >= self._cap:
            self._dropped[draft.event] += 1
        else:
            self._window_count += 1
            self._queue.append(draft)

    def _roll_window(self, now: float, *, closing: bool = False) -> None:
        """At the end of a cap window (or at shutdown), one event counting what it dropped."""
        if not closing and now - self._window_start < self._cap_window:
            return
        if self._dropped:
            counts: dict[str, Detail] = dict(self._dropped)
            # not self._draft: whatever request is being served now, this is none of its events
            self._queue.append(
                _Draft(
                    created_at=utcnow(),
                    event=AUDIT_DROPPED,
                    organisation_id=None,
                    actor="system",
                    client=None,
                    request_id=None,
                    target=None,
                    details=_clean(
                        {
                            "dropped": sum(self._dropped.values()),
                            "cap": self._cap,
                            "window_seconds": int(self._cap_window),
                            **counts,
                        }
                    ),
                )
            )
        self._window_start, self._window_count, self._dropped = now, 0, Counter()

    def _schedule(self, delay: float) -> None:
        # A context of its own: created inside a request, the task would otherwise carry that
        # request's client and id into the events it drafts (audit.dropped).
        if self._timer is None and not self._closed:
            self._timer = self._start(self._flush_after(delay))

    async def _flush_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._timer = None  # from here on, new events schedule the next flush
        try:
            written = await self.flush()
        except Exception:  # keep queueing whatever happened to one batch
            log.exception("audit: flush failed")
            written = False
        now = time.monotonic()
        due = [self._flush_interval] if not written or self._queue else []
        open_windows = [f.started for f in self._recent.values() if f.folded]
        if open_windows:
            due.append(min(open_windows) + self._repeat_window - now)
        if self._dropped:  # the window's summary is due when it ends
            due.append(self._window_start + self._cap_window - now)
        if due:
            self._schedule(max(self._flush_interval, min(due)))

    async def flush(self, *, closing: bool = False) -> bool:
        """Write the queued events in one transaction; False when that failed (they stay
        queued, within twice the cap: beyond it they are counted as dropped). On any other
        failure (a cancellation at shutdown, a bug) they stay queued too, and it is raised."""
        if self._writing is None:
            self._writing = asyncio.Lock()
        async with self._writing:
            now = time.monotonic()
            self._sweep(now, closing=closing)
            self._roll_window(now, closing=closing)
            try:
                await self._settle_unsure()
            except (SQLAlchemyError, OSError):
                log.warning("audit: could not check the last failed write", exc_info=True)
                return False
            if not self._queue:
                return True
            batch, self._queue = self._queue, []
            chained: list[tuple[int, str]] = []
            try:
                async with self._sessions.begin() as session:
                    chained = await self._append(session, batch)
            except BaseException as error:
                self._queue = batch + self._queue
                if chained:  # the commit failed: it may have been written all the same
                    self._unsure = _Unsure(batch, *chained[-1])
                if not isinstance(error, SQLAlchemyError | AuditKeyError | OSError):
                    raise
                log.warning("audit: could not write %d queued events", len(batch), exc_info=True)
                kept = self._queue[: max(self._cap, 1) * 2]
                for lost in self._queue[len(kept) :]:
                    self._dropped[lost.event] += 1
                self._queue = kept
                return False
            return True

    async def _settle_unsure(self) -> None:
        """After a commit that failed once chained: if its last event is there, with the hash
        that batch gave it, it was written, and it leaves the queue."""
        unsure = self._unsure
        if unsure is None:
            return
        async with self._sessions() as session:
            stored = await session.scalar(
                select(AuditEvent.hash).where(AuditEvent.seq == unsure.seq)
            )
        self._unsure = None
        if stored == unsure.hash:
            written = {id(draft) for draft in unsure.drafts}
            self._queue = [draft for draft in self._queue if id(draft) not in written]
            log.warning(
                "audit: the %d events of a failed commit were written after all", len(written)
            )
