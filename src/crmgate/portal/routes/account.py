"""Signing up, in and out: the password, then the second factor, then a session with a new id
(OWASP ASVS V2, V3). Every answer to a wrong address or password is the same sentence after the
same work, so neither the message nor the time tells whether an account exists."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from crmgate.portal import totp
from crmgate.portal.logins import Login
from crmgate.portal.passkeys import PasskeyError, relying_party_of
from crmgate.portal.passwords import problem
from crmgate.portal.sessions import FULL, PARTIAL
from crmgate.portal.web import (
    BASE,
    PRE_COOKIE,
    SESSION_COOKIE,
    Redirect,
    Refused,
    Visitor,
    clear_cookie,
    client,
    field,
    form,
    local_path,
    page,
    read_cookie,
    redirect,
    require,
    services,
    set_cookie,
    visitor,
)
from crmgate.store.accounts import AccountError

router = APIRouter(prefix=BASE, include_in_schema=False)
WRONG = "The e-mail address or password is not right."


@router.get("")
async def root() -> Response:
    return redirect(f"{BASE}/")


@router.get("/")
async def home(request: Request) -> HTMLResponse:
    who = await visitor(request)
    require(request, who)
    return page(request, who, "home.html", title="Overview")


# ---- sign-up ------------------------------------------------------------------------------------


def _signup_open(request: Request) -> bool:
    return services(request).settings.portal_signup == "open"


@router.get("/sign-up")
async def sign_up_page(request: Request) -> HTMLResponse:
    who = await visitor(request)
    if not _signup_open(request):
        raise Refused(
            404, "Sign-up is closed here: ask an admin of your organisation to invite you."
        )
    return page(request, who, "sign_up.html", title="Create an account")


@router.post("/sign-up")
async def sign_up(request: Request) -> Response:
    who = await visitor(request)
    data = await form(request, who)
    if not _signup_open(request):
        raise Refused(
            404, "Sign-up is closed here: ask an admin of your organisation to invite you."
        )
    portal = services(request)
    values = {
        "organisation": field(data, "organisation", 200),
        "name": field(data, "name", 200),
        "email": field(data, "email", 320),
    }
    password = data.get("password")
    password = password if isinstance(password, str) else ""
    error = None
    if not all(values.values()):
        error = "Fill in every field."
    elif "@" not in values["email"]:
        error = "Enter an e-mail address."
    else:
        error = problem(password, values["email"])
    if error is None:
        hashed = await asyncio.to_thread(portal.passwords.hash, password)
        try:
            user, key = await portal.logins.sign_up(
                values["organisation"], values["name"], values["email"], hashed
            )
        except AccountError as refused:
            error = (
                refused.message
                if refused.field != "email"
                else (
                    "This e-mail address cannot be used for a new account. Sign in, or reset your "
                    "password."
                )
            )
        else:
            await portal.audit.record(
                "portal.signed_up",
                organisation_id=user.organisation_id,
                actor=user.user_id,
                target=user.user_id,
            )
            session = await portal.sessions.start(
                user.user_id,
                FULL,
                address=client(request),
                user_agent=request.headers.get("user-agent"),
            )
            signed_in = Visitor(session, user, session.csrf)
            response = page(
                request,
                signed_in,
                "home.html",
                title="Welcome",
                new_key=key.secret,
                notice="Your account is ready. Set up two-factor authentication next.",
            )
            _set_session(response, request, session.token)
            return response
    return page(
        request, who, "sign_up.html", status=400, title="Create an account", error=error, **values
    )


def _set_session(response: Response, request: Request, token: str) -> None:
    set_cookie(response, request, SESSION_COOKIE, token)
    clear_cookie(response, request, PRE_COOKIE)


# ---- sign-in ------------------------------------------------------------------------------------


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> HTMLResponse:
    who = await visitor(request)
    if who.signed_in:
        raise Redirect(local_path(next))
    return page(
        request,
        who,
        "sign_in.html",
        title="Sign in",
        next=local_path(next),
        email="",
        signup_open=_signup_open(request),
    )


async def _check_password(request: Request, email: str, password: str) -> Login | None:
    """The login behind a right address and password, else None (the same work either way),
    with the throttle counted and consulted and the audit trail told."""
    portal = services(request)
    address = client(request)
    wait = await portal.throttle.retry_after(email, address)
    if wait is not None:
        await portal.audit.record("portal.sign_in_throttled", details={"retry_after": wait})
        raise Refused(429, f"Too many failed sign-ins. Try again in {wait} seconds.")
    login = await portal.logins.by_email(email)
    stored = login.password_hash if login is not None else None
    ok = await asyncio.to_thread(portal.passwords.verify, stored, password)
    if not ok or login is None or not login.user.active:
        await portal.throttle.failed(email, address)
        await portal.audit.record(
            "portal.sign_in_failed",
            organisation_id=login.user.organisation_id if login else None,
            target=login.user.user_id if login else None,
            details={"reason": "password"},
        )
        return None
    if portal.passwords.needs_rehash(login.password_hash):
        new_hash = await asyncio.to_thread(portal.passwords.hash, password)
        await portal.logins.rehash(login.user.user_id, login.password_hash, new_hash)
    return login


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    who = await visitor(request)
    data = await form(request, who)
    email = field(data, "email", 320)
    password = data.get("password")
    target = local_path(field(data, "next", 2000))
    login = await _check_password(request, email, password if isinstance(password, str) else "")
    if login is None:
        return page(
            request,
            who,
            "sign_in.html",
            status=400,
            title="Sign in",
            error=WRONG,
            email=email,
            next=target,
            signup_open=_signup_open(request),
        )
    portal = services(request)
    level = PARTIAL if login.user.two_factor else FULL
    # a new session id at sign-in, whatever cookie the browser came with (no fixation)
    session = await portal.sessions.start(
        login.user.user_id,
        level,
        replaces=read_cookie(request, SESSION_COOKIE),
        address=client(request),
        user_agent=request.headers.get("user-agent"),
    )
    if level == FULL:
        await portal.audit.record(
            "portal.signed_in",
            organisation_id=login.user.organisation_id,
            actor=login.user.user_id,
            details={"factors": 1},
        )
    response = redirect(target if level == FULL else f"{BASE}/sign-in/code?next={target}")
    _set_session(response, request, session.token)
    return response


async def _partial(request: Request) -> tuple[Visitor, Login]:
    who = await visitor(request)
    if who.session is None or who.user is None:
        raise Redirect(f"{BASE}/sign-in")
    if who.session.level == FULL:
        raise Redirect(f"{BASE}/")
    login = await services(request).logins.by_user(who.user.user_id)
    assert login is not None
    return who, login


async def _second_factor_passed(request: Request, who: Visitor, method: str) -> Response:
    portal = services(request)
    assert who.session is not None and who.user is not None
    session = await portal.sessions.start(
        who.user.user_id,
        FULL,
        replaces=who.session.token,
        address=client(request),
        user_agent=request.headers.get("user-agent"),
    )
    await portal.audit.record(
        "portal.signed_in",
        organisation_id=who.user.organisation_id,
        actor=who.user.user_id,
        details={"factors": 2, "second_factor": method},
    )
    response = redirect(local_path(request.query_params.get("next")))
    _set_session(response, request, session.token)
    return response


async def _second_factor_failed(
    request: Request,
    who: Visitor,
    method: str,
    error: str = "That code is not right, or was already used.",
) -> HTMLResponse:
    portal = services(request)
    assert who.user is not None
    await portal.throttle.failed(who.user.email, client(request))
    await portal.audit.record(
        "portal.sign_in_failed",
        organisation_id=who.user.organisation_id,
        target=who.user.user_id,
        details={"reason": method},
    )
    return page(
        request,
        who,
        "second_factor.html",
        status=400,
        title="Two-factor authentication",
        totp=who.user.totp,
        passkeys=who.user.passkeys,
        error=error,
    )


async def _not_throttled(request: Request, who: Visitor) -> None:
    assert who.user is not None
    wait = await services(request).throttle.retry_after(who.user.email, client(request))
    if wait is not None:
        raise Refused(429, f"Too many failed attempts. Try again in {wait} seconds.")


@router.get("/sign-in/code")
async def second_factor_page(request: Request) -> HTMLResponse:
    who, login = await _partial(request)
    return page(
        request,
        who,
        "second_factor.html",
        title="Two-factor authentication",
        totp=login.user.totp,
        passkeys=login.user.passkeys,
    )


@router.post("/sign-in/code")
async def second_factor(request: Request) -> Response:
    who, login = await _partial(request)
    data = await form(request, who)
    await _not_throttled(request, who)
    portal = services(request)
    enrolled = await portal.logins.totp_seed(login.user.user_id)
    if enrolled is not None:
        seed, last = enrolled
        step = totp.accepted_step(seed, field(data, "code", 20), last)
        if step is not None and await portal.logins.use_step(login.user.user_id, step):
            return await _second_factor_passed(request, who, "totp")
    return await _second_factor_failed(request, who, "totp")


@router.post("/sign-in/recovery")
async def recovery(request: Request) -> Response:
    who, login = await _partial(request)
    data = await form(request, who)
    await _not_throttled(request, who)
    portal = services(request)
    if await portal.logins.use_recovery_code(login.user.user_id, field(data, "code", 40)):
        left = await portal.logins.recovery_codes_left(login.user.user_id)
        await portal.audit.record(
            "portal.recovery_code_used",
            organisation_id=login.user.organisation_id,
            actor=login.user.user_id,
            details={"left": left},
        )
        return await _second_factor_passed(request, who, "recovery_code")
    return await _second_factor_failed(request, who, "recovery_code")


# ---- a fresh sign-in before changing how one signs in -------------------------------------------


@router.get("/reauthenticate")
async def reauthenticate_page(request: Request, next: str | None = None) -> HTMLResponse:
    who = await visitor(request)
    require(request, who)
    return page(request, who, "reauth.html", title="Confirm it is you", next=local_path(next))


async def _fresh_second_factor(request: Request, who: Visitor, passkey: object, code: str) -> bool:
    """A passkey's assertion when the page sent one (the user has passkeys), else the code
    from the authenticator app (when the user has TOTP)."""
    portal = services(request)
    assert who.session is not None and who.user is not None
    user = who.user
    if isinstance(passkey, str) and passkey and user.passkeys:
        try:
            rp = relying_party_of(request, portal.settings.resolved_public_url)
            await portal.passkeys.authenticate(who.session, user.user_id, rp, passkey[:20_000])
        except PasskeyError:
            return False
        return True
    enrolled = await portal.logins.totp_seed(user.user_id) if user.totp else None
    step = None if enrolled is None else totp.accepted_step(enrolled[0], code, enrolled[1])
    return step is not None and await portal.logins.use_step(user.user_id, step)


@router.post("/reauthenticate")
async def reauthenticate(request: Request) -> Response:
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    portal = services(request)
    target = local_path(field(data, "next", 2000))
    password = data.get("password")
    login = await _check_password(
        request, user.email, password if isinstance(password, str) else ""
    )
    ok = login is not None
    if ok and user.two_factor:  # the password and the second factor, as at sign-in
        ok = await _fresh_second_factor(request, who, data.get("passkey"), field(data, "code", 20))
        if not ok:
            await portal.throttle.failed(user.email, client(request))
    if not ok:
        return page(
            request,
            who,
            "reauth.html",
            status=400,
            title="Confirm it is you",
            next=target,
            error="That did not match. Try again.",
        )
    assert who.session is not None
    session = await portal.sessions.start(
        user.user_id,
        FULL,
        replaces=who.session.token,
        address=client(request),
        user_agent=request.headers.get("user-agent"),
    )
    response = redirect(target)
    _set_session(response, request, session.token)
    return response


# ---- sign-out -----------------------------------------------------------------------------------


@router.post("/sign-out")
async def sign_out(request: Request) -> Response:
    who = await visitor(request)
    await form(request, who)
    if who.session is not None:
        await services(request).sessions.end(who.session.token)
    response = redirect(f"{BASE}/sign-in")
    clear_cookie(response, request, SESSION_COOKIE)
    return response


@router.post("/sign-out-everywhere")
async def sign_out_everywhere(request: Request) -> Response:
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    portal = services(request)
    count = await portal.sessions.end_all(user.user_id)
    await portal.audit.record(
        "portal.signed_out_everywhere",
        organisation_id=user.organisation_id,
        target=user.user_id,
        details={"sessions": count},
    )
    response = redirect(f"{BASE}/sign-in")
    clear_cookie(response, request, SESSION_COOKIE)
    return response
