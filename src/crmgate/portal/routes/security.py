"""The Security page: the authenticator app (TOTP) enrolled and checked with its first code,
recovery codes shown once, the password changed, two-factor authentication turned off. Adding
or removing a factor needs a fresh sign-in."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from crmgate.portal import totp
from crmgate.portal.passwords import problem
from crmgate.portal.web import (
    BASE,
    Redirect,
    client,
    field,
    form,
    page,
    redirect,
    require,
    require_fresh,
    services,
    visitor,
)

router = APIRouter(prefix=BASE, include_in_schema=False)
ISSUER = "crmgate"


async def _security_page(request: Request, status: int = 200, **context: object) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who)
    portal = services(request)
    return page(
        request,
        who,
        "security.html",
        status=status,
        title="Security",
        recovery_left=await portal.logins.recovery_codes_left(user.user_id),
        passkeys=await portal.logins.passkeys(user.user_id),
        **context,
    )


@router.get("/security")
async def security(request: Request) -> HTMLResponse:
    return await _security_page(request)


@router.post("/security/totp")
async def totp_start(request: Request) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    require_fresh(request, who, f"{BASE}/security")
    assert who.session is not None
    seed = totp.new_seed()
    # the seed waits, sealed, in the session until the first code proves the app has it
    await services(request).sessions.set_pending(who.session, {"totp_seed": seed})
    uri = totp.provisioning_uri(seed, user.email, ISSUER)
    return page(
        request,
        who,
        "totp_enrol.html",
        title="Set up an authenticator app",
        qr=totp.qr_svg(uri),
        secret=seed,
    )


@router.post("/security/totp/confirm")
async def totp_confirm(request: Request) -> Response:
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    require_fresh(request, who, f"{BASE}/security")
    assert who.session is not None
    portal = services(request)
    pending = await portal.sessions.pending(who.session)
    seed = pending.get("totp_seed")
    if not isinstance(seed, str):
        raise Redirect(f"{BASE}/security")
    step = totp.accepted_step(seed, field(data, "code", 20), None)
    if step is None:
        uri = totp.provisioning_uri(seed, user.email, ISSUER)
        return page(
            request,
            who,
            "totp_enrol.html",
            status=400,
            title="Set up an authenticator app",
            qr=totp.qr_svg(uri),
            secret=seed,
            error="That code is not right. Try the next one.",
        )
    codes = await portal.logins.enrol_totp(user.user_id, seed, step)
    await portal.sessions.set_pending(who.session, None)
    await portal.audit.record(
        "portal.two_factor_enabled",
        organisation_id=user.organisation_id,
        target=user.user_id,
        details={"factor": "totp"},
    )
    if not codes:
        return redirect(f"{BASE}/security")
    return page(request, who, "recovery_codes.html", title="Recovery codes", codes=codes)


@router.post("/security/recovery-codes")
async def new_recovery_codes(request: Request) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    require_fresh(request, who, f"{BASE}/security")
    portal = services(request)
    if not user.two_factor:
        raise Redirect(f"{BASE}/security")
    codes = await portal.logins.new_recovery_codes(user.user_id)
    await portal.audit.record(
        "portal.recovery_codes_renewed", organisation_id=user.organisation_id, target=user.user_id
    )
    return page(request, who, "recovery_codes.html", title="Recovery codes", codes=codes)


@router.post("/security/disable")
async def disable(request: Request) -> Response:
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    require_fresh(request, who, f"{BASE}/security")
    portal = services(request)
    await portal.logins.disable_two_factor(user.user_id)
    await portal.audit.record(
        "portal.two_factor_disabled", organisation_id=user.organisation_id, target=user.user_id
    )
    return redirect(f"{BASE}/security")


@router.post("/security/password")
async def change_password(request: Request) -> Response:
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    portal = services(request)
    current, new = data.get("current"), data.get("new")
    current = current if isinstance(current, str) else ""
    new = new if isinstance(new, str) else ""
    login = await portal.logins.by_user(user.user_id)
    assert login is not None
    if not await asyncio.to_thread(portal.passwords.verify, login.password_hash, current):
        await portal.throttle.failed(user.email, client(request))
        return await _security_page(request, 400, error="Your current password is not right.")
    error = problem(new, user.email)
    if error is not None:
        return await _security_page(request, 400, error=error)
    await portal.logins.set_password(
        user.user_id, await asyncio.to_thread(portal.passwords.hash, new)
    )
    assert who.session is not None
    # every other browser signed in with the old password is signed out
    await portal.sessions.end_all(user.user_id, except_token=who.session.token)
    await portal.audit.record(
        "portal.password_changed", organisation_id=user.organisation_id, target=user.user_id
    )
    return await _security_page(request, notice="Your password was changed.")
