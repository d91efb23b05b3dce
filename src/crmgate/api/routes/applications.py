"""/v1/application: the organisation's connected CRMs. Admins connect, change and remove them;
every member may read them. Another organisation's application is never visible: 404. A
restricted key lists, counts and reads only its own applications (security/scopes.py): another
one by key is 403 NOT_ALLOWED, as on every route, whether it exists or not."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Request, Response

from crmgate.api.auth import (
    ApplicationCreator,
    ApplicationDeleter,
    ApplicationReader,
    ApplicationsReader,
    ApplicationUpdater,
)
from crmgate.api.params import Fields, Filter, ListQuery, field_selector
from crmgate.api.responses import contract_response
from crmgate.api.routes.users import ERRORS
from crmgate.api.schemas import (
    ApplicationEntity,
    ApplicationEntityList,
    ApplicationEntityRelation,
    ApplicationEntityUpdate,
    ApplicationEntityWrite,
    Count,
    application_fields,
)
from crmgate.applications import ApplicationService
from crmgate.limits import RateLimits, requests_limit
from crmgate.query import parse_filter
from crmgate.security.scopes import visible_applications
from crmgate.store.applications import ApplicationView

router = APIRouter(prefix="/v1/application", tags=["application"], responses=ERRORS)
ApplicationKey = Annotated[str, Path(description="Application key")]


def _service(request: Request) -> ApplicationService:
    service: ApplicationService = request.app.state.services.applications
    return service


async def _requests_limit(request: Request, view: ApplicationView) -> dict[str, Any]:
    """The live state of the application's rate limits (the contract's RequestsLimit)."""
    limits: RateLimits = request.app.state.services.limits
    return requests_limit(await limits.application_windows(view.organisation_id, view.key))


def _list_item(view: ApplicationView, limit: dict[str, Any]) -> dict[str, Any]:
    item = ApplicationEntityList.model_validate(
        {**application_fields(view), "requests_limit": limit}
    )
    return item.model_dump(mode="json")


def _entity(view: ApplicationView, limit: dict[str, Any]) -> dict[str, Any]:
    entity = ApplicationEntity.model_validate(
        {
            **application_fields(view),
            "me": view.identity.get("me"),
            "plan": None,
            "requests_limit": limit,
        }
    )
    return entity.model_dump(mode="json")


@router.post(
    "",
    status_code=201,
    response_model=ApplicationEntityRelation,
    operation_id="createApplicationEntity",
    summary="POST for application",
)
async def create_application(
    request: Request, principal: ApplicationCreator, body: Annotated[ApplicationEntityWrite, Body()]
) -> Response:
    """Add application into the system: crmgate checks the credentials with the CRM first and
    stores nothing if the CRM refuses them (401 UNAUTHORIZED with the CRM's reason)."""
    view = await _service(request).create(
        principal,
        platform_type=body.type,
        authorization=body.authorization,
        credential=body.credential,
        description=body.description,
    )
    return contract_response("createApplicationEntity", {"key": view.key}, 201)


@router.get(
    "/list",
    response_model=list[ApplicationEntityList],
    operation_id="getApplicationCollection",
    summary="GET for application",
)
async def list_applications(
    request: Request, principal: ApplicationsReader, query: Annotated[ListQuery, Depends()]
) -> Response:
    """The organisation's connected applications, without any secret (a restricted key's
    applications only)."""
    trim = query.selector(ApplicationEntityList)
    views = await _service(request).store.list_page(
        principal.organisation_id,
        within=visible_applications(principal.scope),
        conditions=query.conditions,
        sort=query.sort,
        page=query.page,
        page_size=query.page_size,
    )
    limits = [await _requests_limit(request, view) for view in views]
    return contract_response(
        "getApplicationCollection",
        [trim(_list_item(view, limit)) for view, limit in zip(views, limits, strict=True)],
    )


@router.get(
    "/count",
    response_model=Count,
    operation_id="getApplicationCountCollection",
    summary="COUNT for application",
)
async def count_applications(
    request: Request, principal: ApplicationsReader, filter: Filter = None
) -> Response:
    """How many applications the organisation has connected (that a restricted key may see)."""
    total = await _service(request).store.count(
        principal.organisation_id,
        parse_filter(filter),
        within=visible_applications(principal.scope),
    )
    return contract_response("getApplicationCountCollection", {"total": total})


@router.get(
    "/{key}",
    response_model=ApplicationEntity,
    operation_id="getApplicationEntity",
    summary="GET for application",
)
async def get_application(
    request: Request, principal: ApplicationReader, key: ApplicationKey, fields: Fields = None
) -> Response:
    """One application: its platform, whom the credentials act as in the CRM (me, company),
    and the non-secret part of its credential."""
    trim = field_selector(ApplicationEntity, fields)
    view = await _service(request).store.get(principal.organisation_id, key)
    return contract_response(
        "getApplicationEntity", trim(_entity(view, await _requests_limit(request, view)))
    )


@router.put(
    "/{key}",
    response_model=ApplicationEntityRelation,
    operation_id="updateApplicationEntity",
    summary="PUT for application",
)
async def update_application(
    request: Request,
    principal: ApplicationUpdater,
    key: ApplicationKey,
    body: Annotated[ApplicationEntityUpdate, Body()],
) -> Response:
    """Update application information: a new description, or new credentials (e.g. the fresh
    access token of an oAuth-external-refresh application), checked with the CRM first."""
    view = await _service(request).update(
        principal,
        key,
        platform_type=body.type,
        authorization=body.authorization,
        credential=body.credential,
        description=body.description,
    )
    return contract_response("updateApplicationEntity", {"key": view.key})


@router.delete(
    "/{key}",
    status_code=204,
    response_class=Response,
    operation_id="deleteApplicationEntity",
    summary="DELETE for application",
)
async def delete_application(
    request: Request, principal: ApplicationDeleter, key: ApplicationKey
) -> Response:
    """Remove the application and its ciphertext; crmgate revokes its OAuth tokens at the CRM
    where the platform offers revocation."""
    await _service(request).delete(principal, key)
    return Response(status_code=204)
