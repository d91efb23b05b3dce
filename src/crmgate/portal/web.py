"""What every portal page shares: the services it uses, templates, cookies, forms with their
CSRF check, and who is signed in. Pages answer HTML; a refusal is a page too, never the API's
JSON error (the portal is for people)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.datastructures import FormData

from crmgate.portal.logins import PortalUser
from crmgate.portal.service import Portal
from crmgate.portal.sessions import FULL, Session, csrf_valid
from crmgate.portal.sessions import csrf_token as csrf_of
from crmgate.store.accounts import Principal

BASE = "/portal"
SESSION_COOKIE = "crmgate_portal"
PRE_COOKIE = "crmgate_portal_pre"

templates = Environment(
    loader=PackageLoader("crmgate.portal", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


class Refused(Exception):
    """A request the portal answers with an error page (status and a sentence for a person)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Redirect(Exception):
    def __init__(self, location: str) -> None:
        super().__init__(location)
        self.location = location


def services(request: Request) -> Portal:
    found: Portal = request.app.state.services.portal
    return found


def is_secure(request: Request) -> bool:
    return request.url.scheme == "https"


def cookie_name(base: str, secure: bool) -> str:
    # __Host-: only over TLS, Path=/, no Domain; a sibling host cannot plant it (RFC 6265bis)
    return f"__Host-{base}" if secure else base


def set_cookie(response: Response, request: Request, base: str, value: str) -> None:
    secure = is_secure(request)
    response.set_cookie(
        cookie_name(base, secure),
        value,
        path="/",
        secure=secure,
        httponly=True,
        samesite="lax",  # sent on a top-level navigation back from a CRM's OAuth page
    )


def clear_cookie(response: Response, request: Request, base: str) -> None:
    secure = is_secure(request)
    response.delete_cookie(
        cookie_name(base, secure), path="/", secure=secure, httponly=True, samesite="lax"
    )


def read_cookie(request: Request, base: str) -> str | None:
    return request.cookies.get(cookie_name(base, is_secure(request)))


def client(request: Request) -> str | None:
    address = request.scope.get("state", {}).get("client_address")
    return str(address) if address else None


def local_path(target: str | None, default: str = BASE + "/") -> str:
    """``target`` when it is a path of the portal (no scheme, no host, no ``//``: never an open
    redirect), else ``default``."""
    if not target or not target.startswith(BASE + "/") or target.startswith("//"):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or "\\" in target:
        return default
    return target


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who asks: their session and user when signed in, and the token their forms carry."""

    session: Session | None
    user: PortalUser | None
    csrf: str
    new_pre_cookie: str | None = None  # to set on the answer (first visit)

    @property
    def signed_in(self) -> bool:
        return self.session is not None and self.session.level == FULL and self.user is not None

    @property
    def principal(self) -> Principal:
        """The signed-in user as the gateway's services know a caller: with their role, and a
        credential named after the portal session (the audit trail tells it from a key)."""
        assert self.session is not None and self.user is not None
        return Principal(
            user_id=self.user.user_id,
            organisation_id=self.user.organisation_id,
            role=self.user.role,
            key_id=f"portal:{self.session.id}",
            key_hint="portal",
            key_last_used_at=None,
        )


CROSS_SITE = (
    "This form was not sent from this portal's own page (or the page was too old). "
    "Go back, reload the page and try again."
)


async def visitor(request: Request) -> Visitor:
    """Who asks. A write from another site is refused here, before anything else looks at it
    (its token is checked by ``form``)."""
    if request.method not in ("GET", "HEAD") and not _same_origin(request):
        raise Refused(403, CROSS_SITE)
    portal = services(request)
    token = read_cookie(request, SESSION_COOKIE)
    session = await portal.sessions.load(token)
    if session is not None:
        login = await portal.logins.by_user(session.user_id)
        if login is not None and login.user.active:
            who = Visitor(session, login.user, session.csrf)
            if who.signed_in:  # the audit trail and the access log name the user
                request.scope.setdefault("state", {})["principal"] = who.principal
            return who
        await portal.sessions.end(session.token)
    pre = read_cookie(request, PRE_COOKIE)
    if pre and 20 <= len(pre) <= 100:
        return Visitor(None, None, csrf_of(pre))
    pre = secrets.token_urlsafe(32)
    return Visitor(None, None, csrf_of(pre), new_pre_cookie=pre)


def _same_origin(request: Request) -> bool:
    """Fetch Metadata and Origin, where the browser sends them: a cross-site form post is
    refused before its token is even looked at (defence in depth: the token decides)."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        # "null": what a browser sends under Referrer-Policy no-referrer (ours); Fetch
        # Metadata above has spoken for it
        return True
    own = f"{request.url.scheme}://{request.headers.get('host', '')}"
    return origin == own


