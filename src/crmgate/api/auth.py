"""FastAPI dependencies: the caller's principal from X-API2CRM-USER-KEY, and role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from crmgate.api.errors import ApiError, unauthorized
from crmgate.security.authn import AuthenticationFailed
from crmgate.store.accounts import Principal

USER_KEY_HEADER = "X-API2CRM-USER-KEY"


UserKey = Annotated[str | None, Header(alias=USER_KEY_HEADER, description="User Key")]


async def _authenticate(request: Request, user_key: str | None, *, internal: bool) -> Principal:
    services = request.app.state.services
    try:
        principal: Principal = await services.authenticator.authenticate(user_key)
    except AuthenticationFailed as failure:
        raise unauthorized(str(failure)) from None
    request.state.principal = principal
    services.usage.record(principal.user_id, internal=internal)
    return principal


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
