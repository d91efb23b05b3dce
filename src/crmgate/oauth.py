"""The OAuth authorization flow (oAuth-internal): crmgate's registered client sends the browser
to the CRM and takes the code back, following RFC 9700 (OAuth 2.0 Security BCP).

    GET /authorization/oauth/{Platform}/authorize?redirect=<url>      (the contract's entry)
    GET /authorization/oauth/{Platform}/authorize?session=<token>     (application mode)
    GET /authorization/oauth/{Platform}/callback?code=...&state=...   (the CRM sends it back)

- ``redirect`` must equal one of the operator's allowed redirects exactly; anything else is a
  400 and no redirect at all.
  The developer portal's own flows (mode ``portal``: application mode started by the portal)
  go back to a page of the portal instead (``check_own_page``), never to one a request names.
- ``state`` is 256 random bits, stored only as a digest, single-use, expiring (10 minutes), and
  bound to the browser by a cookie holding another random value (only its digest is stored).
- PKCE S256 wherever the platform supports it; the verifier is sealed by the vault.
- ``&entities=contact,task`` asks only those entities' scopes where the descriptor names
  scopes per entity (connectors/entity_scopes.py); the granted ones are sealed with the
  application.
- The callback consumes the flow first (a second callback with the same state fails), checks the
  cookie, checks ``iss`` where the CRM sends one (mix-up defence), exchanges the code, and sends
  the browser to ``redirect``: in the contract's mode with the tokens in the fragment, in
  application mode (the safer one: tokens never leave crmgate) with only ``application_key``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from sqlalchemy import delete, func, select
from yarl import URL

from crmgate.applications import ApplicationService
from crmgate.connectors import entity_scopes
from crmgate.connectors.catalogue import Platform
from crmgate.connectors.errors import CrmError
from crmgate.outbound import OutboundRefused
from crmgate.security.vault import Sealed, Vault
from crmgate.settings import OAuthClient
from crmgate.store.accounts import AccountError, AccountStore, Principal, Role, UserStatus
from crmgate.store.db import SessionFactory
from crmgate.store.models import OAuthFlow, utcnow

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sqlalchemy.ext.asyncio import AsyncSession

    from crmgate.audit import AuditLog

    # Run in the transaction that stores the application of a portal flow (own_page), with the
    # flow and the application's key: a connect link is used up there (one link, one application)
    PortalHook = Callable[[AsyncSession, OAuthFlow, str], Awaitable[None]]

log = logging.getLogger("crmgate.oauth")

COOKIE_PATH = "/authorization/oauth/"
_OWN_PAGE = re.compile(r"/portal/[A-Za-z0-9_./-]+")  # what check_own_page lets through
FLOW_LIFETIME = timedelta(minutes=10)
MAX_PENDING_FLOWS = 10_000  # flows started and not finished, across all platforms


class FlowRefused(AccountError):
    """A request of the flow that must not redirect anywhere: 400 in the contract's shape."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(400, "NOT_VALID", message, field)


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def _with_fragment(redirect: str, values: dict[str, str]) -> str:
    return f"{redirect}#{urlencode(values)}"


@dataclass(frozen=True)
class Started:
    """Where to send the browser, and the cookie that binds the flow to it."""

    location: str
    cookie_name: str
    cookie: str


def cookie_name(state: str, secure: bool) -> str:
    """One cookie per flow (two tabs do not undo each other), named after its state. Over https
    the ``__Host-`` prefix: Secure, this host only, so no sibling domain can plant one."""
    return f"{'__Host-' if secure else ''}crmgate_oauth_{digest(state)[:16]}"


