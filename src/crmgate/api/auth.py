"""FastAPI dependencies: the caller's principal from X-API2CRM-USER-KEY, its rate limits (and
those of the application it reaches), and role checks."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import Depends, Header, Request

from crmgate.api.clients import throttle_bucket
from crmgate.api.errors import ApiError, unauthorized
from crmgate.limits import STATE_KEY, RateLimits, Verdict
from crmgate.security.authn import AuthenticationFailed
from crmgate.store.accounts import AccountError, Principal

USER_KEY_HEADER = "X-API2CRM-USER-KEY"
APPLICATION_KEY_HEADER = "X-API2CRM-APPLICATION-KEY"


UserKey = Annotated[str | None, Header(alias=USER_KEY_HEADER, description="User Key")]


def client_address(request: Request) -> str | None:
    """The client's address, as the request middleware found it (api/clients.py)."""
    address = getattr(request.state, "client_address", None)
    return address if isinstance(address, str) else None


def _too_many(request: Request, verdict: Verdict, message: str) -> ApiError:
    # RateLimitHeaders (limits.py) adds the RateLimit fields of this verdict to the answer.
    setattr(request.state, STATE_KEY, verdict)
    retry_after = verdict.retry_after(time.time())
    return ApiError(
        429,
        "RATE_LIMITED",
        f"{message}; retry in {retry_after} seconds",
        headers={"Retry-After": str(retry_after)},
    )


async def _authenticate(request: Request, user_key: str | None, *, internal: bool) -> Principal:
    services = request.app.state.services
    limits: RateLimits = services.limits
    address = throttle_bucket(client_address(request))
    # A flood of wrong keys from one address is refused before any key is looked at, the right
    # one included: guessing ends in 429, never in a found key (OWASP API2:2023).
    throttled = await limits.address_throttled(address)
    if throttled is not None:
        await services.audit.record(
            "limit.exceeded", details={"limit": "failed authentications of this address"}
        )
        raise _too_many(request, throttled, "too many failed authentications from this address")
    try:
        principal: Principal = await services.authenticator.authenticate(user_key)
    except AuthenticationFailed as failure:
        if user_key:  # a missing header is no guess
            await limits.authentication_failed(address)
        raise unauthorized(str(failure)) from None
    request.state.principal = principal
    application_key = None if internal else request.headers.get(APPLICATION_KEY_HEADER)
    if application_key and not await _exists(services, principal, application_key):
        # counted only once it is one of the organisation's applications: made-up keys would
        # each open counters of their own (memory, or Redis, for a month); the route answers
        # 404 for it anyway
        application_key = None
    verdict = await limits.hit_request(principal.organisation_id, principal.key_id, application_key)
    if not verdict.allowed:
        await services.audit.record(
            "limit.exceeded",
            organisation_id=principal.organisation_id,
            details={"limit": verdict.refusal()},
        )
        raise _too_many(request, verdict, f"{verdict.refusal()} is exceeded")
    setattr(request.state, STATE_KEY, verdict)
    services.usage.record(principal.user_id, internal=internal)
    return principal


async def _exists(services: Any, principal: Principal, application_key: str) -> bool:
    try:
        await services.applications.store.get(principal.organisation_id, application_key)
    except AccountError:
        return False
    return True


async def current_principal(request: Request, user_key: UserKey = None) -> Principal:
    """The caller of a gateway route (users, platforms, applications)."""
    return await _authenticate(request, user_key, internal=True)


async def crm_principal(request: Request, user_key: UserKey = None) -> Principal:
    """The caller of a route that reaches a CRM (counted as an external request)."""
    return await _authenticate(request, user_key, internal=False)


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "NOT_ALLOWED", "this operation needs the admin role")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
CrmUser = Annotated[Principal, Depends(crm_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
