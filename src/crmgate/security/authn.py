"""Authentication: from the X-API2CRM-USER-KEY value to the principal behind it.

Every way a key can be wrong (missing, malformed, mistyped, unknown, revoked, its user disabled)
ends in the same AuthenticationFailed, so the caller learns nothing from the answer. A key whose
shape or checksum is wrong is refused without a database lookup.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from crmgate.security import keys
from crmgate.store.accounts import AccountStore, Principal
from crmgate.store.models import utcnow

if TYPE_CHECKING:
    from crmgate.audit import AuditLog

log = logging.getLogger("crmgate.auth")


class AuthenticationFailed(Exception):
    """The message is safe to show the caller: it never says whether a key exists."""


class Authenticator:
    def __init__(
        self, store: AccountStore, last_used_resolution: float, audit: AuditLog | None = None
    ) -> None:
        self._store = store
        self._audit = audit
        self._resolution = last_used_resolution
        self._touched: dict[str, float] = {}  # key id -> monotonic time of our last write

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            await self._failed("missing")
            raise AuthenticationFailed("the X-API2CRM-USER-KEY header is missing")
        if not keys.is_well_formed_any(key):
            log.info("authentication failed: malformed key")
            await self._failed("malformed")  # nothing of it is kept: it may be another secret
            raise AuthenticationFailed("a valid X-API2CRM-USER-KEY header is required")
        principal = await self._store.authenticate(key)
        if principal is None:
            log.info("authentication failed: unknown or revoked key %s", keys.hint(key))
            await self._failed("unknown or revoked", keys.hint(key))
            raise AuthenticationFailed("a valid X-API2CRM-USER-KEY header is required")
        if principal.scope is not None and principal.scope.expired(utcnow()):
            # only a key that was once valid gets here: saying so helps its owner, not a guesser
            log.info("authentication failed: expired key %s", keys.hint(key))
            await self._failed("expired", keys.hint(key))
            raise AuthenticationFailed("this X-API2CRM-USER-KEY has expired")
        await self._touch(principal)
        return principal

    async def _failed(self, reason: str, hint: str | None = None) -> None:
        if self._audit is not None:
            await self._audit.record("auth.failed", details={"reason": reason, "key": hint})

    async def _touch(self, principal: Principal) -> None:
        """Record last_used_at, at most once per key per resolution period."""
        now = time.monotonic()
        last_write = self._touched.get(principal.key_id)
        if last_write is not None and now - last_write < self._resolution:
            return
        self._touched[principal.key_id] = now
        if len(self._touched) > 100_000:
            self._touched.clear()
        stored = principal.key_last_used_at
        if stored is not None and (utcnow() - stored).total_seconds() < self._resolution:
            return  # another process wrote it recently
        await self._store.touch_key(principal.key_id, utcnow())
