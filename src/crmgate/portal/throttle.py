"""Failed portal sign-ins, counted per account and per client address (OWASP Authentication
Cheat Sheet, "login throttling"): beyond either limit every sign-in is refused, a right password
included, until the window frees. The counters live where the API's rate limits live (memory,
or Redis shared by every gateway process)."""

from __future__ import annotations

import hashlib
import time

from crmgate.limits import Counter, RateLimits, parse_limits
from crmgate.portal.logins import normal_email


class SignInThrottle:
    def __init__(self, limits: RateLimits, per_account: str, per_address: str) -> None:
        self._limits = limits
        self._account = parse_limits(per_account)
        self._address = parse_limits(per_address)

    def _counters(self, email: str, address: str | None) -> list[Counter]:
        # the account is named by a digest: the counter store needs no e-mail address
        account = hashlib.sha256(normal_email(email).encode()).hexdigest()[:32]
        counters = [Counter("portal account", self._account, ("portal-account", account))]
        if address:
            counters.append(Counter("portal address", self._address, ("portal-address", address)))
        return counters

    async def retry_after(self, email: str, address: str | None) -> int | None:
        """Seconds until a sign-in is let through again, or None when it may be tried now."""
        verdict = await self._limits.over(self._counters(email, address))
        return None if verdict is None else max(1, verdict.retry_after(time.time()))

    async def failed(self, email: str, address: str | None) -> None:
        await self._limits.count(self._counters(email, address))
