"""Connect links: an admin creates one (the CRMs it may connect, how long it works), sees it
once, lists and revokes them; the link's page is public, branded with the organisation's name,
and lets a visitor without an account connect one of those CRMs into that organisation (OAuth
or the key/user form). The application and the link's use commit together: one link, one CRM."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.convertors import Convertor, register_url_convertor

from crmgate.api.auth import ApplicationCreator
from crmgate.connectors.errors import CrmError
from crmgate.portal import connecting
from crmgate.portal.connect_links import DONE_PATH, LinkView
from crmgate.portal.logins import stamp
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
from crmgate.store.accounts import AccountError, Principal, Role, UserStatus
from crmgate.store.models import utcnow

router = APIRouter(prefix=BASE, include_in_schema=False)
LINKS = f"{BASE}/applications/links"
# a link connects an application: it asks what creating one asks (an admin, api/auth.py)
CREATE = role_of(ApplicationCreator)
LIFETIMES = {"1h": timedelta(hours=1), "1d": timedelta(days=1), "7d": timedelta(days=7)}
GONE = (
    "This link does not work any more: it was used, it expired or it was revoked. Ask for a "
    "new one."
)


class LinkToken(Convertor[str]):
    """A connect link's token in a path (cgl_ and base64url): /connect/done/... is none."""

    regex = "cgl_[A-Za-z0-9_-]{20,80}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("link_token", LinkToken())


def _admin(request: Request, who: Visitor) -> None:
    user = require(request, who)
    if not at_least(user.role, CREATE):
        raise Refused(403, f"Only an {CREATE} of your organisation can manage connect links.")


# ---- the admin's list ---------------------------------------------------------------------------


async def _links_page(
    request: Request, who: Visitor, status: int = 200, **context: Any
) -> HTMLResponse:
    user = require(request, who)
    portal = services(request)
    links = await portal.connect_links.list(user.organisation_id)
    now = utcnow()
    return page(
        request,
        who,
        "connect_links.html",
        status=status,
        title="Connect links",
        links=[(link, link.state(now)) for link in links],
        ways=connecting.ways(portal),
        names={w.platform.type: w.platform.name for w in connecting.ways(portal)},
        stamp=stamp,
        lifetimes=LIFETIMES,
        **context,
    )


@router.get("/applications/links")
async def links(request: Request) -> HTMLResponse:
    who = await visitor(request)
    _admin(request, who)
    return await _links_page(request, who)


@router.post("/applications/links")
async def create_link(request: Request) -> HTMLResponse:
    who = await visitor(request)
    _admin(request, who)
    data = await form(request, who)
    portal = services(request)
    offered = {w.platform.type for w in connecting.ways(portal)}
    chosen = [value for value in data.getlist("platform") if isinstance(value, str)]
    lifetime = LIFETIMES.get(field(data, "lifetime", 10))
    description = field(data, "description")
    error = None
    if not chosen:
        error = "Choose at least one CRM the link may connect."
    elif not set(chosen) <= offered:
        error = "A CRM you chose cannot be connected here."
    elif lifetime is None:
        error = "Choose how long the link works."
    if error is not None or lifetime is None:
        return await _links_page(request, who, 400, error=error, description=description)
    assert who.user is not None
    link, token = await portal.connect_links.create(
        who.user.organisation_id, who.user.user_id, sorted(set(chosen)), description, lifetime
    )
    return await _links_page(
        request, who, new_link=portal.connect_links.url(token), new_expires=stamp(link.expires_at)
    )


@router.post("/applications/links/{link_id}/revoke")
async def revoke_link(request: Request, link_id: str) -> Response:
    who = await visitor(request)
    _admin(request, who)
    await form(request, who)
    assert who.user is not None
    try:
        await services(request).connect_links.revoke(
            who.user.organisation_id, link_id, who.user.user_id
        )
    except AccountError as refused:
        raise Refused(refused.status, refused.message) from None
    return redirect(LINKS)


# ---- the visitor's pages (no account) -----------------------------------------------------------


async def _link(request: Request, token: str) -> LinkView:
    found = await services(request).connect_links.by_token(token)
    if found is None:
        raise Refused(404, GONE)
    return found