async def form(request: Request, who: Visitor) -> FormData:
    """The posted form, after its CSRF token and origin are checked (403 page otherwise)."""
    # 300: the restricted-key form's every box ticked (28 entity rows x 4 actions, up to 100
    # applications) still fits
    data = await request.form(max_files=0, max_fields=300)
    browser = who.session.token if who.session is not None else read_cookie(request, PRE_COOKIE)
    submitted = data.get("csrf")
    if not _same_origin(request) or not csrf_valid(
        browser, submitted if isinstance(submitted, str) else None
    ):
        raise Refused(403, CROSS_SITE)
    return data


def header_csrf(request: Request, who: Visitor) -> None:
    """For a script's request (a passkey ceremony's options): the CSRF token comes in the
    X-CSRF-Token header, checked with the origin exactly as ``form`` checks a form."""
    browser = who.session.token if who.session is not None else read_cookie(request, PRE_COOKIE)
    if not _same_origin(request) or not csrf_valid(browser, request.headers.get("x-csrf-token")):
        raise Refused(403, "This request did not come from this portal's own page. Reload it.")


def require(request: Request, who: Visitor, *, admin: bool = False) -> PortalUser:
    """The signed-in user, or a redirect to where they must go first (sign-in, the second
    factor, two-factor enrolment when their organisation requires it), or a 403 page for a
    page only admins may open: checked by the server on every request, links or no links."""
    if who.session is None or who.user is None:
        raise Redirect(f"{BASE}/sign-in?next={quote(request.url.path)}")
    if who.session.level != FULL:
        raise Redirect(f"{BASE}/sign-in/code")
    if (
        who.user.require_two_factor
        and not who.user.two_factor
        and not request.url.path.startswith(f"{BASE}/security")
    ):
        raise Redirect(f"{BASE}/security")
    if admin and not who.user.is_admin:
        raise Refused(403, "Only an admin of your organisation can do this.")
    return who.user


def require_fresh(request: Request, who: Visitor, back: str) -> None:
    """A recent sign-in, for changes to how the user signs in (else: confirm it is you)."""
    assert who.session is not None
    if not who.session.fresh(services(request).settings.portal_fresh_sign_in):
        raise Redirect(f"{BASE}/reauthenticate?next={quote(back)}")


def field(data: FormData, name: str, limit: int = 1000) -> str:
    value = data.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def page(
    request: Request,
    who: Visitor,
    template: str,
    status: int = 200,
    **context: Any,
) -> HTMLResponse:
    body = templates.get_template(template).render(
        user=who.user,
        csrf=who.csrf,
        path=request.url.path,
        base=BASE,
        **context,
    )
    response = HTMLResponse(body, status_code=status)
    if who.new_pre_cookie is not None:
        set_cookie(response, request, PRE_COOKIE, who.new_pre_cookie)
    return response


def redirect(
    location: str, cookies: Mapping[str, str | None] | None = None, request: Request | None = None
) -> RedirectResponse:
    response = RedirectResponse(location, status_code=303)
    for name, value in (cookies or {}).items():
        assert request is not None
        if value is None:
            clear_cookie(response, request, name)
        else:
            set_cookie(response, request, name, value)
    return response
