"""The developer portal, served by crmgate itself under /portal: server-rendered pages
(Jinja2), a little vendored JavaScript, no CDN. A file per concept: ``passwords`` (argon2id),
``totp`` (RFC 6238), ``sessions`` (server-side sessions and CSRF tokens), ``logins`` (who may sign
in, with which factors), ``throttle`` (failed sign-ins), ``mail`` (SMTP), ``web`` (what every
page shares), ``headers`` (CSP and friends), ``service`` (the portal's objects); the pages are
in ``routes/``. docs/portal.md tells how it is used."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from crmgate.portal.routes import (
    account,
    applications,
    connect,
    credentials,
    invitation,
    members,
    passkeys,
    password_reset,
    security,
)
from crmgate.portal.routes import audit as audit_page
from crmgate.portal.routes import usage as usage_page
from crmgate.portal.web import BASE, Redirect, Refused, templates

STATIC = Path(__file__).with_name("static")


def install(app: FastAPI) -> None:
    app.include_router(account.router)
    app.include_router(security.router)
    app.include_router(passkeys.router)
    app.include_router(credentials.router)
    app.include_router(applications.router)
    app.include_router(connect.router)
    app.include_router(usage_page.router)
    app.include_router(audit_page.router)
    app.include_router(members.router)
    app.include_router(invitation.router)
    app.include_router(password_reset.router)
    app.mount(f"{BASE}/static", StaticFiles(directory=STATIC), name="portal-static")

    async def refused(request: Request, exc: Exception) -> HTMLResponse:
        assert isinstance(exc, Refused)
        body = templates.get_template("message.html").render(
            user=None,
            csrf="",
            path=request.url.path,
            base=BASE,
            title="Not possible" if exc.status != 429 else "Slow down",
            message=exc.message,
            link=f"{BASE}/",
            link_text="Back to the portal",
        )
        return HTMLResponse(body, status_code=exc.status)

    async def redirected(request: Request, exc: Exception) -> RedirectResponse:
        assert isinstance(exc, Redirect)
        return RedirectResponse(exc.location, status_code=303)

    app.add_exception_handler(Refused, refused)
    app.add_exception_handler(Redirect, redirected)
