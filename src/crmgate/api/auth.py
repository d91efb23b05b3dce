"""Authentication of the X-API2CRM-USER-KEY header, and the role checks built on it.

Every way a key can be wrong (missing, malformed, mistyped, unknown, revoked, its user disabled)
gets the same 401 SERVICE_UNAUTHORIZED, so an attacker learns nothing from the answer. A key whose
shape or checksum is wrong is refused without a database lookup.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import Depends, Header, Request

from crmgate.api.errors import ApiError, unauthorized
from crmgate.security import keys
from crmgate.store.accounts import AccountStore, Principal
from crmgate.store.models import utcnow
from crmgate.store.usage import UsageRecorder

USER_KEY_HEADER = "X-API2CRM-USER-KEY"
log = logging.getLogger("crmgate.auth")


class Authenticator:
    def __init__(self, store: AccountStore, last_used_resolution: float) -> None:
        self._store = store
        self._resolution = last_used_resolution
        self._touched: dict[str, float] = {}  # key id -> monotonic time of the last write

    async def authenticate(self, key: str | None) -> Principal:
        if not key:
            raise unauthorized("the X-API2CRM-USER-KEY header is missing")
        if not keys.is_well_formed(key):
            log.info("authentication failed: malformed key")
            raise unauthorized()
        principal = await self._store.authenticate(key)
        if principal is None:
            log.info("authentication failed: unknown or revoked key %s", keys.hint(key))
            raise unauthorized()
        await self._touch(principal)
        return principal

    async def _touch(self, principal: Principal) -> None:
        now = time.monotonic()
        last_write = self._touched.get(principal.key_id)
        if last_write is not None and now - last_write < self._resolution:
            return
        stored = principal.key_last_used_at
        if stored is not None and (utcnow() - stored).total_seconds() < self._resolution:
            self._touched[principal.key_id] = now
            return
        self._touched[principal.key_id] = now
        if len(self._touched) > 100_000:
            self._touched.clear()
        await self._store.touch_key(principal.key_id, utcnow())


async def current_principal(
    request: Request,
    user_key: Annotated[
        str | None,
        Header(alias=USER_KEY_HEADER, description="User Key", include_in_schema=True),
    ] = None,
) -> Principal:
    services = request.app.state.services
    principal: Principal = await services.authenticator.authenticate(user_key)
    request.state.principal = principal
    usage: UsageRecorder = services.usage
    usage.record(principal.user_id, internal=True)
    return principal


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "NOT_ALLOWED", "this operation needs the admin role")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
