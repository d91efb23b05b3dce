"""Password reset by e-mail (OWASP Forgot Password Cheat Sheet): asking answers the same page,
at once, whatever the address (the lookup and the e-mail happen after the answer is sent, so
neither the message nor the time tells whether an account exists); the link sets a new
password once and signs the user out everywhere. A second factor stays: the next sign-in asks
for it as before."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from crmgate.limits import Counter, parse_limits
from crmgate.portal.logins import normal_email
from crmgate.portal.mail import MailError
from crmgate.portal.passwords import problem
from crmgate.portal.service import Portal
from crmgate.portal.web import (
    BASE,
    SESSION_COOKIE,
    Refused,
    Visitor,
    clear_cookie,
    client,
    field,
    form,
    page,
    services,
    visitor,
)

router = APIRouter(prefix=BASE, include_in_schema=False)
log = logging.getLogger("crmgate.portal.password_reset")
# requests one client address may make, whatever the addresses it names (each user gets a few
# e-mails an hour at most too: resets.PER_HOUR)
PER_ADDRESS = parse_limits("10/hour")
GONE = "This link is not valid: it was used or has expired. Ask for a new one."
_sending: set[asyncio.Task[None]] = set()  # kept referenced until done


@router.get("/password-reset")
async def ask_page(request: Request) -> HTMLResponse:
    who = await visitor(request)
    return page(request, who, "password_reset.html", title="Reset your password")


@router.post("/password-reset")
async def ask(request: Request) -> HTMLResponse:
    who = await visitor(request)
    data = await form(request, who)
    portal = services(request)
    email = normal_email(field(data, "email", 320))
    address = client(request)
    if address is not None:
        counters = [Counter("portal password resets", PER_ADDRESS, ("portal-reset", address))]
        verdict = await portal.limits.over(counters)
        if verdict is not None:
            wait = verdict.retry_after(time.time())
            raise Refused(429, f"Too many requests. Try again in {max(1, wait)} seconds.")
        await portal.limits.count(counters)
    response = page(
        request, who, "password_reset.html", title="Reset your password", sent=True, email=email
    )
    if "@" in email:
        # the answer does not wait for the lookup or the mail server: a delay would tell that
        # the address is known
        task = asyncio.create_task(_send_link(portal, email))
        _sending.add(task)
        task.add_done_callback(_sending.discard)
    return response


async def _send_link(portal: Portal, email: str) -> None:
    """After the answer: a link to the user of this address, if there is an active one."""
    try:
        login = await portal.logins.by_email(email)
        if login is None or not login.user.active:
            return
        user = login.user
        token = await portal.resets.create(user.user_id)
        if token is not None:
            link = f"{portal.settings.resolved_public_url}{BASE}/password-reset/{token}"
            await portal.mailer.send(
                user.email,
                "Reset your crmgate password",
                f"Someone, probably you, asked to reset the password of your crmgate portal "
                f"account ({user.email}, {user.organisation_name}).\n\n"
                f"To choose a new password, open this link within an hour:\n\n{link}\n\n"
                "It works once. If you did not ask for it, ignore this e-mail: your password "
                "stays as it is.\n",
            )
        await portal.audit.record(
            "portal.password_reset_requested",
            organisation_id=user.organisation_id,
            target=user.user_id,
            details={"sent": token is not None},
        )
    except MailError:
        pass  # the mailer logged it; the visitor was answered already
    except Exception:  # a background task has nobody to answer: the log is where it goes
        log.exception("password reset e-mail failed")


@router.get("/password-reset/{token}")
async def new_password_page(request: Request, token: str) -> HTMLResponse:
    who = await visitor(request)
    portal = services(request)
    user_id = await portal.resets.find(token)
    login = None if user_id is None else await portal.logins.by_user(user_id)
    if login is None:
        return _gone(request, who)
    return page(
        request,
        who,
        "password_new.html",
        title="Choose a new password",
        token=token,
        email=login.user.email,
    )


def _gone(request: Request, who: Visitor) -> HTMLResponse:
    return page(
        request,
        who,
        "message.html",
        status=404,
        title="Link not valid",
        message=GONE,
        link=f"{BASE}/password-reset",
        link_text="Ask for a new link",
    )


@router.post("/password-reset/{token}")
async def set_new_password(request: Request, token: str) -> HTMLResponse:
    who = await visitor(request)
    data = await form(request, who)
    portal = services(request)
    user_id = await portal.resets.find(token)
    login = None if user_id is None else await portal.logins.by_user(user_id)
    if login is None:
        return _gone(request, who)
    user = login.user
    password = data.get("password")
    password = password if isinstance(password, str) else ""
    error = problem(password, user.email)
    if error is not None:  # the link stays good for another try
        return page(
            request,
            who,
            "password_new.html",
            status=400,
            title="Choose a new password",
            token=token,
            email=user.email,
            error=error,
        )
    hashed = await asyncio.to_thread(portal.passwords.hash, password)
    if await portal.resets.use(token) != user.user_id:
        return _gone(request, who)
    await portal.logins.set_password(user.user_id, hashed)
    ended = await portal.sessions.end_all(user.user_id)
    await portal.audit.record(
        "portal.password_reset",
        organisation_id=user.organisation_id,
        target=user.user_id,
        details={"sessions_ended": ended},
    )
    mine = who.user is not None and who.user.user_id == user.user_id
    response = page(
        request,
        Visitor(None, None, "") if mine else who,  # this browser's session ended too
        "message.html",
        title="Password changed",
        message="Your password was changed, and every browser signed in to your account was "
        "signed out. Sign in with the new password.",
        link=f"{BASE}/sign-in",
        link_text="Sign in",
    )
    if mine:
        clear_cookie(response, request, SESSION_COOKIE)
    return response