async def _acting(request: Request, link: LinkView) -> Principal:
    """Who the link acts for: the admin who created it, while they still are one (as the OAuth
    flow asks of the admin who opened its session)."""
    portal = services(request)
    try:
        user = await portal.accounts.get_user(link.organisation_id, link.created_by or "")
    except AccountError:
        user = None
    if user is None or user.role is not Role.ADMIN or user.status is not UserStatus.ACTIVE:
        raise Refused(404, GONE)
    return Principal(
        user_id=user.id,
        organisation_id=link.organisation_id,
        role=Role.ADMIN,
        key_id=f"connect-link:{link.id}",
        key_hint="connect link",
        key_last_used_at=None,
    )


def _description(link: LinkView) -> str:
    return link.description or "Connected through a connect link"


@router.get(DONE_PATH.removeprefix(BASE) + "{link_id}")
async def done(request: Request, link_id: str) -> HTMLResponse:
    """Where a link's OAuth flow ends: connected, or (portal.js reads the fragment) why not."""
    who = await visitor(request)
    link = await services(request).connect_links.by_id(link_id)
    if link is None:
        raise Refused(404, GONE)
    return page(
        request,
        who,
        "connect_done.html",
        title="Connect your CRM",
        link=link,
        connected=link.used_at is not None,
    )


@router.get("/connect/{token:link_token}")
async def link_page(request: Request, token: str) -> HTMLResponse:
    who = await visitor(request)
    link = await _link(request, token)
    found = connecting.ways(services(request), link.platforms)
    if len(found) == 1:
        return await _platform_page(request, who, token, link, found[0].platform.type)
    return page(
        request,
        who,
        "connect_link.html",
        title=f"Connect your CRM to {link.organisation_name}",
        link=link,
        ways=found,
        token=token,
    )


async def _platform_page(
    request: Request,
    who: Visitor,
    token: str,
    link: LinkView,
    platform_type: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    way = connecting.way(services(request), platform_type, link.platforms)
    return page(
        request,
        who,
        "connect_platform.html",
        status=status,
        title=f"Connect {way.platform.name} to {link.organisation_name}",
        way=way,
        link=link,
        token=token,
        action=f"{BASE}/connect/{token}/{way.platform.type}",
        **context,
    )


@router.get("/connect/{token:link_token}/{platform_type}")
async def link_platform(request: Request, token: str, platform_type: str) -> HTMLResponse:
    who = await visitor(request)
    link = await _link(request, token)
    return await _platform_page(request, who, token, link, platform_type)


@router.post("/connect/{token:link_token}/{platform_type}/oauth")
async def link_oauth(request: Request, token: str, platform_type: str) -> HTMLResponse:
    who = await visitor(request)
    data = await form(request, who)
    link = await _link(request, token)
    portal = services(request)
    way = connecting.way(portal, platform_type, link.platforms)
    if not way.oauth:
        raise Refused(404, f"{way.platform.name} cannot be connected by OAuth here.")
    try:
        url = await connecting.start_oauth(
            portal,
            await _acting(request, link),
            way.platform,
            DONE_PATH + link.id,
            _description(link),
            instance_url=field(data, "instance_url", 300),
        )
    except AccountError as refused:
        return await _platform_page(
            request, who, token, link, platform_type, 400, error=connecting.problem(refused)
        )
    return connecting.continue_page(request, who, way.platform, url)


@router.post("/connect/{token:link_token}/{platform_type}/{authorization}")
async def link_form(
    request: Request, token: str, platform_type: str, authorization: str
) -> HTMLResponse:
    who = await visitor(request)
    data = await form(request, who)
    link = await _link(request, token)
    portal = services(request)
    way = connecting.way(portal, platform_type, link.platforms)
    spec = connecting.form_spec(way, authorization)
    sent = connecting.credential(spec, data)

    async def use_link(session: Any, key: str) -> None:
        await portal.connect_links.use(
            session, link.id, link.organisation_id, key, way.platform.type
        )

    try:
        await portal.applications.create(
            await _acting(request, link),
            platform_type=way.platform.type,
            authorization=spec.type,
            credential=sent,
            description=_description(link),
            also=use_link,
        )
    except (AccountError, CrmError) as refused:
        return await _platform_page(
            request,
            who,
            token,
            link,
            platform_type,
            400,
            error=connecting.problem(refused),
            values={spec.type: connecting.shown_again(spec, sent)},
        )
    return page(
        request, who, "connect_done.html", title="Connect your CRM", link=link, connected=True
    )