class OAuthFlows:
    def __init__(
        self,
        sessions: SessionFactory,
        vault: Vault,
        accounts: AccountStore,
        applications: ApplicationService,
        clients: dict[str, OAuthClient],
        public_url: str,
        audit: AuditLog | None = None,
    ) -> None:
        self._audit = audit
        self._sessions = sessions
        self._vault = vault
        self.accounts = accounts
        self.applications = applications
        self.clients = clients
        self.public_url = public_url.rstrip("/")
        self.secure = self.public_url.startswith("https://")
        self.portal_hooks: list[PortalHook] = []

    # ---- checks ---------------------------------------------------------------------------------

    def platform(self, platform_type: str) -> tuple[Platform, OAuthClient]:
        platform = self.applications.catalogue.get(platform_type)
        if platform is None or platform.oauth is None:
            raise FlowRefused(f"no OAuth platform {platform_type[:40]!r}", "platform")
        if platform.authorization_for("oAuth-internal") is None:
            raise FlowRefused(f"{platform.name} has no oAuth-internal authorization", "platform")
        client = self.clients.get(platform.type)
        if client is None:
            raise FlowRefused(
                f"crmgate has no OAuth client for {platform.type}: the operator configures one "
                "in CRMGATE_OAUTH_CLIENTS",
                "platform",
            )
        return platform, client

    @staticmethod
    def check_redirect(client: OAuthClient, redirect: str | None) -> str:
        """Exact match against the operator's allow-list: crmgate is never an open redirector."""
        if not redirect or redirect not in client.redirects:
            raise FlowRefused(
                "redirect must be one of the redirect URLs the operator allows for this platform",
                "redirect",
            )
        return redirect

    def check_own_page(self, redirect: str) -> str:
        """A page of crmgate's own portal, which the portal names itself (never a request):
        this gateway's public URL, then /portal/ and a plain path. It needs no place on the
        operator's list, and nothing else passes: no other host, query, fragment, escape or
        dot segment."""
        path = urlsplit(redirect).path
        if (
            redirect != f"{self.public_url}{path}"
            or not _OWN_PAGE.fullmatch(path)
            or any(part in ("", ".", "..") for part in path.split("/")[1:])
        ):
            raise FlowRefused("redirect must be a page of this gateway's portal", "redirect")
        return redirect

    def callback_url(self, platform: Platform) -> str:
        return f"{self.public_url}/authorization/oauth/{platform.type}/callback"

    # ---- application mode: a session asked for server to server ------------------------------

    async def open_session(
        self,
        principal: Principal,
        platform_type: str,
        redirect: str,
        description: str,
        application_key: str | None = None,
        instance_url: str | None = None,
        *,
        own_page: bool = False,
    ) -> tuple[str, datetime]:
        """A one-time token for ``/authorize?session=``: the flow will create the application
        for the caller's organisation (or authorize ``application_key`` again) and return only
        its key. ``own_page``: the portal's flow, back to a page of the portal (check_own_page),
        whose ``portal_hooks`` run with the application."""
        platform, client = self.platform(platform_type)
        if own_page:
            self.check_own_page(redirect)
        else:
            self.check_redirect(client, redirect)
        if application_key is not None:
            existing = await self.applications.store.get(principal.organisation_id, application_key)
            if existing.type != platform.type:
                raise FlowRefused(f"the application is a {existing.type} one", "application_key")
            stored = existing.public_credential.get("instance_url")
            if platform.oauth and platform.oauth.instance_scoped and stored:
                # authorized again for the organisation it is for, never moved to another
                if instance_url and instance_url.rstrip("/") != stored.rstrip("/"):
                    raise FlowRefused(
                        "instance_url: the application is for another instance", "instance_url"
                    )
                instance_url = stored
        instance = self.check_instance(platform, instance_url)
        token = secrets.token_urlsafe(32)
        expires = utcnow() + FLOW_LIFETIME
        async with self._sessions.begin() as session:
            session.add(
                OAuthFlow(
                    id=uuid.uuid4().hex,
                    session_hash=digest(token),
                    platform=platform.type,
                    mode="portal" if own_page else "application",
                    redirect=redirect,
                    organisation_id=principal.organisation_id,
                    user_id=principal.user_id,
                    description=description,
                    application_key=application_key,
                    instance_url=instance,
                    expires_at=expires,
                )
            )
        return token, expires

    def check_instance(self, platform: Platform, instance_url: str | None) -> str | None:
        """The flow's instance: required, and one of the platform's hosts, where the
        authorization is per instance; refused where it is not (it would be ignored)."""
        assert platform.oauth is not None
        if not platform.oauth.instance_scoped:
            if not instance_url:
                return None
            if not platform.oauth.authorize_in_region:  # else it names the login server's region
                raise FlowRefused(f"{platform.type} takes no instance_url", "instance_url")
        elif not instance_url:
            raise FlowRefused(
                f"instance_url: {platform.name} authorizes one organisation at a time; name its "
                "URL (e.g. https://org.crm.dynamics.com)",
                "instance_url",
            )
        try:
            connector = self.applications.connector(platform)
            instance = connector.instance_url(instance_url)
            connector.check_flow_instance(instance)
            return str(instance)
        except (CrmError, OutboundRefused, ValueError) as refused:
            message = getattr(refused, "message", None) or str(refused)
            raise FlowRefused(f"instance_url: {message}", "instance_url") from None

    # ---- the browser's way there --------------------------------------------------------------

    async def begin(
        self,
        platform_type: str,
        redirect: str | None,
        session_token: str | None,
        instance_url: str | None = None,
        entities: str | None = None,
    ) -> Started:
        """``entities``: only these entities' scopes are asked (incremental authorization)."""
        platform, client = self.platform(platform_type)
        oauth = platform.oauth
        assert oauth is not None
        try:
            named = entity_scopes.chosen(oauth, entities) if entities is not None else ()
        except ValueError as wrong:
            raise FlowRefused(f"entities: {wrong}", "entities") from None
        checked = None if session_token else self.check_redirect(client, redirect)
        instance = None if session_token else self.check_instance(platform, instance_url)
        if session_token and instance_url:  # the session names its instance, or none
            raise FlowRefused("instance_url: the session's instance is fixed", "instance_url")
        state = secrets.token_urlsafe(32)
        browser = secrets.token_urlsafe(32)
        verifier = secrets.token_urlsafe(64) if oauth.pkce else None
        now = utcnow()
        async with self._sessions.begin() as session:
            # flows nobody finished go as new ones start (indexed; refused anyway once expired)
            await session.execute(delete(OAuthFlow).where(OAuthFlow.expires_at < now))
            pending = await session.scalar(select(func.count()).select_from(OAuthFlow))
            if int(pending or 0) >= MAX_PENDING_FLOWS:
                raise AccountError(
                    429,
                    "RATE_LIMITED",
                    "too many authorizations are in progress; try again in a few minutes",
                )
            if session_token:
                flow = await session.scalar(
                    select(OAuthFlow)
                    .where(
                        OAuthFlow.session_hash == digest(session_token),
                        OAuthFlow.platform == platform.type,
                        OAuthFlow.state_hash.is_(None),
                    )
                    .with_for_update()
                )
                if flow is None or flow.expires_at <= now:
                    raise FlowRefused("the session is unknown, used or expired", "session")
                flow_id = flow.id
                instance = flow.instance_url
            else:
                assert checked is not None
                flow_id = uuid.uuid4().hex
                flow = OAuthFlow(
                    id=flow_id,
                    platform=platform.type,
                    mode="fragment",
                    redirect=checked,
                    instance_url=instance,
                    expires_at=now + FLOW_LIFETIME,
                )
                session.add(flow)
            flow.state_hash = digest(state)
            flow.browser_hash = digest(browser)
            flow.expires_at = min(flow.expires_at, now + FLOW_LIFETIME)
            if verifier is not None:
                sealed = self._vault.encrypt(verifier.encode(), _context(flow_id))
                flow.key_version, flow.verifier = sealed.version, sealed.blob
        query = {
            **oauth.authorize_params,
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": self.callback_url(platform),
            "state": state,
            "scope": oauth.scope_separator.join(
                scope.replace("{instance}", instance or "")
                for scope in entity_scopes.asked(oauth, client.scopes, named)
            ),
        }
        if verifier is not None:
            query |= {"code_challenge": _s256(verifier), "code_challenge_method": "S256"}
        if oauth.prompt:
            query["prompt"] = oauth.prompt
        # an instance-scoped flow may consent on the instance itself ("{instance}/oauth/...")
        authorize = oauth.authorize_url.replace("{instance}", (instance or "").rstrip("/"))
        authorize = self.applications.connector(platform).authorize_at(authorize, instance)
        location = str(URL(authorize).with_query(query))
        return Started(location, cookie_name(state, self.secure), browser)

    async def finish(self, platform_type: str, params: dict[str, str], cookie: str | None) -> str:
        """The URL the browser is sent back to (with the result in the fragment). Raises
        FlowRefused, with no redirect, when the request is not the end of a flow this browser
        started."""
        platform, client = self.platform(platform_type)
        state = params.get("state") or ""
        if not state or not cookie:
            raise FlowRefused("state and the flow's cookie are required", "state")
        async with self._sessions.begin() as session:
            flow = await session.scalar(
                select(OAuthFlow).where(OAuthFlow.state_hash == digest(state)).with_for_update()
            )
            if flow is None or flow.platform != platform.type:
                raise FlowRefused("unknown or used state", "state")
            # Another browser's callback (a stolen or replayed URL) is refused and does not spend
            # the state of the browser that started the flow.
            if not secrets.compare_digest(flow.browser_hash or "", digest(cookie)):
                raise FlowRefused("this browser did not start the flow", "state")
            # Consumed before anything else is done with it: a state works once.
            await session.execute(delete(OAuthFlow).where(OAuthFlow.id == flow.id))
        if flow.expires_at <= utcnow():
            # the browser is the one that started it, and the redirect is one the operator
            # allows: tell the client's page rather than strand the user on an error
            return _with_fragment(
                flow.redirect,
                {
                    "error": "access_denied",
                    "error_description": "the authorization took too long; start again",
                },
            )
        if "error" in params:
            return _with_fragment(
                flow.redirect,
                {
                    "error": params["error"][:100],
                    "error_description": params.get("error_description", "")[:300],
                },
            )
        expected_issuer = _origin(platform, flow.instance_url)
        if params.get("iss") and params["iss"].rstrip("/") != expected_issuer:
            log.warning(
                "oauth: %s callback from issuer %r refused", platform.type, params["iss"][:100]
            )
            return _with_fragment(
                flow.redirect,
                {"error": "invalid_request", "error_description": "unexpected issuer"},
            )
        if not params.get("code"):
            return _with_fragment(
                flow.redirect,
                {"error": "invalid_request", "error_description": "the CRM sent no code"},
            )
        form = {
            "grant_type": "authorization_code",
            "code": params["code"],
            "redirect_uri": self.callback_url(platform),
        }
        if flow.verifier is not None and flow.key_version is not None:
            sealed = Sealed(flow.key_version, flow.verifier)
            form["code_verifier"] = self._vault.decrypt(sealed, _context(flow.id)).decode()
        connector = self.applications.connector(platform)
        fields: dict[str, str] = {}
        try:
            # the account a callback names is of the region whose login server authorized
            authorized_at = connector.authorize_at(expected_issuer, flow.instance_url)
            connector.check_callback_region(params, authorized_at)
            # the token endpoint of this callback: the platform's, or one the connector
            # chooses from it (Zoho: the data centre of the user's account), checked
            fields, derived = await connector.token_request(
                form, client, connector.code_token_url(params)
            )
            if (named := connector.callback_instance(params)) is not None:
                fields["instance_url"] = str(named)  # the one the user chose (Kommo)
            elif flow.instance_url:  # the instance the user authorized, not one an answer names
                fields["instance_url"] = flow.instance_url
            if flow.mode == "fragment":
                await self._record("oauth.connected", flow, None)
                return _with_fragment(flow.redirect, _contract_fragment(fields))
            # oauth.connected is written with the application, in its transaction
            granted = entity_scopes.kept(derived)  # sealed with the credential
            key = await self._store_application(flow, platform, fields, granted)
        except Exception as failure:
            message = getattr(failure, "message", None) or "crmgate could not finish it"
            if not isinstance(failure, (CrmError, AccountError)):
                log.error("oauth: %s flow failed", platform.type, exc_info=failure)
            else:
                log.warning("oauth: %s flow failed: %s", platform.type, message)
            if fields.get("refresh_token"):  # tokens nobody will keep: revoke them
                await self.applications.revoke_tokens(platform, fields)
            code = getattr(failure, "code", None) or type(failure).__name__
            await self._record("oauth.failed", flow, flow.application_key, error=code)
            return _with_fragment(
                flow.redirect, {"error": "server_error", "error_description": message[:300]}
            )
        return _with_fragment(flow.redirect, {"application_key": key})

    async def _record(
        self,
        event: str,
        flow: OAuthFlow,
        key: str | None,
        session: AsyncSession | None = None,
        **extra: str,
    ) -> None:
        """The end of a flow (the browser's callback: its address and request id); with
        ``session``, in the transaction of the application it created or authorized."""
        if self._audit is not None:
            await self._audit.record(
                event,
                organisation_id=flow.organisation_id,  # none in the contract's mode
                actor=flow.user_id or "anonymous",
                target=key,
                details={"platform": flow.platform, "mode": flow.mode, **extra},
                session=session,
            )

    async def _store_application(
        self, flow: OAuthFlow, platform: Platform, fields: dict[str, str], derived: dict[str, str]
    ) -> str:
        """Application mode: create the application, or authorize the named one again, for the
        organisation of the session, if the admin who asked for it still is one."""
        gone = AccountError(403, "NOT_ALLOWED", "the admin who opened the session is no more")
        if flow.organisation_id is None or flow.user_id is None:
            raise gone
        try:
            user = await self.accounts.get_user(flow.organisation_id, flow.user_id)
        except AccountError:
            raise gone from None
        if user.role is not Role.ADMIN or user.status is not UserStatus.ACTIVE:
            raise gone
        principal = Principal(
            user_id=flow.user_id,
            organisation_id=flow.organisation_id,
            role=Role.ADMIN,
            key_id="",
            key_hint="",
            key_last_used_at=None,
        )

        async def connected(session: AsyncSession, key: str) -> None:
            await self._record("oauth.connected", flow, key, session)
            if flow.mode == "portal":
                for hook in self.portal_hooks:
                    await hook(session, flow, key)

        if flow.application_key is not None:
            updated = await self.applications.update(
                principal,
                flow.application_key,
                platform_type=platform.type,
                authorization="oAuth-internal",
                credential=fields,
                description=flow.description or None,
                also=connected,
                derived=derived,
            )
            return updated.key
        view = await self.applications.create(
            principal,
            platform_type=platform.type,
            authorization="oAuth-internal",
            credential=fields,
            description=flow.description,
            also=connected,
            derived=derived,
        )
        return view.key


def _context(flow_id: str) -> bytes:
    return f"oauth-flow|{flow_id}".encode()


def _origin(platform: Platform, instance: str | None = None) -> str:
    assert platform.oauth is not None
    url = URL(platform.oauth.authorize_url.replace("{instance}", (instance or "").rstrip("/")))
    return str(url.origin())


def _contract_fragment(fields: dict[str, str]) -> dict[str, str]:
    return {
        name: fields[name]
        for name in ("instance_url", "access_token", "refresh_token")
        if fields.get(name)
    }
