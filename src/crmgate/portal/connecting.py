"""Connecting a CRM from the portal, for the Applications page and connect links alike: the
platforms on offer and how each connects (crmgate's OAuth in application mode where the
operator registered a client: the tokens never reach the browser; else the key or user forms
built from the descriptor's credential fields), and the credential such a form sends."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

from crmgate.connectors.catalogue import Authorization, Platform
from crmgate.connectors.errors import CrmError
from crmgate.portal.service import Portal
from crmgate.portal.web import Refused, Visitor, page
from crmgate.store.accounts import AccountError, Principal

FORM_TYPES = ("key", "user")  # what a person types in; the OAuth types are the flow's
OAUTH = "oAuth-internal"


@dataclass(frozen=True, slots=True)
class Way:
    """How one platform connects here."""

    platform: Platform
    oauth: bool  # crmgate's own OAuth client for it is configured
    instance_field: bool  # the flow authorizes one instance at a time: ask which
    forms: tuple[Authorization, ...]

    @property
    def possible(self) -> bool:
        return self.oauth or bool(self.forms)


def _way(portal: Portal, platform: Platform) -> Way:
    oauth = (
        platform.oauth is not None
        and platform.authorization_for(OAUTH) is not None
        and platform.type in portal.oauth.clients
    )
    return Way(
        platform=platform,
        oauth=oauth,
        instance_field=oauth and platform.oauth is not None and platform.oauth.instance_scoped,
        forms=tuple(a for a in platform.authorization if a.type in FORM_TYPES),
    )


def ways(portal: Portal, only: Collection[str] | None = None) -> list[Way]:
    """The platforms that can be connected here (those of ``only``, when given), by name."""
    found = [
        _way(portal, platform)
        for platform in portal.applications.catalogue.listed()
        if only is None or platform.type in only
    ]
    return sorted((w for w in found if w.possible), key=lambda w: w.platform.name.lower())


def find(portal: Portal, platform_type: str, only: Collection[str] | None = None) -> Way | None:
    return next((w for w in ways(portal, only) if w.platform.type == platform_type), None)


def way(portal: Portal, platform_type: str, only: Collection[str] | None = None) -> Way:
    found = find(portal, platform_type, only)
    if found is None:
        raise Refused(404, "This CRM cannot be connected here.")
    return found


def form_spec(found: Way, authorization: str) -> Authorization:
    for spec in found.forms:
        if spec.type == authorization:
            return spec
    raise Refused(404, f"{found.platform.name} cannot be connected that way here.")


def credential(spec: Authorization, data: FormData) -> dict[str, str]:
    """The credential fields the form sent (the service validates them)."""
    sent: dict[str, str] = {}
    for field in spec.credential:
        value = data.get(f"cred_{field.name}")
        if isinstance(value, str) and value.strip():
            sent[field.name] = value.strip()
    return sent


def shown_again(spec: Authorization, sent: dict[str, str]) -> dict[str, str]:
    """What a form shows again after a refusal: the non-secret fields, never a secret."""
    return {f.name: sent[f.name] for f in spec.credential if not f.secret and f.name in sent}


def problem(error: AccountError | CrmError) -> str:
    """A refusal of the gateway's services, as a sentence for the page."""
    message = error.message
    if isinstance(error, CrmError) and error.status == 401:
        return f"The CRM did not accept these credentials: {message}"
    return message[:1].upper() + message[1:]


async def start_oauth(
    portal: Portal,
    principal: Principal,
    platform: Platform,
    back: str,
    description: str,
    *,
    application_key: str | None = None,
    instance_url: str | None = None,
) -> str:
    """The authorize address (on this gateway, relative: the flow's cookie is set for the host
    the browser is on) of a one-time session that stores the application for ``principal``'s
    organisation and sends the browser back to the portal page ``back``. Raises AccountError
    (FlowRefused) when the flow cannot start."""
    token, _ = await portal.oauth.open_session(
        principal,
        platform.type,
        f"{portal.oauth.public_url}{back}",
        description,
        application_key,
        instance_url or None,
        own_page=True,
    )
    return f"/authorization/oauth/{platform.type}/authorize?session={token}"


def continue_page(request: Request, who: Visitor, platform: Platform, url: str) -> HTMLResponse:
    """The page that sends the browser on to the flow at ``url``: by a script's navigation
    (portal.js), as Chromium applies the CSP's form-action to a form post's redirects and would
    stop one to the CRM; a link for a browser without scripts."""
    return page(
        request,
        who,
        "oauth_continue.html",
        title=f"Continue to {platform.name}",
        url=url,
        platform=platform,
    )
