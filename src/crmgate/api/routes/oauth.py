"""The OAuth authorization flow's addresses (crmgate/oauth.py says how it works).

- ``GET /authorization/oauth/{platform}/authorize`` and ``.../callback``: the browser's way, outside
  /v1 as the contract has it; no user key (the browser has none), every answer ``no-store``,
  ``no-referrer`` (the middleware), nothing loaded from anywhere.
- ``POST /v1/oauth/session`` (a crmgate addition): an admin asks, server to server, for a one-time
  session; the flow then creates the application itself and returns only its key.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from crmgate.api.auth import ApplicationCreator, require_grant
from crmgate.api.responses import JSONResponse
from crmgate.api.routes.users import ERRORS
from crmgate.oauth import COOKIE_PATH, FLOW_LIFETIME, OAuthFlows, cookie_name
from crmgate.security.scopes import Action, Resource

router = APIRouter(tags=["oauth"], responses=ERRORS)
PlatformType = Annotated[str, Path(description="Platform type, e.g. Salesforce", max_length=40)]


def _flows(request: Request) -> OAuthFlows:
    flows: OAuthFlows = request.app.state.services.oauth
    return flows


def _redirect(location: str) -> RedirectResponse:
    return RedirectResponse(location, status_code=302, headers={"Cache-Control": "no-store"})


@router.get(
    "/authorization/oauth/{platform}/authorize",
    status_code=302,
    response_class=Response,
    operation_id="authorizeOAuth",
    summary="Start the OAuth authorization of a CRM account",
    responses={302: {"description": "To the CRM's authorization page"}},
)
async def authorize(
    request: Request,
    platform: PlatformType,
    redirect: Annotated[
        str | None,
        Query(
            description="Where the browser goes back with the result in the URL fragment: one of "
            "the redirect URLs the operator allows, exactly",
            max_length=2000,
        ),
    ] = None,
    session: Annotated[
        str | None,
        Query(description="A one-time session from POST /v1/oauth/session", max_length=200),
    ] = None,
    instance_url: Annotated[
        str | None,
        Query(
            description="The account's instance, where the platform authorizes one at a time "
            "(Microsoft Dynamics 365: the organisation URL); with a session, the session's",
            max_length=300,
        ),
    ] = None,
    entities: Annotated[
        str | None,
        Query(
            description="Comma-separated unified entities (contact,task): only their scopes are "
            "asked, with those granted before kept (incremental authorization), where the "
            "platform has scopes per entity (Google)",
            max_length=500,
        ),
    ] = None,
) -> Response:
    """Sends the browser to the CRM with a single-use state bound to it by a cookie, and PKCE."""
    flows = _flows(request)
    started = await flows.begin(platform, redirect, session, instance_url, entities)
    response = _redirect(started.location)
    response.set_cookie(
        started.cookie_name,
        started.cookie,
        max_age=int(FLOW_LIFETIME.total_seconds()),
        path="/" if flows.secure else COOKIE_PATH,  # __Host- cookies must have Path=/
        secure=flows.secure,
        httponly=True,
        samesite="lax",  # sent on the CRM's top-level redirect back, not on cross-site posts
    )
    return response


@router.get(
    "/authorization/oauth/{platform}/callback",
    status_code=302,
    response_class=Response,
    operation_id="callbackOAuth",
    summary="Where the CRM sends the browser back",
    responses={302: {"description": "To the client's redirect, the result in the fragment"}},
)
async def callback(request: Request, platform: PlatformType) -> Response:
    flows = _flows(request)
    params = {k: v[:4096] for k, v in request.query_params.items()}
    name = cookie_name(params.get("state", ""), flows.secure)
    location = await flows.finish(platform, params, request.cookies.get(name))
    response = _redirect(location)
    response.delete_cookie(
        name, path="/" if flows.secure else COOKIE_PATH, secure=flows.secure, httponly=True
    )
    return response


class OAuthSessionRequest(BaseModel):
    type: str = Field(description="Platform type, e.g. Salesforce", max_length=40)
    redirect: str = Field(
        description="One of the operator's allowed redirect URLs", max_length=2000
    )
    description: str = Field(default="", max_length=1000)
    application_key: str | None = Field(
        default=None,
        description="Authorize this application of yours again (e.g. after its grant was "
        "revoked) instead of creating a new one",
        max_length=40,
    )
    instance_url: str | None = Field(
        default=None,
        description="The account's instance, where the platform authorizes one at a time "
        "(Microsoft Dynamics 365: the organisation URL, https://org.crm.dynamics.com)",
        max_length=300,
    )


class OAuthSession(BaseModel):
    authorize_url: str = Field(description="Send the browser here (once)")
    expires_at: str


@router.post(
    "/v1/oauth/session",
    status_code=201,
    response_model=OAuthSession,
    operation_id="createOAuthSession",
    summary="A one-time OAuth session that creates the application (crmgate addition)",
    tags=["crmgate"],
)
async def create_session(
    request: Request, principal: ApplicationCreator, body: Annotated[OAuthSessionRequest, Body()]
) -> JSONResponse:
    """The safer mode: the browser goes through the flow at ``authorize_url``; crmgate creates
    an oAuth-internal application for your organisation and sends the browser back to
    ``redirect`` with only ``#application_key=...``. The tokens never leave crmgate."""
    if body.application_key is not None:  # re-authorizing it replaces its credentials
        require_grant(principal, Resource.APPLICATION, Action.UPDATE, body.application_key)
    flows = _flows(request)
    token, expires = await flows.open_session(
        principal,
        body.type,
        body.redirect,
        body.description,
        body.application_key,
        body.instance_url,
    )
    url = f"{flows.public_url}/authorization/oauth/{body.type}/authorize?session={token}"
    return JSONResponse(
        {"authorize_url": url, "expires_at": expires.isoformat(timespec="seconds")},
        status_code=201,
    )
