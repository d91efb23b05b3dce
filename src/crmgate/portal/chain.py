"""The audit chain's verification state for the Audit trail page: ``AuditLog.verify`` (what
``crmgate audit verify`` runs) walks every event of every organisation, so a page does not run it
on each view. A result is kept for ``max_age`` seconds; an older one starts one check in the
background (never two at once), which the page waits for a moment: a short chain answers at
once, a long one finishes in the background and the page shows the last result meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from crmgate.audit import AuditKeyError, AuditLog, Verification

log = logging.getLogger("crmgate.portal")


@dataclass(frozen=True, slots=True)
class ChainState:
    """What the page says: the chain is intact, broken (at which event) or could not be
    checked; when; and whether a newer check is still running."""

    verification: Verification | None  # None: it could not be checked (the audit key file)
    checked_at: float  # epoch seconds
    running: bool = False

    @property
    def checked(self) -> str:
        return datetime.fromtimestamp(self.checked_at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    @property
    def intact(self) -> bool:
        return self.verification is not None and self.verification.intact


class ChainCheck:
    def __init__(self, max_age: float = 300.0, wait: float = 2.0) -> None:
        self.max_age = max_age
        self.wait = wait
        self._last: ChainState | None = None
        self._task: asyncio.Task[ChainState] | None = None

    async def state(self, audit: AuditLog) -> ChainState | None:
        """The newest result; None when the first check is still running."""
        last = self._last
        if last is not None and time.time() - last.checked_at < self.max_age:
            return last
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._check(audit))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._task), self.wait)
        if self._last is not last:
            return self._last
        return ChainState(last.verification, last.checked_at, running=True) if last else None

    async def _check(self, audit: AuditLog) -> ChainState:
        try:
            verification: Verification | None = await audit.verify()
        except AuditKeyError:
            verification = None
        except SQLAlchemyError:
            log.exception("audit: the portal could not verify the chain")
            verification = None
        finally:
            self._task = None
        self._last = ChainState(verification, time.time())
        return self._last
