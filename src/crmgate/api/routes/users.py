"""/v1/user: the members of the caller's organisation (InternalUserEntity).

Admins manage every member; a member sees and edits only their own record (name, e-mail, phone)
and may rotate only their own key. Another organisation's users are never visible: 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request, Response

from crmgate.api.auth import UserCreator, UserDeleter, UserKeyRotator, UserReader, UserUpdater
from crmgate.api.errors import ApiError
from crmgate.api.params import (
    Fields,
    Filter,
    ListQuery,
    RequestsFrom,
    RequestsUntil,
    field_selector,
)
from crmgate.api.responses import JSONResponse, contract_response
from crmgate.api.schemas import (
    Count,
    Error,
    InternalUserCreate,
    InternalUserEntity,
    InternalUserEntityRelation,
    InternalUserUpdate,
)
from crmgate.query import Condition, parse_filter
from crmgate.store.accounts import AccountStore, Principal, UserView, day_range

ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Error, "description": description}
    for status, description in (
        (400, "Client Error"),
        (401, "Unauthorized"),
        (403, "Forbidden"),
        (404, "Not Found"),
        (422, "Unprocessable Entity"),
        (429, "Too Many Requests (a rate limit; see Retry-After)"),
    )
}

router = APIRouter(prefix="/v1/user", tags=["internalUser"], responses=ERRORS)
UserId = Annotated[str, Path(description="Internal User Key (the user's id)")]


def _store(request: Request) -> AccountStore:
    store: AccountStore = request.app.state.services.accounts
    return store


def _render(view: UserView) -> dict[str, Any]:
    return InternalUserEntity.of(view).model_dump(mode="json")


def _self_only(principal: Principal) -> tuple[Condition, ...]:
    return () if principal.is_admin else (Condition("key", "eq", principal.user_id),)


def _visible(principal: Principal, user_id: str) -> None:
    if not principal.is_admin and user_id != principal.user_id:
        raise ApiError(404, "ENTITY_NOT_FOUND", f"user {user_id} not found")


@router.post(
    "",
    status_code=201,
    response_model=InternalUserEntityRelation,
    operation_id="createInternalUserEntity",
    summary="POST for internalUser",
)
async def create_user(
    request: Request,
    principal: UserCreator,
    body: Annotated[InternalUserCreate, Body()],
) -> Response:
    """Add a member to the caller's organisation (admins only). The response holds the new
    user's key; it is never shown again."""
    role = body.changes().get("role")
    view, key = await _store(request).create_user(
        principal.organisation_id,
        name=body.name,
        email=str(body.email),
        phone=body.phone,
        status=body.status,
        **({"role": role} if role else {}),
    )
    return contract_response(
        "createInternalUserEntity",
        InternalUserEntityRelation(key=view.id, user_key=key.secret).model_dump(),
        201,
    )


@router.get(
    "/list",
    response_model=list[InternalUserEntity],
    operation_id="getInternalUserCollection",
    summary="GET for internalUser",
)
async def list_users(
    request: Request,
    principal: UserReader,
    query: Annotated[ListQuery, Depends()],
    application_request_start: RequestsFrom = None,
    application_request_end: RequestsUntil = None,
) -> Response:
    """Returns all internal users from the system: the caller's organisation (admins) or the
    caller alone (members). A page past the end is an empty list."""
    start, end = day_range(application_request_start, application_request_end)
    trim = query.selector(InternalUserEntity)
    views = await _store(request).list_users(
        principal.organisation_id,
        conditions=query.conditions + _self_only(principal),
        sort=query.sort,
        page=query.page,
        page_size=query.page_size,
        usage_from=start,
        usage_to=end,
    )
    return contract_response("getInternalUserCollection", [trim(_render(view)) for view in views])


@router.get(
    "/count",
    response_model=Count,
    operation_id="getInternalUserCountCollection",
    summary="COUNT for internalUser",
)
async def count_users(
    request: Request,
    principal: UserReader,
    filter: Filter = None,
) -> Response:
    """Count all internal users from the system."""
    total = await _store(request).count_users(
        principal.organisation_id, parse_filter(filter) + _self_only(principal)
    )
    return contract_response("getInternalUserCountCollection", {"total": total})


@router.get(
    "/{internal_user_id}",
    response_model=InternalUserEntity,
    operation_id="getInternalUserEntity",
    summary="GET for internalUser",
)
async def get_user(
    request: Request,
    principal: UserReader,
    internal_user_id: UserId,
    fields: Fields = None,
    application_request_start: RequestsFrom = None,
    application_request_end: RequestsUntil = None,
) -> Response:
    """Return internal user information."""
    _visible(principal, internal_user_id)
    start, end = day_range(application_request_start, application_request_end)
    trim = field_selector(InternalUserEntity, fields)
    view = await _store(request).get_user(principal.organisation_id, internal_user_id, start, end)
    return contract_response("getInternalUserEntity", trim(_render(view)))


@router.put(
    "/{internal_user_id}",
    response_model=InternalUserEntityRelation,
    operation_id="updateInternalUserEntity",
    summary="PUT for internalUser",
)
async def update_user(
    request: Request,
    principal: UserUpdater,
    internal_user_id: UserId,
    body: Annotated[InternalUserUpdate, Body()],
) -> Response:
    """Change a user's name, e-mail, phone, role or status. Members may change only their own
    name, e-mail and phone."""
    _visible(principal, internal_user_id)
    changes = body.changes()
    if {"role", "status"} & changes.keys():
        if not principal.is_admin:
            raise ApiError(403, "NOT_ALLOWED", "only admins change roles and status")
        if principal.scope is not None:  # it would grant what the key lacks
            raise ApiError(403, "NOT_ALLOWED", "roles and status change with a full user key only")
    view = await _store(request).update_user(principal.organisation_id, internal_user_id, changes)
    return contract_response("updateInternalUserEntity", {"key": view.id})


@router.delete(
    "/{internal_user_id}",
    status_code=204,
    response_class=Response,
    operation_id="deleteInternalUserEntity",
    summary="DELETE for internalUser",
)
async def delete_user(
    request: Request, principal: UserDeleter, internal_user_id: UserId
) -> Response:
    """Remove a user and all their keys (admins only; the last active admin stays)."""
    await _store(request).delete_user(principal.organisation_id, internal_user_id)
    return Response(status_code=204)


@router.post(
    "/{internal_user_id}/key",
    status_code=201,
    response_model=InternalUserEntityRelation,
    operation_id="rotateInternalUserKey",
    summary="Rotate a user's key (crmgate extension)",
    tags=["crmgate"],
)
async def rotate_key(
    request: Request, principal: UserKeyRotator, internal_user_id: UserId
) -> JSONResponse:
    """Revoke the user's current key and issue a new one, shown only in this response. Admins may
    rotate any member's key; members only their own."""
    _visible(principal, internal_user_id)
    key = await _store(request).rotate_key(internal_user_id, principal.organisation_id)
    return JSONResponse(
        InternalUserEntityRelation(key=internal_user_id, user_key=key.secret).model_dump(),
        status_code=201,
    )
