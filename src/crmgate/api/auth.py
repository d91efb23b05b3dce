"""FastAPI dependencies: the caller's principal from X-API2CRM-USER-KEY, and role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from crmgate.api.errors import ApiError, unauthorized
from crmgate.security.authn import AuthenticationFailed
from crmgate.store.accounts import Principal

USER_KEY_HEADER = "X-API2CRM-USER-KEY"


async def current_principal(
    request: Request,
    user_key: Annotated[str | None, Header(alias=USER_KEY_HEADER, description="User Key")] = None,
) -> Principal:
    services = request.app.state.services
    try:
        principal: Principal = await services.authenticator.authenticate(user_key)
    except AuthenticationFailed as failure:
        raise unauthorized(str(failure)) from None
    request.state.principal = principal
    services.usage.record(principal.user_id, internal=True)
    return principal


async def admin_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    if not principal.is_admin:
        raise ApiError(403, "NOT_ALLOWED", "this operation needs the admin role")
    return principal


CurrentUser = Annotated[Principal, Depends(current_principal)]
AdminUser = Annotated[Principal, Depends(admin_principal)]
