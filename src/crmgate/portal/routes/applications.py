"""The Applications page: the organisation's connected CRMs with their state (authorized,
expired, failing) and last use; connecting one (crmgate's OAuth in application mode, or the
key/user form of its descriptor), authorizing one again, editing its description, deleting it.
Each change asks the role the API's operation declares and goes through ApplicationService,
which validates, verifies with the CRM, seals the credential and writes the audit event."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from crmgate.api.auth import ApplicationCreator, ApplicationDeleter, ApplicationUpdater
from crmgate.connectors.errors import CrmError
from crmgate.portal import connecting
from crmgate.portal.app_health import Health, health
from crmgate.portal.logins import PortalUser, stamp
from crmgate.portal.routes.credentials import role_of
from crmgate.portal.web import (
    BASE,
    Refused,
    Visitor,
    field,
    form,
    page,
    redirect,
    require,
    services,
    visitor,
)
from crmgate.security.scopes import at_least
from crmgate.store.accounts import AccountError, Role
from crmgate.store.applications import ApplicationView

router = APIRouter(prefix=BASE, include_in_schema=False)
PAGE = f"{BASE}/applications"
RETURN = f"{PAGE}/connected"  # where the portal's OAuth flows send the browser back
PAGE_SIZE = 50
CREATE = role_of(ApplicationCreator)
UPDATE = role_of(ApplicationUpdater)
DELETE = role_of(ApplicationDeleter)


class ApplicationKey(Convertor[str]):
    """An application key in a path (40 hex digits): /applications/connect is no key."""

    regex = "[0-9a-f]{40}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("application_key", ApplicationKey())


def _need(user: PortalUser, role: Role) -> None:
    if not at_least(user.role, role):
        raise Refused(
            403, f"This needs the {role} role in your organisation; yours is {user.role}."
        )


def _name(request: Request, platform_type: str) -> str:
    known = services(request).applications.catalogue.known(platform_type)
    return known.name if known is not None else platform_type


@dataclass(frozen=True, slots=True)
class Row:
    view: ApplicationView
    name: str
    health: Health
    last_used: str


# ---- the list -----------------------------------------------------------------------------------


@router.get("/applications")
async def applications(request: Request, deleted: str | None = None) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who)
    portal = services(request)
    raw = request.query_params.get("page", "1")
    number = int(raw) if raw.isdigit() and 0 < int(raw) <= 10_000 else 1
    views = await portal.applications.store.list_page(
        user.organisation_id, page=number, page_size=PAGE_SIZE
    )
    states = await portal.app_health.of(user.organisation_id, views)
    rows = [
        Row(view, _name(request, view.type), states[view.key], stamp(view.last_used_at))
        for view in views
    ]
    return page(
        request,
        who,
        "applications.html",
        title="Applications",
        rows=rows,
        total=await portal.applications.store.count(user.organisation_id),
        page_number=number,
        more=len(views) == PAGE_SIZE,
        may_create=at_least(user.role, CREATE),
        notice="The application was deleted: calls with its key are refused." if deleted else None,
    )


@router.get("/applications/connected")
async def connected(request: Request) -> HTMLResponse:
    """The end of a portal OAuth flow: the result is in the URL fragment, which only the
    browser sees; portal.js goes on to the application (or shows the CRM's refusal)."""
    who = await visitor(request)
    require(request, who)
    return page(request, who, "oauth_return.html", title="Connecting your CRM")


# ---- connecting one -----------------------------------------------------------------------------


@router.get("/applications/connect")
async def choose(request: Request) -> HTMLResponse:
    who = await visitor(request)
    _need(require(request, who), CREATE)
    found = connecting.ways(services(request))
    return page(request, who, "connect_choose.html", title="Connect a CRM", ways=found)


async def _connect_page(
    request: Request, who: Visitor, platform_type: str, status: int = 200, **context: Any
) -> HTMLResponse:
    way = connecting.way(services(request), platform_type)
    return page(
        request,
        who,
        "connect_platform.html",
        status=status,
        title=f"Connect {way.platform.name}",
        way=way,
        action=f"{PAGE}/connect/{way.platform.type}",
        **context,
    )


@router.get("/applications/connect/{platform_type}")
async def connect_page(request: Request, platform_type: str) -> HTMLResponse:
    who = await visitor(request)
    _need(require(request, who), CREATE)
    return await _connect_page(request, who, platform_type, description="")


@router.post("/applications/connect/{platform_type}/oauth")
async def connect_oauth(request: Request, platform_type: str) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    _need(user, CREATE)
    way = connecting.way(services(request), platform_type)
    if not way.oauth:
        raise Refused(404, f"{way.platform.name} cannot be connected by OAuth here.")
    description = field(data, "description")
    try:
        url = await connecting.start_oauth(
            services(request),
            who.principal,
            way.platform,
            RETURN,
            description,
            instance_url=field(data, "instance_url", 300),
        )
    except AccountError as refused:
        return await _connect_page(
            request,
            who,
            platform_type,
            400,
            error=connecting.problem(refused),
            description=description,
        )
    return connecting.continue_page(request, who, way.platform, url)


@router.post("/applications/connect/{platform_type}/{authorization}")
async def connect_form(request: Request, platform_type: str, authorization: str) -> Response:
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    _need(user, CREATE)
    way = connecting.way(services(request), platform_type)
    spec = connecting.form_spec(way, authorization)
    sent = connecting.credential(spec, data)
    description = field(data, "description")
    try:
        view = await services(request).applications.create(
            who.principal,
            platform_type=way.platform.type,
            authorization=spec.type,
            credential=sent,
            description=description,
        )
    except (AccountError, CrmError) as refused:
        return await _connect_page(
            request,
            who,
            platform_type,
            400,
            error=connecting.problem(refused),
            values={spec.type: connecting.shown_again(spec, sent)},
            description=description,
        )
    return redirect(f"{PAGE}/{view.key}?connected=1")


# ---- one application ----------------------------------------------------------------------------


async def _application_page(
    request: Request, who: Visitor, key: str, status: int = 200, **context: Any
) -> HTMLResponse:
    user = require(request, who)
    portal = services(request)
    try:
        view = await portal.applications.store.get(user.organisation_id, key)
    except AccountError:
        raise Refused(404, "Your organisation has no such application.") from None
    way = connecting.find(portal, view.type)
    states = await portal.app_health.of(user.organisation_id, [view])
    return page(
        request,
        who,
        "application.html",
        status=status,
        title=f"{_name(request, view.type)} application",
        view=view,
        name=_name(request, view.type),
        health=states.get(view.key) or health(view),
        created=stamp(view.created_at),
        last_used=stamp(view.last_used_at) or "never",
        way=way,
        may_update=at_least(user.role, UPDATE) and way is not None,
        may_delete=at_least(user.role, DELETE),
        action=f"{PAGE}/{view.key}/credentials",
        **context,
    )


@router.get("/applications/{key:application_key}")
async def application(request: Request, key: str, connected: str | None = None) -> HTMLResponse:
    who = await visitor(request)
    return await _application_page(
        request, who, key, notice="Your CRM is connected." if connected else None
    )


@router.post("/applications/{key:application_key}/description")
async def describe(request: Request, key: str) -> Response:
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    _need(user, UPDATE)
    try:
        await services(request).applications.update(
            who.principal,
            key,
            platform_type=None,
            authorization=None,
            credential=None,
            description=field(data, "description"),
        )
    except AccountError as refused:
        raise Refused(refused.status, connecting.problem(refused)) from None
    return redirect(f"{PAGE}/{key}")


@router.post("/applications/{key:application_key}/delete")
async def delete(request: Request, key: str) -> Response:
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    _need(user, DELETE)
    try:
        await services(request).applications.delete(who.principal, key)
    except AccountError as refused:
        raise Refused(refused.status, connecting.problem(refused)) from None
    return redirect(f"{PAGE}?deleted=1")


@router.post("/applications/{key:application_key}/authorize")
async def authorize_again(request: Request, key: str) -> HTMLResponse:
    """OAuth again for the same application: it keeps its key, its tokens are replaced."""
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    _need(user, UPDATE)
    portal = services(request)
    try:
        view = await portal.applications.store.get(user.organisation_id, key)
        way = connecting.way(portal, view.type)
        if not way.oauth:
            raise Refused(404, f"{way.platform.name} cannot be authorized by OAuth here.")
        url = await connecting.start_oauth(
            portal, who.principal, way.platform, RETURN, view.description, application_key=key
        )
    except AccountError as refused:
        return await _application_page(request, who, key, 400, error=connecting.problem(refused))
    return connecting.continue_page(request, who, way.platform, url)


@router.post("/applications/{key:application_key}/credentials/{authorization}")
async def new_credentials(request: Request, key: str, authorization: str) -> Response:
    """New credentials from a key/user form (the CRM checks them before they replace the old)."""
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    _need(user, UPDATE)
    portal = services(request)
    try:
        view = await portal.applications.store.get(user.organisation_id, key)
    except AccountError:
        raise Refused(404, "Your organisation has no such application.") from None
    spec = connecting.form_spec(connecting.way(portal, view.type), authorization)
    sent = connecting.credential(spec, data)
    try:
        await portal.applications.update(
            who.principal,
            key,
            platform_type=None,
            authorization=spec.type,
            credential=sent,
            description=None,
        )
    except (AccountError, CrmError) as refused:
        return await _application_page(
            request,
            who,
            key,
            400,
            error=connecting.problem(refused),
            values={spec.type: connecting.shown_again(spec, sent)},
        )
    return redirect(f"{PAGE}/{key}?connected=1")
