"""A Zoho CRM org: the subset of Zoho CRM's REST API v8 that crmgate and Zoho's Python SDK use,
as Zoho documents it.

- Accounts server: ``GET /oauth/v2/auth`` (the user approves at once; the redirect URI must be
  one the client registered, exactly; scopes are comma-separated; back to it with ``code``,
  ``state``, ``location`` and ``accounts-server``, the user's data centre), ``POST
  /oauth/v2/token`` (refresh_token and authorization_code grants; a refresh token only with
  ``access_type=offline``; Zoho's token answer carries ``api_domain``; refusals are
  ``{"error": "invalid_code"}`` and the like; past 10 access tokens from one refresh token in
  10 minutes, ``{"error": "Access Denied"}``), ``POST /oauth/v2/token/revoke``.
- Auth: ``Authorization: Zoho-oauthtoken <token>`` (not Bearer); 401 ``INVALID_OAUTHTOKEN``;
  a token without the scope is 401 ``OAUTH_SCOPE_MISMATCH``.
- Records (``/crm/v8/{Module}``): list with ``fields`` (required), ``page``/``per_page`` (at most
  200 a page, and 2,000 records with ``page``) or ``page_token`` (``info.next_page_token``),
  ``sort_by`` (id, Created_Time, Modified_Time); get, create/update/delete one or up to 100 at
  once (per-record results, HTTP 201/200, 207 when mixed, 400 when all fail); an empty list is
  ``204 No Content``, as is a record id that does not exist.
- ``POST /crm/v8/coql`` (zoho_coql: select, where, order by, limit/offset, COUNT),
  ``GET /crm/v8/{Module}/actions/count``.
- Metadata: ``/crm/v8/settings/modules``, ``/settings/fields?module=``, ``/settings/layouts``,
  ``/crm/v8/users`` (``type=CurrentUser|AllUsers|ActiveUsers``), ``/crm/v8/org``.
- Limits: API credits per 24 hours; past them 429 ``TOO_MANY_REQUESTS`` with
  ``X-RATELIMIT-LIMIT``, ``X-RATELIMIT-REMAINING`` and ``X-RATELIMIT-RESET`` (epoch ms).
- ``faults``: scripted answers of the next API calls, for tests (crmsim.faults).
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from aiohttp import web

from crmsim import columns, records, seed
from crmsim import zoho_coql as coql
from crmsim.app import LOG, Route, Simulator, UserTokens, overrides
from crmsim.guard import Guard, Quota, Refusal, Verdict, bearer, json_object
from crmsim.oauth import AuthorizationServer, Issued, OAuthError, Pending, redirect
from crmsim.tokens import AccessToken, Client, TokenStore
from crmsim.zoho_coql import Refused
from crmsim.zoho_schema import Module, ZField, standard_modules

ALL_SCOPES = (
    "ZohoCRM.modules.ALL",
    "ZohoCRM.settings.ALL",
    "ZohoCRM.users.READ",
    "ZohoCRM.org.READ",
    "ZohoCRM.coql.READ",
)
MAX_PER_PAGE = 200
PAGE_LIMIT = 2000  # records reachable with `page`; further needs page_token
BATCH_LIMIT = 100
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2}$")
# Zoho data types by the kind of JSON value they take (the others but lookups take text)
_KINDS = {
    "integer": "integer",
    "double": "number",
    "currency": "number",
    "boolean": "boolean",
    "date": "date",
    "datetime": "datetime",
}
_ID = re.compile(r"^\d{1,20}$")
SORTABLE_BY_LIST = ("id", "Created_Time", "Modified_Time")
_BAD_MODULE = "the module name given seems to be invalid"
CALL = web.RequestKey("call", dict[str, str])  # the request's entry in the call log


T = TypeVar("T")
Token = AccessToken[str]  # its subject: the user id


@dataclass
class User:
    id: str
    first_name: str
    last_name: str
    email: str
    role: str = "CEO"
    profile: str = "Administrator"
    status: str = "active"
    created: str = ""

    def render(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "first_name": self.first_name,
            "last_name": self.last_name,
            "full_name": f"{self.first_name} {self.last_name}".strip(),
            "email": self.email,
            "status": self.status,
            "confirm": True,
            "role": {"name": self.role, "id": "5725767000000026005"},
            "profile": {"name": self.profile, "id": "5725767000000026011"},
            "phone": None,
            "mobile": None,
            "time_zone": "Etc/UTC",
            "locale": "en_US",
            "created_time": self.created,
            "Modified_Time": self.created,
            "Isonline": False,
        }


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def _bad(message: str, code: str = "INVALID_DATA", **details: Any) -> Refused:
    """Zoho's 400 answer (INVALID_DATA unless ``code`` says another), ``details`` naming what
    is wrong."""
    return Refused(400, code, message, details)


def _at(index: int, name: str) -> dict[str, str]:
    """The details of a refused value of a write: its field and its place in ``data``."""
    return {"api_name": name, "json_path": f"$.data[{index}].{name}"}


def _required(index: int, name: str) -> Refused:
    return _bad("required field not found", "MANDATORY_NOT_FOUND", **_at(index, name))


def _answer(key: str, rows: list[Any], more: bool, **info: Any) -> web.Response:
    """``rows`` under ``key`` with Zoho's ``info`` (the ``info`` given, ``count`` and
    ``more_records``); 204 No Content when there are none."""
    if not rows:
        return web.Response(status=204)
    info = {**info, "count": len(rows), "more_records": more}
    return web.json_response({key: rows, "info": info})


def _success(details: dict[str, Any], message: str) -> dict[str, Any]:
    return {"code": "SUCCESS", "details": details, "message": message, "status": "success"}


class _Guard(Guard[str]):
    """``Authorization: Zoho-oauthtoken <token>``; API credits per 24 hours (a `Quota`), their
    state in ``X-RATELIMIT-*`` headers on every answer."""

    def __init__(self, sim: ZohoSimulator) -> None:
        super().__init__(sim.tokens, [bearer("Zoho-oauthtoken")], sim.quota, sim.faults)

    def unauthorized(self, request: web.Request, token: Token | None) -> web.StreamResponse:
        return Refused(401, "INVALID_OAUTHTOKEN", "invalid oauth token").response()

    def limited(self, verdict: Verdict) -> web.StreamResponse:
        message = "The API credits for the last 24 hours are exhausted"
        return Refused(429, "TOO_MANY_REQUESTS", message).response()

    def rate_headers(self, verdict: Verdict) -> dict[str, str]:
        return {
            "X-RATELIMIT-LIMIT": str(verdict.limit),
            "X-RATELIMIT-REMAINING": str(verdict.remaining),
            "X-RATELIMIT-RESET": str(int((time.time() + 6 * 3600) * 1000)),  # epoch ms
        }

    def insufficient_scope(self, needed: tuple[str, ...]) -> Refusal:
        return Refused(401, "OAUTH_SCOPE_MISMATCH", "invalid oauth scope to access this URL")


# Zoho's accounts server names its refusals its own way, with HTTP 200
_OAUTH_ERRORS = {
    "unknown_client": "invalid_client",
    "bad_secret": "invalid_client_secret",
    "code": "invalid_code",
    "expired_code": "invalid_code",
    "refresh": "invalid_code",
    "redirect_mismatch": "invalid_redirect_uri",
}


class _OAuth(AuthorizationServer[str]):
    """Zoho's accounts server: scopes joined by commas, a refresh token only with
    ``access_type=offline``, the user's data centre in the redirect, ``api_domain`` in the
    token answer, no rotation; at most 10 access tokens per refresh token in 10 minutes."""

    scope_separator = ","
    refresh_rotation = "omit"

    def __init__(self, sim: ZohoSimulator) -> None:
        super().__init__(sim.tokens, lambda: sim.admin)
        self.sim = sim
        self.refreshed: dict[str, deque[float]] = {}  # refresh token -> when it was used

    async def parameters(self, request: web.Request) -> dict[str, str]:
        return {**request.query, **await super().parameters(request)}  # the SDK sends either

    async def token(self, request: web.Request) -> web.StreamResponse:
        request[CALL]["host"] = request.host  # which data centre's accounts server it reached
        return await super().token(request)

    def requested_scopes(self, params: Mapping[str, str], client: Client) -> tuple[str, ...]:
        scopes = tuple(params.get("scope", "").split(","))
        if not all(re.match(r"^ZohoCRM\.[A-Za-z.]+$", s) for s in scopes):
            raise OAuthError("invalid_scope", "invalid scope", "scope")  # e.g. joined by spaces
        return scopes

    def offline(self, params: Mapping[str, str]) -> bool:
        return params.get("access_type") == "offline"

    def redirect_params(self, pending: Pending) -> dict[str, str]:
        accounts_server = self.sim.accounts_server or self.sim.base_url
        return {"location": self.sim.location, "accounts-server": accounts_server}

    def check_token_request(
        self, grant_type: str, params: Mapping[str, str], client: Client
    ) -> None:
        value = params.get("refresh_token", "")
        held = self.tokens.refresh.get(value)
        if grant_type != "refresh_token" or held is None or held.client_id != client.client_id:
            return
        used = self.refreshed.setdefault(value, deque())
        while used and used[0] < time.time() - 600:
            used.popleft()
        if len(used) >= 10:
            message = "You have made too many requests continuously. Please try again after "
            raise OAuthError("Access Denied", message + "some time.", "throttled")
        used.append(time.time())

    def token_answer(self, issued: Issued[str], request: web.Request) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "access_token": issued.access,
            "scope": " ".join(issued.token.scopes),
            "api_domain": self.sim.api_domain or self.sim.base_url,
            "token_type": "Bearer",
            "expires_in": int(issued.lifetime),
        }
        if issued.refresh is not None:
            answer["refresh_token"] = issued.refresh
        return answer

    def error_answer(self, error: OAuthError) -> web.StreamResponse:
        if error.reason == "throttled":
            body = {"error": error.error, "error_description": error.description}
            return web.json_response(body, status=400)
        return web.json_response({"error": _OAUTH_ERRORS.get(error.reason, error.error)})

    def refuse(self, error: OAuthError, redirect_uri: str, state: str | None) -> web.StreamResponse:
        return redirect(redirect_uri, {"error": error.error}, state or "")

    def error_page(self, error: OAuthError) -> web.StreamResponse:
        text = "Invalid Client" if error.reason == "unknown_client" else "Invalid Redirect Uri"
        return web.Response(status=400, text=text)

    async def revoke(self, request: web.Request) -> web.StreamResponse:
        """Zoho revokes a refresh token; the access tokens from it run out on their own."""
        self.tokens.refresh.pop((await self.parameters(request)).get("token", ""), None)
        return web.json_response({"status": "success"})


def _zoho_token() -> str:
    return "1000." + secrets.token_hex(16) + "." + secrets.token_hex(16)


class ZohoSimulator(Simulator[str], UserTokens[str]):
    """``queries`` logs each call's ``(method, path, query)``, with what its body said (a COQL
    statement) and, for the token endpoint, the host it reached. Its tokens act as ``owner``
    (``admin``: that user's id) with every scope."""

    scopes = ALL_SCOPES

    def __init__(self, org_name: str = "Zylker Traders (sim)") -> None:
        super().__init__()
        self.org_name = org_name
        self.api_domain = ""  # what the token answer names; the running base URL when empty
        # The user's data centre, as the authorize redirect names it (accounts-server: the
        # running base URL when empty).
        self.location, self.accounts_server = "us", ""
        self.modules: dict[str, Module] = standard_modules()
        self.queries: deque[tuple[str, str, dict[str, str]]] = deque(maxlen=LOG)
        self.records = records.Store(
            self.modules,
            key=lambda module: "id",
            new_id=lambda module: self._next_id(),
            now=now,
            created=("Created_Time",),
            modified=("Modified_Time",),
            derive=lambda module, record: self._derive(self.modules[module], record),
        )
        self.tokens = TokenStore(
            access_format=_zoho_token,
            refresh_format=lambda user: _zoho_token(),
            code_format=_zoho_token,
        )
        self.quota = Quota(100_000)  # API credits in the 24-hour window (a test sets `used`)
        self.guard = _Guard(self)
        self.oauth = _OAuth(self)
        # page_token -> (module, (sort_by, sort_order), offset); a day long, as Zoho's
        self.page_tokens: records.Cursors[tuple[str, tuple[str, str], int]] = records.Cursors(
            lifetime=86400
        )
        self._ids = itertools.count(1)
        self.org_id = "60012345678"
        owner = User(self._next_id(), "Patricia", "Boyle", "patricia.boyle@zylker.example")
        owner.created = now()
        self.users: dict[str, User] = {owner.id: owner}
        self.owner, self.admin = owner, owner.id

    # ---- state ------------------------------------------------------------------------------

    def _next_id(self) -> str:
        return f"5725767{next(self._ids):012d}"

    def add_user(self, first: str, last: str, email: str, status: str = "active") -> str:
        user = User(self._next_id(), first, last, email, role="Manager", profile="Standard")
        user.status, user.created = status, now()
        self.users[user.id] = user
        return user.id

    def insert(self, module: str, values: dict[str, Any]) -> str:
        """A record made directly in the org (no API call, no credit)."""
        record = self._create(module, values, 0)
        return str(record["id"])

    # ---- HTTP -------------------------------------------------------------------------------

    def seen(self, request: web.Request) -> None:
        entry = dict(request.query)
        request[CALL] = entry  # a handler may add what the body said (COQL statements)
        self.queries.append((request.method, request.path, entry))

    def routes(self) -> list[Route]:
        return [
            Route("GET", "/oauth/v2/auth", self.oauth.authorize, guarded=False),
            Route("POST", "/oauth/v2/token", self.oauth.token, guarded=False),
            Route("POST", "/oauth/v2/token/revoke", self.oauth.revoke, guarded=False),
            Route("GET", "/crm/v8/users", self._users),
            Route("GET", "/crm/v8/users/actions/count", self._users_count),
            Route("GET", "/crm/v8/users/{id}", self._user),
            Route("GET", "/crm/v8/org", self._org),
            Route("GET", "/crm/v8/settings/modules", self._modules_route),
            Route("GET", "/crm/v8/settings/modules/{module}", self._module_route),
            Route("GET", "/crm/v8/settings/fields", self._fields_route),
            Route("GET", "/crm/v8/settings/layouts", self._layouts_route),
            Route("GET", "/crm/v8/settings/related_lists", self._related_lists_route),
            Route("POST", "/crm/v8/coql", self._coql),
            Route("GET", "/crm/v8/{module}", self._list),
            Route("POST", "/crm/v8/{module}", self._write),
            Route("PUT", "/crm/v8/{module}", self._write),
            Route("DELETE", "/crm/v8/{module}", self._delete_route),
            Route("GET", "/crm/v8/{module}/actions/count", self._count),
            Route("GET", "/crm/v8/{module}/{id}", self._get),
            Route("PUT", "/crm/v8/{module}/{id}", self._write),
            Route("DELETE", "/crm/v8/{module}/{id}", self._delete_route),
        ]

    def _named(self, name: str, code: str, message: str, details: dict[str, Any]) -> Module:
        """The module ``name`` (in any case), or Zoho's refusal of it."""
        module = next((m for k, m in self.modules.items() if k.lower() == name.lower()), None)
        if module is None:
            raise Refused(400, code, message, details)
        return module

    def _module(self, request: web.Request, token: Token, operation: str = "READ") -> Module:
        name, where = request.match_info["module"], {"resource_path_index": 0}
        module = self._named(name, "INVALID_MODULE", _BAD_MODULE, where)
        self.guard.require(
            token,
            "ZohoCRM.modules.ALL",
            f"ZohoCRM.modules.{module.api_name.lower()}.ALL",
            f"ZohoCRM.modules.{module.api_name.lower()}.{operation}",
        )
        return module

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        refuse = partial(Refused, 400, "INVALID_DATA")
        return await json_object(
            request, refuse, "the input is not valid JSON", "the input must be a JSON object"
        )

    # ---- metadata ---------------------------------------------------------------------------

    async def _users(self, request: web.Request, token: Token) -> web.Response:
        self.guard.require(token, "ZohoCRM.users.READ", "ZohoCRM.users.ALL")
        kind = request.query.get("type", "AllUsers")
        users = sorted(self.users.values(), key=lambda u: u.id)
        if kind == "CurrentUser":
            users = [self.users[token.subject]]
        elif kind == "ActiveUsers":
            users = [u for u in users if u.status == "active"]
        elif kind == "DeactiveUsers":
            users = [u for u in users if u.status != "active"]
        elif kind != "AllUsers":
            raise _bad("invalid type", param_name="type")
        return self._numbered(request, "users", users, User.render)

    async def _users_count(self, request: web.Request, token: Token) -> web.Response:
        self.guard.require(token, "ZohoCRM.users.READ", "ZohoCRM.users.ALL")
        return web.json_response({"count": len(self.users)})

    async def _user(self, request: web.Request, token: Token) -> web.Response:
        self.guard.require(token, "ZohoCRM.users.READ", "ZohoCRM.users.ALL")
        user = self.users.get(request.match_info["id"])
        if user is None:
            return web.Response(status=204)
        return web.json_response({"users": [user.render()]})

    async def _org(self, request: web.Request, token: Token) -> web.Response:
        self.guard.require(token, "ZohoCRM.org.READ", "ZohoCRM.org.ALL", "ZohoCRM.settings.ALL")
        org = {
            "id": "5725767000000021001",
            "company_name": self.org_name,
            "zgid": self.org_id,
            "domain_name": "org" + self.org_id,
            "primary_email": self.owner.email,
            "primary_zuid": "70012345",
            "time_zone": "Etc/UTC",
            "iso_code": "USD",
            "currency_symbol": "$",
            "country_code": "US",
            "type": "production",
            "mc_status": False,
            "gapps_enabled": False,
            "privacy_settings": False,
        }
        return web.json_response({"org": [org]})

    def _settings_module(self, request: web.Request, token: Token) -> Module:
        self.guard.require(
            token, "ZohoCRM.settings.ALL", "ZohoCRM.settings.READ", "ZohoCRM.settings.fields.READ"
        )
        name = request.query.get("module") or request.match_info.get("module", "")
        return self._named(name, "INVALID_MODULE", _BAD_MODULE, {"param_name": "module"})

    async def _modules_route(self, request: web.Request, token: Token) -> web.Response:
        self.guard.require(
            token, "ZohoCRM.settings.ALL", "ZohoCRM.settings.READ", "ZohoCRM.settings.modules.READ"
        )
        return web.json_response({"modules": [m.describe() for m in self.modules.values()]})

    async def _module_route(self, request: web.Request, token: Token) -> web.Response:
        module = self._settings_module(request, token)
        return web.json_response({"modules": [module.describe()]})

    async def _fields_route(self, request: web.Request, token: Token) -> web.Response:
        module = self._settings_module(request, token)
        return web.json_response({"fields": module.describe_fields()})

    async def _layouts_route(self, request: web.Request, token: Token) -> web.Response:
        module = self._settings_module(request, token)
        return web.json_response(
            {
                "layouts": [
                    {
                        "id": "5725767000000091055",
                        "name": "Standard",
                        "api_name": "Standard",
                        "status": "active",
                        "visible": True,
                        "sections": [
                            {
                                "display_label": f"{module.singular} Information",
                                "api_name": f"{module.singular} Information",
                                "sequence_number": 1,
                                "fields": module.describe_fields(),
                            }
                        ],
                    }
                ]
            }
        )

    async def _related_lists_route(self, request: web.Request, token: Token) -> web.Response:
        self._settings_module(request, token)
        return web.json_response({"related_lists": []})

    # ---- records ----------------------------------------------------------------------------

    @staticmethod
    def _paging(request: web.Request) -> tuple[int, int]:
        try:
            page = int(request.query.get("page", "1"))
            per_page = int(request.query.get("per_page", str(MAX_PER_PAGE)))
        except ValueError:
            raise _bad("page and per_page must be numbers") from None
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise _bad("invalid page or per_page", param_name="per_page")
        return page, per_page

    def _numbered(
        self, request: web.Request, key: str, rows: list[T], render: Callable[[T], Any]
    ) -> web.Response:
        """A page of ``rows`` by number (``page``, ``per_page``) under ``key``, with Zoho's
        ``info``; 204 No Content past the end."""
        page, per_page = self._paging(request)
        chosen = [render(row) for row in rows[(page - 1) * per_page : page * per_page]]
        return _answer(key, chosen, page * per_page < len(rows), per_page=per_page, page=page)

    def _wanted(self, request: web.Request, module: Module, required: bool) -> list[str] | None:
        names = [n for v in request.query.getall("fields", []) for n in v.split(",") if n]
        if not names:
            if required:
                message = "One of the expected parameter is missing"
                raise _bad(message, "REQUIRED_PARAM_MISSING", param_name="fields")
            return None
        if len(names) > 50:
            raise Refused(400, "LIMIT_EXCEEDED", "fields limit exceeded", {"limit": 50})
        for name in names:
            if name not in module.fields and name != "$se_module":
                raise Refused(400, "INVALID_DATA", "invalid field", {"api_name": name})
        return names

    def _render(
        self, module: Module, record: dict[str, Any], wanted: list[str] | None
    ) -> dict[str, Any]:
        names = wanted if wanted is not None else [*module.fields, "$se_module"]
        out: dict[str, Any] = {"id": record["id"]}
        for name in names:
            if name in module.fields or name == "$se_module":
                value = record.get(name)
                if name == "$se_module" and wanted is None and value is None:
                    continue
                out[name] = value
        return out

    def _ordered(self, module: Module, sort_by: str, order: str) -> list[dict[str, Any]]:
        descending = order == "desc"
        return records.order(
            self.records[module.api_name].values(),
            records.Sort(sort_by, descending),
            records.Sort(lambda r: int(r["id"]), descending),
        )

    async def _list(self, request: web.Request, token: Token) -> web.Response:
        module = self._module(request, token)
        wanted = self._wanted(request, module, required=True)
        sort_by = request.query.get("sort_by", "id")
        sort_order = request.query.get("sort_order", "desc")
        if sort_by not in SORTABLE_BY_LIST or sort_order not in ("asc", "desc"):
            message = "sort_by can be id, Created_Time or Modified_Time only"
            raise _bad(message, param_name="sort_by")
        rows = self._ordered(module, sort_by, sort_order)
        page, per_page = self._paging(request)
        page_token = request.query.get("page_token")
        if page_token is not None:
            if "page" in request.query:
                raise Refused(400, "INVALID_REQUEST", "page and page_token cannot be used together")
            held = self.page_tokens.get(page_token)
            if held is None or held[:2] != (module.api_name, (sort_by, sort_order)):
                raise _bad("the page token is invalid or expired", param_name="page_token")
            offset, page = held[2], 0
        else:
            offset = (page - 1) * per_page
            if page * per_page > PAGE_LIMIT:
                message = "You can fetch only 2000 records using the page parameter; use page_token"
                raise _bad(message, "DISCRETE_PAGINATION_LIMIT_EXCEEDED", limit=PAGE_LIMIT)
        chosen, more = records.page(rows, offset, per_page)
        following = None
        if more and chosen:
            following = self.page_tokens.issue(
                (module.api_name, (sort_by, sort_order), offset + per_page)
            )
        return _answer(
            "data",
            [self._render(module, r, wanted) for r in chosen],
            more,
            per_page=per_page,
            next_page_token=following,
            sort_by=sort_by,
            page=page if page else None,
            previous_page_token=None,
            page_token_expiry=now() if following else None,
            sort_order=sort_order,
        )

    async def _get(self, request: web.Request, token: Token) -> web.Response:
        module = self._module(request, token)
        wanted = self._wanted(request, module, required=False)
        record = self.records[module.api_name].get(request.match_info["id"])
        if record is None:
            return web.Response(status=204)
        return web.json_response({"data": [self._render(module, record, wanted)]})

    async def _count(self, request: web.Request, token: Token) -> web.Response:
        module = self._module(request, token)
        return web.json_response({"count": len(self.records[module.api_name])})

    async def _coql(self, request: web.Request, token: Token) -> web.Response:
        self.guard.require(token, "ZohoCRM.coql.READ")
        body = await self._json(request)
        text = body.get("select_query")
        if not isinstance(text, str) or not text.strip():
            missing = {"param_name": "select_query"}
            raise Refused(400, "REQUIRED_PARAM_MISSING", "select_query is missing", missing)
        request[CALL]["select_query"] = text
        parsed = coql.parse(text)
        where = {"clause": "from", "value": parsed.module}
        module = self._named(parsed.module, "INVALID_QUERY", "invalid module", where)
        self.guard.require(
            token, "ZohoCRM.modules.ALL", f"ZohoCRM.modules.{module.api_name.lower()}.READ"
        )
        compared = coql.names(parsed.where)
        counted = [parsed.count] if parsed.count else []
        for name in [*parsed.columns, *compared, *(n for n, _ in parsed.order), *counted]:
            base = name.split(".", 1)[0]
            zfield = module.fields.get(base)
            if zfield is None and base != "$se_module":
                message = "column given seems to be invalid"
                raise Refused(400, "INVALID_QUERY", message, {"column_name": name})
            if zfield is not None and zfield.type == "textarea" and name in compared:
                message = "multi-line fields cannot be used in criteria"
                raise Refused(400, "INVALID_QUERY", message, {"column_name": name})
        rows = [
            r
            for r in self.records[module.api_name].values()
            if coql.matches(parsed.where, lambda n, r=r: _value_of(r, n))  # type: ignore[misc]
        ]
        if parsed.count:
            return _answer("data", [{f"COUNT({parsed.count})": len(rows)}], False)
        sorts = [
            records.Sort(lambda r, n=name: _value_of(r, n), descending, nulls_last=True)  # type: ignore[misc]
            for name, descending in parsed.order
        ]
        rows = records.order(rows, *sorts, records.Sort(lambda r: int(r["id"])))
        chosen, more = records.page(rows, parsed.offset, parsed.limit)
        data = []
        for r in chosen:
            out: dict[str, Any] = {"id": r["id"]}
            for name in parsed.columns:
                value = r.get(name) if "." not in name else _value_of(r, name)
                if isinstance(value, dict) and "." not in name:
                    value = {"id": value.get("id")}  # COQL gives a lookup's id only
                out[name] = value
            data.append(out)
        return _answer("data", data, more)

    # ---- writing ----------------------------------------------------------------------------

    def _check(self, module: Module, values: Any, creating: bool, index: int) -> dict[str, Any]:
        """The record's values as stored (crmsim.columns), or Zoho's refusal of the first
        field that is wrong."""
        if not isinstance(values, dict):
            raise _bad("invalid data", json_path=f"$.data[{index}]")
        given = {k: v for k, v in values.items() if k not in ("id", "$se_module")}
        clean, problems = columns.check(
            given,
            module.fields.get,
            partial(self._value, values, index),
            creating=creating,
            columns=module.fields.values(),
            empty=(None, ""),
        )
        for name, problem, _ in problems:
            if problem == columns.REQUIRED:
                raise _required(index, name)
            said = "invalid field" if problem == columns.UNKNOWN else "the field is read only"
            raise _bad(said, **_at(index, name))
        if "$se_module" in values:
            said_module = values["$se_module"]
            if said_module is not None and said_module not in self.modules:
                raise _bad("invalid module", **_at(index, "$se_module"))
            clean["$se_module"] = said_module
        return clean

    def _value(self, values: dict[str, Any], index: int, zfield: ZField, value: Any) -> Any:
        """A non-empty value as Zoho stores it (a lookup as ``{id, name}``), or its refusal."""
        kind = zfield.type
        path = _at(index, zfield.name)
        invalid = _bad("invalid data", **path, expected_data_type=kind)
        if kind not in ("lookup", "ownerlookup"):
            if (
                records.fault(
                    value, _KINDS.get(kind, "text"), length=zfield.length, options=zfield.options
                )
                or (kind == "email" and not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", value))
                or (kind == "datetime" and not _DATETIME.match(value))  # with its offset
            ):
                raise invalid
            return float(value) if kind in ("double", "currency") else value
        if not isinstance(value, dict) or not _ID.match(str(value.get("id", ""))):
            raise invalid
        target_id = str(value["id"])
        if kind == "ownerlookup":
            user = self.users.get(target_id)
            if user is None:
                raise invalid
            return {"id": user.id, "name": user.render()["full_name"], "email": user.email}
        if zfield.name == "Parent_Id":
            target_module = (value.get("module") or {}).get("api_name")
        elif len(zfield.lookup) > 1:
            target_module = values.get("$se_module")
        else:
            target_module = zfield.lookup[0]
        if target_module not in zfield.lookup:
            named = "$se_module" if zfield.name == "What_Id" else zfield.name
            message = "the related module is missing or invalid"
            raise _bad(message, **{**path, "api_name": named})
        target = self.records[target_module].get(target_id)
        if target is None:
            raise _bad("the related id given seems to be invalid", **path)
        display = self.modules[target_module].display_field
        shown: dict[str, Any] = {"id": target_id, "name": str(target.get(display) or "")}
        if zfield.name == "Parent_Id":
            module_info = self.modules[target_module].describe()
            shown["module"] = {"api_name": target_module, "id": module_info["id"]}
        return shown

    def _owner(self) -> dict[str, Any]:
        return {"id": self.admin, "name": "Patricia Boyle", "email": self.owner.email}

    def _create(self, module_name: str, values: dict[str, Any], index: int) -> dict[str, Any]:
        module = self.modules[module_name]
        clean = self._check(module, values, creating=True, index=index)
        record = {"Owner": self._owner(), "Created_By": self._owner(), "Modified_By": self._owner()}
        return self.records.insert(module_name, record | clean)

    @staticmethod
    def _derive(module: Module, record: dict[str, Any]) -> None:
        if "Full_Name" in module.fields:
            record["Full_Name"] = " ".join(
                str(p) for p in (record.get("First_Name"), record.get("Last_Name")) if p
            )
        if "What_Id" in module.fields and record.get("What_Id") is None:
            record["$se_module"] = None

    def _result(self, record: dict[str, Any], message: str) -> dict[str, Any]:
        details = {
            "Modified_Time": record["Modified_Time"],
            "Modified_By": {"name": "Patricia Boyle", "id": self.admin},
            "Created_Time": record["Created_Time"],
            "id": record["id"],
            "Created_By": {"name": "Patricia Boyle", "id": self.admin},
        }
        return _success(details, message)

    async def _data(self, request: web.Request) -> list[Any]:
        body = await self._json(request)
        data = body.get("data")
        if not isinstance(data, list) or not data:
            raise _bad("data is missing", "REQUIRED_PARAM_MISSING", param_name="data")
        if len(data) > BATCH_LIMIT:
            raise _bad("only 100 records can be sent at once", "LIMIT_EXCEEDED", limit=100)
        return data

    @staticmethod
    def _multi(results: list[dict[str, Any]], done: int) -> web.Response:
        failed = sum(1 for r in results if r["status"] == "error")
        status = done if not failed else (400 if failed == len(results) else 207)
        return web.json_response({"data": results}, status=status)

    def _apply(self, module: Module, record_id: str, values: Any, index: int) -> dict[str, Any]:
        record = self.records[module.api_name].get(record_id)
        if record is None:
            raise _bad("the id given seems to be invalid", **_at(index, "id"))
        clean = self._check(module, values, creating=False, index=index)
        return self.records.change(module.api_name, record, clean)

    async def _write(self, request: web.Request, token: Token) -> web.Response:
        """POST: records made; PUT: records changed (each naming its id, or the one of the
        URL): up to 100, a result each."""
        creating = request.method == "POST"
        module = self._module(request, token, "CREATE" if creating else "UPDATE")
        data = await self._data(request)
        one = request.match_info.get("id")
        results = []
        for index, values in enumerate(data[:1] if one else data):
            try:
                if creating:
                    record = self._create(module.api_name, values, index)
                    results.append(self._result(record, "record added"))
                    continue
                record_id = one or (str(values.get("id", "")) if isinstance(values, dict) else "")
                if not record_id:
                    raise _required(index, "id")
                record = self._apply(module, record_id, values, index)
                results.append(self._result(record, "record updated"))
            except Refused as refused:
                results.append(refused.body())
        return self._multi(results, 201 if creating else 200)

    def _delete(self, module: Module, record_id: str) -> dict[str, Any]:
        if self.records[module.api_name].pop(record_id, None) is None:
            return _bad("record not deleted", id=record_id).body()
        return _success({"id": record_id}, "record deleted")

    async def _delete_route(self, request: web.Request, token: Token) -> web.Response:
        """One record (its URL), or up to 100 (``ids``)."""
        module = self._module(request, token, "DELETE")
        one = request.match_info.get("id")
        ids = [one] if one else [i for i in request.query.get("ids", "").split(",") if i]
        if not ids:
            raise _bad("ids is missing", "REQUIRED_PARAM_MISSING", param_name="ids")
        if len(ids) > BATCH_LIMIT:
            raise _bad("only 100 records can be deleted at once", "LIMIT_EXCEEDED", limit=100)
        return self._multi([self._delete(module, i) for i in ids], 200)


# ---- comparisons ----------------------------------------------------------------------------


def _value_of(record: dict[str, Any], name: str) -> Any:
    """A record's value as criteria compare it: a lookup by its id, an empty value as null;
    ``Account_Name.Account_Name``, ``Owner.email``: a field of the linked record."""
    base, _, rest = name.partition(".")
    value = record.get(base)
    if isinstance(value, dict):
        value = value.get(rest or "id") if rest in ("", "id", "name", "email") else None
    elif rest:
        value = None
    return None if value in ("", []) else value


# ---- the demo and the gateway's view of it ---------------------------------------------------


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point ZohoCRM (API and accounts server) at a simulator."""
    paths = {"authorize_url": "/oauth/v2/auth", "token_url": "/oauth/v2/token"}
    return overrides("ZohoCRM", base_url, paths | {"revoke_url": "/oauth/v2/token/revoke"})


def seed_zoho(sim: ZohoSimulator) -> None:
    """The demo's small business (crmsim.seed) as a Zoho org: accounts with their contacts,
    leads, and for each account a deal, a task and a note."""
    today = date.today()
    accounts = []
    for name, industry, website, city, country in seed.ACCOUNTS:
        industry = industry if industry in ("Retail", "Technology") else "Farming"
        where = {"Website": website, "Billing_City": city, "Billing_Country": country}
        accounts.append(
            sim.insert("Accounts", {"Account_Name": name, "Industry": industry, **where})
        )
    contacts = []
    for first, last, title, employer in seed.CONTACTS:
        person = {"First_Name": first, "Last_Name": last, "Title": title}
        email = f"{first.lower()}.{last.lower()}@example.com"
        link = {"id": accounts[employer]}
        contacts.append(sim.insert("Contacts", {**person, "Email": email, "Account_Name": link}))
    for first, last, company, _ in seed.LEADS:
        email = f"{first.lower()}@{company.split()[0].lower()}.example"
        lead = {"First_Name": first, "Last_Name": last, "Company": company, "Email": email}
        sim.insert("Leads", lead)
    stages = ("Qualification", "Proposal/Price Quote", "Negotiation/Review")
    for index, account in enumerate(accounts):
        due = (today + timedelta(days=30 * (index + 1))).isoformat()
        (first, *_), (second, *_) = seed.CONTACTS[2 * index : 2 * index + 2]
        account_link, contact_link = {"id": account}, {"id": contacts[2 * index]}
        deal: dict[str, Any] = {"Deal_Name": f"{seed.ACCOUNTS[index][0]}: annual renewal"}
        deal.update(Amount=12000.0 * (index + 1), Stage=stages[index], Closing_Date=due)
        sim.insert("Deals", {**deal, "Account_Name": account_link, "Contact_Name": contact_link})
        task: dict[str, Any] = {"Subject": f"Call {first} about the renewal", "Due_Date": due}
        task.update(Who_Id=contact_link, What_Id=account_link, **{"$se_module": "Accounts"})
        sim.insert("Tasks", task)
        note = f"{second} wants a quote before the quarter ends."
        parent = {"module": {"api_name": "Accounts"}, "id": account}
        sim.insert(
            "Notes", {"Note_Title": "Meeting notes", "Note_Content": note, "Parent_Id": parent}
        )


__all__ = ["ALL_SCOPES", "ZohoSimulator", "platform_overrides", "seed_zoho"]
