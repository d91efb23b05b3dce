"""The API Credentials page: the user's key (its hint; rotated, revoked, issued anew) and the
organisation's restricted keys (created from a form, listed, revoked). Each action asks the
role the API's operation declares (api/auth.py) and goes through the gateway's own services,
so the page allows and refuses what the API does, in the same words. A new key is shown once
(OWASP API2:2023); issuing one needs a fresh sign-in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from crmgate.api.auth import (
    GatewayAccess,
    KeyCreator,
    KeyDeleter,
    KeyReader,
    UserKeyRotator,
)
from crmgate.api.routes.keys import RestrictedKeyCreate, issue
from crmgate.portal.logins import PortalUser, stamp
from crmgate.portal.scope_form import (
    ACTIONS,
    SOME,
    Submitted,
    entities,
    expiry,
    problems,
    summary,
)
from crmgate.portal.web import (
    BASE,
    Refused,
    Visitor,
    form,
    page,
    redirect,
    require,
    require_fresh,
    services,
    visitor,
)
from crmgate.security.keys import KeyKind
from crmgate.security.scopes import at_least
from crmgate.store.accounts import AccountError, Role
from crmgate.store.models import utcnow

router = APIRouter(prefix=BASE, include_in_schema=False)
PAGE = f"{BASE}/credentials"
PAGE_SIZE = 50


def role_of(declared: object) -> Role:
    """The role an API operation's principal declares (api/auth.py)."""
    for extra in get_args(declared)[1:]:
        access = getattr(extra, "dependency", None)
        if isinstance(access, GatewayAccess):
            return access.role
    raise TypeError(f"{declared!r} declares no role")


CHANGE_OWN_KEY = role_of(UserKeyRotator)  # revoking one's own key asks the same
READ_KEYS = role_of(KeyReader)
ISSUE_KEYS = role_of(KeyCreator)
REVOKE_KEYS = role_of(KeyDeleter)


def _may(user: PortalUser, role: Role) -> bool:
    return at_least(user.role, role)


def _need(user: PortalUser, role: Role) -> None:
    if not _may(user, role):
        raise Refused(
            403, f"This needs the {role} role in your organisation; yours is {user.role}."
        )


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A restricted key as the list shows it."""

    id: str
    hint: str
    description: str
    acts_for: str
    scope: list[tuple[str, str]]
    expires: str
    expired: bool
    created: str
    last_used: str


async def _application_names(request: Request, organisation_id: str) -> dict[str, str]:
    views = await services(request).applications.store.list_page(organisation_id, page_size=100)
    return {
        view.key: f"{view.type}{' · ' + view.description if view.description else ''} "
        f"({view.key[:8]}…)"
        for view in views
    }


async def _credentials_page(
    request: Request, who: Visitor, status: int = 200, **context: Any
) -> HTMLResponse:
    user = require(request, who)
    portal = services(request)
    me = await portal.accounts.get_user(user.organisation_id, user.user_id)
    shown: dict[str, Any] = {"may_read_keys": _may(user, READ_KEYS)}
    if shown["may_read_keys"]:
        number = _page_number(request)
        applications = await _application_names(request, user.organisation_id)
        members = await portal.accounts.list_users(user.organisation_id, page_size=200)
        names = {member.id: f"{member.name} ({member.email})" for member in members}
        views = await portal.restricted_keys.list_page(
            user.organisation_id, page=number, page_size=PAGE_SIZE
        )
        now = utcnow()
        rows = []
        for view in views:
            expires, expired = expiry(view.scope, now)
            rows.append(
                KeyRow(
                    id=view.id,
                    hint=view.hint,
                    description=view.description or "",
                    acts_for="you" if view.user_id == user.user_id else names.get(view.user_id, ""),
                    scope=summary(view.scope, applications),
                    expires=expires,
                    expired=expired,
                    created=stamp(view.created_at),
                    last_used=stamp(view.last_used_at) or "never",
                )
            )
        shown |= {
            "keys": rows,
            "total": await portal.restricted_keys.count(user.organisation_id),
            "page_number": number,
            "more": len(views) == PAGE_SIZE,
            "applications": applications,
            "members": [(member.id, names[member.id]) for member in members],
            "entities": entities(),
            "actions": [action.value for action in ACTIONS],
            "some": SOME,
            "form": context.pop("form", None) or Submitted(user=user.user_id),
        }
    return page(
        request,
        who,
        "credentials.html",
        status=status,
        title="API credentials",
        key_hint=me.key_hint,
        last_used=stamp(me.last_used_at) or "never",
        may_change_key=_may(user, CHANGE_OWN_KEY),
        may_issue=_may(user, ISSUE_KEYS),
        may_revoke=_may(user, REVOKE_KEYS),
        **shown,
        **context,
    )


def _page_number(request: Request) -> int:
    raw = request.query_params.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < int(raw) <= 10_000 else 1


NOTICES = {
    "user-key": "Your user key was revoked: calls with it are refused from now on.",
    "restricted": "The restricted key was revoked: calls with it are refused from now on.",
}


@router.get("/credentials")
async def credentials(request: Request, revoked: str | None = None) -> HTMLResponse:
    return await _credentials_page(
        request, await visitor(request), notice=NOTICES.get(revoked or "")
    )


# ---- the user's own key -------------------------------------------------------------------------


@router.post("/credentials/user-key/rotate")
async def rotate(request: Request) -> HTMLResponse:
    """Revoke the user's key and issue a new one (also: issue one after a revocation)."""
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    _need(user, CHANGE_OWN_KEY)
    require_fresh(request, who, PAGE)
    issued = await services(request).accounts.rotate_key(user.user_id, user.organisation_id)
    return page(
        request,
        who,
        "key_shown.html",
        title="Your new user key",
        secret=issued.secret,
        restricted=False,
    )


@router.post("/credentials/user-key/revoke")
async def revoke(request: Request) -> Response:
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    _need(user, CHANGE_OWN_KEY)
    await services(request).accounts.revoke_keys(
        user.user_id, user.organisation_id, kind=KeyKind.USER
    )
    return redirect(f"{PAGE}?revoked=user-key")


# ---- restricted keys ----------------------------------------------------------------------------


@router.post("/credentials/restricted")
async def create_restricted(request: Request) -> HTMLResponse:
    who = await visitor(request)
    user = require(request, who)
    data = await form(request, who)
    _need(user, ISSUE_KEYS)
    require_fresh(request, who, PAGE)
    submitted = Submitted.read(data)
    portal = services(request)
    try:
        body = RestrictedKeyCreate.model_validate(submitted.body(user.user_id))
        view, issued = await issue(portal.restricted_keys, who.principal, body)
    except ValidationError as refused:
        error = problems(refused)
    except AccountError as refused:
        error = refused.message
    else:
        applications = await _application_names(request, user.organisation_id)
        return page(
            request,
            who,
            "key_shown.html",
            title="Your new restricted key",
            secret=issued.secret,
            restricted=True,
            hint=view.hint,
            scope=summary(view.scope, applications),
            expires=expiry(view.scope, utcnow())[0],
        )
    return await _credentials_page(request, who, 400, error=error, form=submitted)


@router.post("/credentials/restricted/{key_id}/revoke")
async def revoke_restricted(request: Request, key_id: str) -> Response:
    who = await visitor(request)
    user = require(request, who)
    await form(request, who)
    _need(user, REVOKE_KEYS)
    try:
        await services(request).restricted_keys.revoke(user.organisation_id, key_id[:60])
    except AccountError as refused:
        raise Refused(refused.status, "There is no such key (it may be revoked already).") from None
    return redirect(f"{PAGE}?revoked=restricted")
