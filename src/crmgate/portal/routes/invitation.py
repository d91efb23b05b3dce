"""The page behind an invitation link: the invitee chooses a name and a password and joins the
organisation with the role they were invited for. It works whatever ``portal_signup`` says
(open, invite or off): an admin of the organisation asked for this person, and the link proves
the address is theirs."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from crmgate.portal.invitations import GONE, Invitation, InvitationGone, Invitations
from crmgate.portal.passwords import problem
from crmgate.portal.sessions import FULL
from crmgate.portal.web import (
    BASE,
    PRE_COOKIE,
    SESSION_COOKIE,
    Refused,
    Visitor,
    clear_cookie,
    client,
    field,
    form,
    page,
    read_cookie,
    services,
    set_cookie,
    visitor,
)
from crmgate.store.accounts import AccountError

router = APIRouter(prefix=BASE, include_in_schema=False)
TAKEN = (
    "This e-mail address already has a crmgate account, and an address joins one organisation "
    "only. Ask the admin who invited you to invite another address."
)


async def _open(request: Request, token: str) -> Invitation:
    found = await services(request).invitations.find(token)
    if found is None:
        raise Refused(404, GONE)
    return found


@router.get("/invitation/{token}")
async def invitation_page(request: Request, token: str) -> HTMLResponse:
    who = await visitor(request)
    invitation = await _open(request, token)
    return page(
        request,
        who,
        "invitation.html",
        title=f"Join {invitation.organisation_name}",
        invitation=invitation,
        token=token,
        name="",
    )


@router.post("/invitation/{token}")
async def accept(request: Request, token: str) -> HTMLResponse:
    who = await visitor(request)
    data = await form(request, who)
    invitation = await _open(request, token)
    portal = services(request)
    name = field(data, "name", 200)
    password = data.get("password")
    password = password if isinstance(password, str) else ""
    error = "Enter your name." if not name else problem(password, invitation.email)
    status = 400
    if error is None:
        hashed = await asyncio.to_thread(portal.passwords.hash, password)
        try:
            joined, key = await portal.logins.join(
                invitation.organisation_id,
                name,
                invitation.email,
                invitation.role,
                hashed,
                also=Invitations.claim(invitation.id),
            )
        except InvitationGone:
            raise Refused(404, GONE) from None
        except AccountError as refused:
            error = TAKEN if refused.field == "email" else refused.message
            status = 409 if refused.field == "email" else refused.status
        else:
            await portal.audit.record(
                "portal.invitation_accepted",
                organisation_id=joined.organisation_id,
                actor=joined.user_id,
                target=invitation.id,
                details={"role": invitation.role.value},
            )
            # a new session, whoever this browser was signed in as before (no fixation)
            session = await portal.sessions.start(
                joined.user_id,
                FULL,
                replaces=read_cookie(request, SESSION_COOKIE),
                address=client(request),
                user_agent=request.headers.get("user-agent"),
            )
            response = page(
                request,
                Visitor(session, joined, session.csrf),
                "home.html",
                title="Welcome",
                new_key=key.secret,
                notice=f"Welcome to {joined.organisation_name}."
                + (
                    " Your organisation requires two-factor authentication: set it up next."
                    if joined.require_two_factor
                    else ""
                ),
            )
            set_cookie(response, request, SESSION_COOKIE, session.token)
            clear_cookie(response, request, PRE_COOKIE)
            return response
    return page(
        request,
        who,
        "invitation.html",
        status=status,
        title=f"Join {invitation.organisation_name}",
        invitation=invitation,
        token=token,
        name=name,
        error=error,
    )
