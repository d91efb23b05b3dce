"""Passkeys (WebAuthn) on the Security page and at sign-in. A ceremony's options are fetched by
the page's script (JSON, CSRF token in a header); the authenticator's answer comes back as an
ordinary form post, so that its outcome is a page like any other. Adding or removing a passkey
needs a fresh sign-in; at sign-in a passkey is the second factor after the password."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from crmgate.api.responses import JSONResponse
from crmgate.portal.passkeys import PasskeyCounterError, PasskeyError, relying_party_of
from crmgate.portal.routes.account import (
    _not_throttled,
    _partial,
    _second_factor_failed,
    _second_factor_passed,
)
from crmgate.portal.routes.security import _security_page
from crmgate.portal.web import (
    BASE,
    Refused,
    Visitor,
    field,
    form,
    header_csrf,
    page,
    redirect,
    require,
    require_fresh,
    services,
    visitor,
)

router = APIRouter(prefix=BASE, include_in_schema=False)
CREDENTIAL_LIMIT = 20_000  # characters of an authenticator's answer in JSON (a few KB in practice)
NOT_ACCEPTED = "That passkey was not accepted. Try again, or use another way to sign in."


def _refused(error: PasskeyError) -> JSONResponse:
    return JSONResponse({"error": error.message}, status_code=400)


async def _authentication_options(request: Request, who: Visitor) -> Response:
    assert who.session is not None and who.user is not None
    portal = services(request)
    try:
        rp = relying_party_of(request, portal.settings.resolved_public_url)
        options = await portal.passkeys.authentication_options(who.session, who.user.user_id, rp)
    except PasskeyError as error:
        return _refused(error)
    return JSONResponse(options)


# ---- the Security page ---------------------------------------------------------------------------


@router.post("/security/passkeys/options")
async def registration_options(request: Request) -> Response:
    who = await visitor(request)
    user = require(request, who)
    header_csrf(request, who)
    # before the authenticator is touched: the script follows this redirect to the sign-in
    require_fresh(request, who, f"{BASE}/security")
    assert who.session is not None
    portal = services(request)
    try:
        rp = relying_party_of(request, portal.settings.resolved_public_url)
        options = await portal.passkeys.registration_options(who.session, user, rp)
    except PasskeyError as error:
        return _refused(error)
    return JSONResponse(options)


@router.post("/security/passkeys")
async def register(request: Request) -> Response:
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    require_fresh(request, who, f"{BASE}/security")
    assert who.session is not None
    portal = services(request)
    name = field(data, "name", 100) or "Passkey"
    try:
        rp = relying_party_of(request, portal.settings.resolved_public_url)
        passkey_id = await portal.passkeys.register(
            who.session, user.user_id, rp, field(data, "credential", CREDENTIAL_LIMIT), name
        )
    except PasskeyError as error:
        return await _security_page(request, 400, error=error.message)
    await portal.audit.record(
        "portal.passkey_added",
        organisation_id=user.organisation_id,
        target=user.user_id,
        details={"passkey": passkey_id, "name": name},
    )
    if await portal.logins.recovery_codes_left(user.user_id):
        return redirect(f"{BASE}/security")
    # the first factor (or every code spent): a fresh set, shown once
    codes = await portal.logins.new_recovery_codes(user.user_id)
    return page(request, who, "recovery_codes.html", title="Recovery codes", codes=codes)


@router.post("/security/passkeys/{passkey_id}/delete")
async def remove(request: Request, passkey_id: str) -> Response:
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    require_fresh(request, who, f"{BASE}/security")
    portal = services(request)
    name = await portal.passkeys.remove(user.user_id, passkey_id[:40])
    if name is None:
        raise Refused(404, "You have no such passkey.")
    await portal.audit.record(
        "portal.passkey_removed",
        organisation_id=user.organisation_id,
        target=user.user_id,
        details={"passkey": passkey_id, "name": name},
    )
    after = await portal.logins.by_user(user.user_id)
    if after is not None and not after.user.two_factor:
        # the last factor went: recovery codes would now be a factor of their own
        await portal.logins.disable_two_factor(user.user_id)
        await portal.audit.record(
            "portal.two_factor_disabled",
            organisation_id=user.organisation_id,
            target=user.user_id,
            details={"reason": "last passkey removed"},
        )
    return redirect(f"{BASE}/security")


# ---- the second factor at sign-in, and a fresh sign-in ------------------------------------------


@router.post("/sign-in/passkey/options")
async def sign_in_options(request: Request) -> Response:
    who, _ = await _partial(request)
    header_csrf(request, who)
    await _not_throttled(request, who)
    return await _authentication_options(request, who)


@router.post("/sign-in/passkey")
async def sign_in(request: Request) -> Response:
    who, login = await _partial(request)
    data = await form(request, who)
    await _not_throttled(request, who)
    assert who.session is not None
    portal = services(request)
    try:
        rp = relying_party_of(request, portal.settings.resolved_public_url)
        await portal.passkeys.authenticate(
            who.session, login.user.user_id, rp, field(data, "credential", CREDENTIAL_LIMIT)
        )
    except PasskeyError as error:
        if isinstance(error, PasskeyCounterError):
            await portal.audit.record(
                "portal.passkey_counter_regressed",
                organisation_id=login.user.organisation_id,
                target=login.user.user_id,
            )
        return await _second_factor_failed(request, who, "passkey", NOT_ACCEPTED)
    return await _second_factor_passed(request, who, "passkey")


@router.post("/reauthenticate/passkey/options")
async def reauthenticate_options(request: Request) -> Response:
    who = await visitor(request)
    require(request, who)
    header_csrf(request, who)
    return await _authentication_options(request, who)
