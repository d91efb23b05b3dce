"""The Members page, for admins only (checked by the server on every request): the
organisation's users with their role, status and second factor; invitations by e-mail; role
changes and removals under the account store's rules (an organisation keeps an active admin);
the organisation's "two-factor authentication for every member". A change of role or a removal
ends the user's sessions (OWASP Session Management: a new session at a change of privilege)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from crmgate.portal.logins import PortalUser, normal_email, stamp
from crmgate.portal.mail import MailError
from crmgate.portal.sessions import FULL
from crmgate.portal.web import (
    BASE,
    SESSION_COOKIE,
    Visitor,
    clear_cookie,
    client,
    field,
    form,
    page,
    redirect,
    require,
    services,
    set_cookie,
    visitor,
)
from crmgate.query import Condition
from crmgate.store.accounts import AccountError, Role, UserStatus, UserView

router = APIRouter(prefix=BASE, include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Member:
    """A row of the page: the user as the account store has them, and their portal sign-in
    (None for a user of the API only)."""

    view: UserView
    login: PortalUser | None

    @property
    def two_factor(self) -> str:
        if self.login is None:
            return "No portal sign-in"
        factors = (["authenticator app"] if self.login.totp else []) + (
            [f"{self.login.passkeys} passkey{'s' if self.login.passkeys != 1 else ''}"]
            if self.login.passkeys
            else []
        )
        return f"On ({', '.join(factors)})" if factors else "Off"

    @property
    def active(self) -> bool:
        return self.view.status is UserStatus.ACTIVE


async def _members_page(
    request: Request, who: Visitor, status: int = 200, **context: object
) -> HTMLResponse:
    user = require(request, who, admin=True)
    portal = services(request)
    organisation = user.organisation_id
    count = await portal.accounts.count_users(organisation)
    views = await portal.accounts.list_users(organisation, page_size=max(count, 1))
    logins = {login.user_id: login for login in await portal.logins.members(organisation)}
    return page(
        request,
        who,
        "members.html",
        status=status,
        title="Members",
        members=[Member(view, logins.get(view.id)) for view in views],
        invitations=await portal.invitations.open(organisation),
        roles=list(Role),
        stamp=stamp,
        **context,
    )


@router.get("/members")
async def members(request: Request) -> HTMLResponse:
    return await _members_page(request, await visitor(request))


# ---- invitations --------------------------------------------------------------------------------


def _invitation_text(inviter: str, organisation: str, role: Role, link: str) -> str:
    return (
        f"{inviter} invited you to join {organisation} on crmgate as {role.value}.\n\n"
        f"To accept, open this link and choose your password:\n\n{link}\n\n"
        "The link works once and expires in 7 days. If you did not expect this e-mail, "
        "ignore it.\n"
    )


@router.post("/members/invite")
async def invite(request: Request) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who, admin=True)
    data = await form(request, who)
    portal = services(request)
    email = normal_email(field(data, "email", 320))
    role_name = field(data, "role", 20)
    if "@" not in email or role_name not in {role.value for role in Role}:
        return await _members_page(
            request, who, 400, error="Enter an e-mail address and choose a role."
        )
    already = await portal.accounts.count_users(
        user.organisation_id, [Condition("email", "eq", email)]
    )
    if already:
        return await _members_page(
            request, who, 409, error=f"{email} is already a member of {user.organisation_name}."
        )
    role = Role(role_name)
    invitation, token = await portal.invitations.create(
        user.organisation_id, email, role, user.user_id
    )
    link = f"{portal.settings.resolved_public_url}{BASE}/invitation/{token}"
    if portal.mailer.configured:
        try:
            await portal.mailer.send(
                email,
                f"Join {user.organisation_name} on crmgate",
                _invitation_text(user.name, user.organisation_name, role, link),
            )
        except MailError:
            await portal.invitations.revoke(user.organisation_id, invitation.id)
            return await _members_page(
                request,
                who,
                502,
                error="The invitation e-mail could not be sent (the mail server refused it or "
                "could not be reached). Nothing was sent; try again later.",
            )
    await portal.audit.record(
        "portal.member_invited",
        organisation_id=user.organisation_id,
        target=invitation.id,
        details={"role": role.value, "mailed": portal.mailer.configured},
    )
    if portal.mailer.configured:
        return await _members_page(request, who, notice=f"An invitation was sent to {email}.")
    # no mail server: the admin hands the link on (shown this once, like a key)
    return await _members_page(
        request, who, invited=email, invitation_link=link, expires=stamp(invitation.expires_at)
    )


@router.post("/members/invitations/{invitation_id}/revoke")
async def revoke_invitation(request: Request, invitation_id: str) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who, admin=True)
    await form(request, who)
    portal = services(request)
    if not await portal.invitations.revoke(user.organisation_id, invitation_id[:40]):
        return await _members_page(
            request, who, 404, error="That invitation was already accepted or revoked."
        )
    await portal.audit.record(
        "portal.invitation_revoked", organisation_id=user.organisation_id, target=invitation_id
    )
    return await _members_page(request, who, notice="The invitation was revoked.")


# ---- role, removal ------------------------------------------------------------------------------


@router.post("/members/{user_id}/role")
async def change_role(request: Request, user_id: str) -> Response:
    who = await visitor(request)
    user = require(request, who, admin=True)
    data = await form(request, who)
    portal = services(request)
    role_name = field(data, "role", 20)
    if role_name not in {role.value for role in Role}:
        return await _members_page(request, who, 400, error="Choose a role.")
    role = Role(role_name)
    try:
        before = await portal.accounts.get_user(user.organisation_id, user_id)
        if before.role is role:
            return await _members_page(request, who, notice=f"{before.name} is already {role}.")
        after = await portal.accounts.update_user(user.organisation_id, user_id, {"role": role})
    except AccountError as refused:
        return await _members_page(request, who, refused.status, error=_sentence(refused))
    assert who.session is not None
    if user_id != user.user_id:
        ended = await portal.sessions.end_all(user_id)
    else:  # one's own role: this browser goes on under a new session id, the others end
        ended = await portal.sessions.end_all(user_id, except_token=who.session.token)
    await portal.audit.record(
        "portal.member_role_changed",
        organisation_id=user.organisation_id,
        target=user_id,
        details={"from": before.role.value, "to": role.value, "sessions_ended": ended},
    )
    if user_id != user.user_id:
        return await _members_page(
            request, who, notice=f"{after.name} is now {role}; their sessions were ended."
        )
    session = await portal.sessions.start(
        user.user_id,
        FULL,
        replaces=who.session.token,
        address=client(request),
        user_agent=request.headers.get("user-agent"),
        signed_in=False,
    )
    response = redirect(f"{BASE}/")
    set_cookie(response, request, SESSION_COOKIE, session.token)
    return response


@router.post("/members/{user_id}/remove")
async def remove(request: Request, user_id: str) -> Response:
    who = await visitor(request)
    user = require(request, who, admin=True)
    await form(request, who)
    portal = services(request)
    try:
        gone = await portal.accounts.get_user(user.organisation_id, user_id)
        await portal.accounts.delete_user(user.organisation_id, user_id)
    except AccountError as refused:
        return await _members_page(request, who, refused.status, error=_sentence(refused))
    # the sessions go with the user's row (a cascade); said here too, whatever the database
    await portal.sessions.end_all(user_id)
    await portal.audit.record(
        "portal.member_removed",
        organisation_id=user.organisation_id,
        target=user_id,
        details={"role": gone.role.value},
    )
    if user_id == user.user_id:
        response = redirect(f"{BASE}/sign-in")
        clear_cookie(response, request, SESSION_COOKIE)
        return response
    return await _members_page(request, who, notice=f"{gone.name} was removed.")


def _sentence(refused: AccountError) -> str:
    message = refused.message
    if refused.status == 404:
        return "That user is not a member of your organisation."
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


# ---- two-factor authentication for every member ------------------------------------------------


@router.post("/members/two-factor")
async def require_two_factor(request: Request) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who, admin=True)
    data = await form(request, who)
    portal = services(request)
    required = field(data, "required", 10) == "on"
    if required and not user.two_factor:
        return await _members_page(
            request,
            who,
            400,
            error="Turn on two-factor authentication for yourself first (Security page).",
        )
    await portal.logins.set_require_two_factor(user.organisation_id, required)
    await portal.audit.record(
        "portal.two_factor_required",
        organisation_id=user.organisation_id,
        target=user.organisation_id,
        details={"required": required},
    )
    # the page reads the organisation's setting afresh
    return await _members_page(
        request,
        await visitor(request),
        notice=(
            "Every member now needs two-factor authentication: those without it are sent to "
            "set it up at their next page."
            if required
            else "Two-factor authentication is no longer required."
        ),
    )
