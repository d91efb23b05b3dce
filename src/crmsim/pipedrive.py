"""A Pipedrive company: the subset of Pipedrive's REST API that crmgate and the official Python
SDK (pipedrive-python-lib) use, as Pipedrive documents it.

- Auth: an API token (``api_token`` query parameter, as the SDK sends it, or the ``x-api-token``
  header) or an OAuth access token (``Authorization: Bearer``); 401 ``unauthorized access``.
  ``auth`` records how each call authenticated (``header``, ``query``, ``bearer``, ...).
  OAuth: ``POST /oauth/token`` with HTTP Basic client authentication (authorization_code and
  refresh_token grants); the answer names the company's ``api_domain``.
- API v2 (``/api/v2/{persons,organizations,deals,activities}``): cursor paging (``cursor``,
  ``limit`` <= 500, ``additional_data.next_cursor``), ``filter_id``, ``sort_by`` (id,
  add_time, update_time; due_date for activities) and ``sort_direction``; the documented query
  parameters of each object (``ids``, ``owner_id``, ``org_id``, ...; ignored beside
  ``filter_id``); strict validation (``Validation failed: <field>: <reason>``); custom fields
  under ``custom_fields``, monetary ones as ``{"value", "currency"}``, multiple options as a
  list of ids, addresses as objects (the v2 migration guide). DELETE marks a record deleted
  (``is_deleted``; v1: ``active_flag`` false): lists leave it out, a GET still shows it.
- API v1 (the same objects as the SDK calls them, plus leads, notes, users, filters and the
  ``*Fields`` endpoints): ``start``/``limit`` paging with ``additional_data.pagination``,
  ``sort=field ASC|DESC``, ``filter_id``; custom fields as top-level 40-character hash keys
  (a monetary one's currency as ``<key>_currency``); the owner of a deal or activity is
  ``user_id``. Leads page with ``additional_data.{start,limit,more_items_in_collection}``.
- Filters (``/v1/filters``): the documented ``conditions`` JSON (exactly one AND group and
  one OR group, in that order, as the minimum structure; at most 16 conditions, operators
  ``=``, ``!=``, ``<``, ``>``, ``<=``, ``>=``, ``IS NULL``, ``IS NOT NULL``, ``LIKE '$%'``,
  ``LIKE '%$%'``, ``NOT LIKE '$%'``), evaluated like Pipedrive's SQL: case-insensitive text,
  ``%``/``_`` wildcards inside LIKE values, dates by day.
- Errors: ``{"success": false, "error": ..., "error_info": ..., "errorCode": status}``.
- Rate limits: ``burst`` requests per token per 2-second window; every answer carries
  ``x-ratelimit-limit``, ``x-ratelimit-remaining`` and ``x-ratelimit-reset``; beyond, 429 with
  ``Retry-After``.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from yarl import URL

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."
MAX_LIMIT = 500
MAX_CONDITIONS = 16
V2_OBJECTS = ("persons", "organizations", "deals", "activities")
# collection -> (the filter/condition object, the filter type, its fields endpoint)
OBJECTS: dict[str, tuple[str, str | None, str]] = {
    "persons": ("person", "people", "personFields"),
    "organizations": ("organization", "org", "organizationFields"),
    "deals": ("deal", "deals", "dealFields"),
    "activities": ("activity", "activity", "activityFields"),
    "leads": ("lead", "leads", "leadFields"),
    "notes": ("note", None, "noteFields"),
}
V2_SORTS = {
    "persons": ("id", "update_time", "add_time"),
    "organizations": ("id", "update_time", "add_time"),
    "deals": ("id", "update_time", "add_time"),
    "activities": ("id", "update_time", "add_time", "due_date"),
}
# v1's dealFields and activityFields name the owner user_id (v2 records: owner_id)
OWNER_IS_USER_ID = ("deals", "activities")
# custom field types whose v2 value is not a plain one (the v2 migration guide)
V2_CUSTOM_SHAPES = ("monetary", "set", "address")
# the query parameters each v2 list takes besides filter_id (ignored when it is given)
V2_PARAMETERS = {
    "persons": ("ids", "owner_id", "org_id", "deal_id"),
    "organizations": ("owner_id",),
    "deals": ("ids", "owner_id", "person_id", "org_id"),
    "activities": ("ids", "owner_id", "deal_id", "lead_id", "person_id", "org_id"),
}
REFERENCES = ("org_id", "person_id", "deal_id", "owner_id", "user_id", "stage_id", "pipeline_id")
ACTIVITY_TYPES = ("call", "meeting", "task", "deadline", "email", "lunch")


@dataclass
class Field:
    id: int
    key: str
    name: str
    field_type: str = "varchar"
    mandatory: bool = False
    custom: bool = False
    options: tuple[str, ...] = ()
    writable: bool = True  # through the API (first_name, add_time... are Pipedrive's own)

    def describe(self, order: int) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "id": self.id,
            "key": self.key,
            "name": self.name,
            "order_nr": order,
            "field_type": self.field_type,
            "add_time": "2024-01-01 00:00:00",
            "update_time": "2024-01-01 00:00:00",
            "active_flag": True,
            "edit_flag": self.custom,
            "index_visible_flag": True,
            "details_visible_flag": True,
            "add_visible_flag": self.writable,
            "important_flag": False,
            "bulk_edit_allowed": self.writable,
            "searchable_flag": self.field_type in ("varchar", "text"),
            "filtering_allowed": True,
            "sortable_flag": True,
            "mandatory_flag": self.mandatory,
        }
        if self.options:
            answer["options"] = [{"id": i + 1, "label": o} for i, o in enumerate(self.options)]
        return answer


_ids = itertools.count(9001)


def _f(key: str, name: str, kind: str = "varchar", **extra: Any) -> Field:
    return Field(next(_ids), key, name, kind, **extra)


def standard_fields() -> dict[str, list[Field]]:
    def system() -> list[Field]:
        return [
            _f("id", "ID", "int", writable=False),
            _f("add_time", "Created", "date", writable=False),
            _f("update_time", "Update time", "date", writable=False),
        ]

    return {
        "persons": [
            *system(),
            _f("name", "Name", mandatory=True),
            _f("first_name", "First name", writable=False),
            _f("last_name", "Last name", writable=False),
            _f("email", "Email"),
            _f("phone", "Phone", "phone"),
            _f("job_title", "Job title"),
            _f("org_id", "Organization", "org"),
            _f("owner_id", "Owner", "user"),
        ],
        "organizations": [
            *system(),
            _f("name", "Name", mandatory=True),
            _f("address", "Address", "address"),
            _f("owner_id", "Owner", "user"),
        ],
        "deals": [
            *system(),
            _f("title", "Title", mandatory=True),
            _f("value", "Value", "monetary"),
            _f("currency", "Currency", "varchar_options"),
            _f("status", "Status", "status", options=("open", "won", "lost")),
            _f("stage_id", "Stage", "stage"),
            _f("probability", "Probability", "double"),
            _f("expected_close_date", "Expected close date", "date"),
            _f("org_id", "Organization", "org"),
            _f("person_id", "Contact person", "people"),
            _f("user_id", "Owner", "user"),
        ],
        "activities": [
            *system(),
            _f("subject", "Subject", mandatory=True),
            _f("type", "Type", "enum", options=ACTIVITY_TYPES),
            _f("due_date", "Due date", "date"),
            _f("due_time", "Due time", "time"),
            _f("duration", "Duration", "time"),
            _f("done", "Done", "boolean"),
            _f("note", "Note", "text"),
            _f("location", "Location", "address"),
            _f("deal_id", "Deal", "deal"),
            _f("lead_id", "Lead", "lead"),
            _f("person_id", "Contact person", "people"),
            _f("org_id", "Organization", "org"),
            _f("user_id", "Assigned to user", "user"),
        ],
        "leads": [
            _f("id", "ID", "varchar", writable=False),
            _f("add_time", "Lead created", "date", writable=False),
            _f("update_time", "Update time", "date", writable=False),
            _f("title", "Title", mandatory=True),
            _f("person_id", "Contact person", "people"),
            _f("organization_id", "Organization", "org"),
            _f("owner_id", "Owner", "user"),
            _f("expected_close_date", "Expected close date", "date"),
        ],
        "notes": [
            *system(),
            _f("content", "Content", "text", mandatory=True),
            _f("deal_id", "Deal", "deal"),
            _f("person_id", "Person", "people"),
            _f("org_id", "Organization", "org"),
            _f("lead_id", "Lead", "lead"),
            _f("user_id", "User", "user", writable=False),
        ],
    }


def custom_key() -> str:
    """A custom field's API key: a 40-character hash, as Pipedrive makes them."""
    return secrets.token_hex(20)


@dataclass
class Token:
    user_id: int
    expires_at: float | None = None  # None: an API token
    requests: deque[float] = field(default_factory=deque)


class Refused(Exception):
    def __init__(self, status: int, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.status, self.error, self.extra = status, error, extra

    def response(self) -> web.Response:
        return pd_error(self.status, self.error, **self.extra)


def pd_error(status: int, error: str, **extra: Any) -> web.Response:
    body = {
        "success": False,
        "error": error,
        "error_info": ERROR_INFO,
        "data": None,
        "additional_data": None,
        "errorCode": status,
        **extra,
    }
    return web.json_response(body, status=status)


def _invalid(problems: list[str]) -> Refused:
    return Refused(
        400, "Validation failed: " + "; ".join(problems), code="ERR_SCHEMA_VALIDATION_FAILED"
    )


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _v1_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def _v2_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


class PipedriveSimulator:
    def __init__(self, company: str = "Acme Sales (sim)", burst: int = 80) -> None:
        self.company_id = 7_001
        self.company_name = company
        self.burst = burst  # requests per token per 2-second window
        self.base_url = ""
        self.fields = standard_fields()
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in OBJECTS}
        self.filters: dict[int, dict[str, Any]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.tokens: dict[str, Token] = {}
        self.apps: dict[str, tuple[str, str]] = {}  # client id -> (secret, redirect uri)
        self.codes: dict[str, tuple[str, int]] = {}  # authorization code -> (client id, user)
        self.refresh_tokens: dict[str, tuple[str, int]] = {}  # -> (client id, user)
        self.token_lifetime = 3600.0
        self.read_only_users: set[int] = set()
        self.fault: str | None = None  # "500" or "html": the next record call misbehaves
        self.calls: deque[tuple[str, str]] = deque(maxlen=100_000)
        self.queries: deque[tuple[str, str, dict[str, str]]] = deque(maxlen=100_000)
        # how each call authenticated: (method, path, "header" | "query" | "bearer" | ...)
        self.auth: deque[tuple[str, str, str]] = deque(maxlen=100_000)
        self._ids = itertools.count(1)
        self._filter_ids = itertools.count(1)
        self.admin = self.add_user("Ada Admin", "ada@acme.example", is_admin=True)

    # ---- state ------------------------------------------------------------------------------

    def add_user(self, name: str, email: str, is_admin: bool = False) -> int:
        user_id = 10_000 + len(self.users) + 1
        now = _v1_time(_now())
        self.users[user_id] = {
            "id": user_id,
            "name": name,
            "email": email,
            "lang": 1,
            "locale": "en_US",
            "timezone_name": "Europe/Tallinn",
            "timezone_offset": "+02:00",
            "default_currency": "EUR",
            "icon_url": None,
            "active_flag": True,
            "is_admin": 1 if is_admin else 0,
            "role_id": 1,
            "created": now,
            "modified": now,
            "last_login": now,
            "has_created_company": is_admin,
            "is_you": False,
            "phone": None,
        }
        return user_id

    def add_api_token(self, user_id: int | None = None) -> str:
        token = secrets.token_hex(20)
        self.tokens[token] = Token(user_id or self.admin)
        return token

    def issue_access_token(self, user_id: int | None = None, lifetime: float = 3600) -> str:
        token = f"v1u:{secrets.token_urlsafe(40)}"
        self.tokens[token] = Token(user_id or self.admin, time.time() + lifetime)
        return token

    def add_app(self, client_id: str, client_secret: str, redirect_uri: str = "") -> None:
        self.apps[client_id] = (client_secret, redirect_uri)

    def issue_refresh_token(self, client_id: str, user_id: int | None = None) -> str:
        token = f"{self.company_id}:{user_id or self.admin}:{secrets.token_hex(20)}"
        self.refresh_tokens[token] = (client_id, user_id or self.admin)
        return token

    def expire_tokens(self) -> None:
        for token in self.tokens.values():
            if token.expires_at is not None:
                token.expires_at = 0

    def add_custom_field(
        self,
        collection: str,
        name: str,
        field_type: str = "varchar",
        options: tuple[str, ...] = (),
        key: str | None = None,
    ) -> str:
        made = _f(key or custom_key(), name, field_type, custom=True, options=options)
        self.fields[collection].append(made)
        if collection == "deals":  # leads share the deals' custom fields
            self.fields["leads"].append(made)
        return made.key

    def insert(self, collection: str, values: dict[str, Any], user_id: int | None = None) -> str:
        """A record made through the same checks as the API's (v2 shapes)."""
        return str(self._create(collection, values, user_id or self.admin)["id"])

    # ---- HTTP -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.calls.append((request.method, request.path))
            query = {k: v for k, v in request.query.items() if k != "api_token"}
            self.queries.append((request.method, request.path, query))
            self.auth.append((request.method, request.path, _mechanism(request)))
            if not self.base_url:
                self.base_url = f"{request.scheme}://{request.host}"
            return await handler(request)

        application = web.Application(middlewares=[record])
        application.router.add_get("/oauth/authorize", self._authorize)
        application.router.add_post("/oauth/token", self._token)
        routes: list[tuple[str, str, Any]] = [
            ("GET", "/v1/users/me", self._me),
            ("GET", "/v1/users", self._users),
            ("GET", "/v1/users/{id}", self._user),
            ("GET", "/v1/filters", self._filters),
            ("POST", "/v1/filters", self._filter_create),
            ("GET", "/v1/filters/{id}", self._filter_get),
            ("PUT", "/v1/filters/{id}", self._filter_update),
            ("DELETE", "/v1/filters/{id}", self._filter_delete),
        ]
        for collection, (_, _, fields_path) in OBJECTS.items():
            routes.append(("GET", f"/v1/{fields_path}", self._fields_route(collection)))
            v1 = f"/v1/{collection}"
            routes += [
                ("GET", v1, self._v1_list(collection)),
                ("POST", v1, self._v1_create(collection)),
                ("GET", v1 + "/{id}", self._v1_get(collection)),
                (
                    "PATCH" if collection == "leads" else "PUT",
                    v1 + "/{id}",
                    self._v1_update(collection),
                ),
                ("DELETE", v1 + "/{id}", self._delete(collection)),
            ]
            if collection in V2_OBJECTS:
                v2 = f"/api/v2/{collection}"
                routes += [
                    ("GET", v2, self._v2_list(collection)),
                    ("POST", v2, self._v2_create(collection)),
                    ("GET", v2 + "/{id}", self._v2_get(collection)),
                    ("PATCH", v2 + "/{id}", self._v2_update(collection)),
                    ("DELETE", v2 + "/{id}", self._delete(collection)),
                ]
        for method, path, handler in routes:
            application.router.add_route(method, path, self._guard(handler))
        return application

    def _guard(self, handler: Callable[[web.Request, Token], Awaitable[web.Response]]) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            secret = (
                header.removeprefix("Bearer ").strip()
                if header.startswith("Bearer ")
                else request.headers.get("x-api-token") or request.query.get("api_token", "")
            )
            token = self.tokens.get(secret)
            if token is None or (token.expires_at is not None and token.expires_at < time.time()):
                return pd_error(401, "unauthorized access")
            now = time.monotonic()
            while token.requests and now - token.requests[0] > 2:
                token.requests.popleft()
            headers = {
                "x-ratelimit-limit": str(self.burst),
                "x-ratelimit-remaining": str(max(0, self.burst - len(token.requests) - 1)),
                "x-ratelimit-reset": "2",
            }
            if len(token.requests) >= self.burst:
                response = pd_error(429, "Request over limit")
                response.headers.update({**headers, "Retry-After": "2"})
                return response
            token.requests.append(now)
            if self.fault is not None and request.path != "/v1/users/me":
                fault, self.fault = self.fault, None
                if fault == "html":
                    return web.Response(text="<html>maintenance</html>", content_type="text/html")
                return web.Response(status=int(fault), text="upstream failure")
            try:
                response = await handler(request, token)
            except Refused as refused:
                response = refused.response()
            response.headers.update(headers)
            return response

        return guarded

    @staticmethod
    async def _json(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, "Invalid JSON body") from None
        if not isinstance(body, dict):
            raise Refused(400, "Invalid JSON body: an object is expected")
        return body

    def _write_allowed(self, token: Token) -> None:
        if token.user_id in self.read_only_users:
            raise Refused(403, "You do not have permissions to edit this item")

    # ---- OAuth 2.0 --------------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        """The consent page, approved at once for the company's admin: back to the redirect URI
        with a code (and the state)."""
        client_id = request.query.get("client_id", "")
        app = self.apps.get(client_id)
        redirect = request.query.get("redirect_uri", "")
        if app is None or (app[1] and redirect != app[1]):
            return web.Response(status=400, text="invalid client or redirect_uri")
        code = secrets.token_urlsafe(24)
        self.codes[code] = (client_id, self.admin)
        state = request.query.get("state")
        query = {"code": code, **({"state": state} if state is not None else {})}
        raise web.HTTPFound(str(URL(redirect).update_query(query)))

    async def _token(self, request: web.Request) -> web.Response:
        """POST /oauth/token: HTTP Basic client authentication, form body."""
        header = request.headers.get("Authorization", "")
        try:
            pair = base64.b64decode(header.removeprefix("Basic ").strip()).decode()
        except ValueError:
            pair = ""
        client_id, _, secret = pair.partition(":")
        app = self.apps.get(client_id)
        if not header.startswith("Basic ") or app is None or app[0] != secret:
            return web.json_response(
                {"error": "invalid_client", "error_description": "Invalid client credentials"},
                status=401,
            )
        form = await request.post()
        grant = form.get("grant_type")
        if grant == "authorization_code":
            found = self.codes.pop(str(form.get("code", "")), None)
            if found is None or found[0] != client_id:
                return _grant_error("Invalid authorization code")
            user = found[1]
            refresh = self.issue_refresh_token(client_id, user)
        elif grant == "refresh_token":
            refresh = str(form.get("refresh_token", ""))
            owner = self.refresh_tokens.get(refresh)
            if owner is None or owner[0] != client_id:
                return _grant_error("Invalid refresh token")
            user = owner[1]
        else:
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": "Unsupported grant"},
                status=400,
            )
        access = self.issue_access_token(user, self.token_lifetime)
        return web.json_response(
            {
                "access_token": access,
                "token_type": "Bearer",
                "refresh_token": refresh,
                "scope": "base,deals:full,contacts:full,activities:full,leads:full",
                "expires_in": int(self.token_lifetime) - 1,
                "api_domain": self.base_url,
            }
        )

    # ---- users ------------------------------------------------------------------------------

    async def _me(self, request: web.Request, token: Token) -> web.Response:
        me = {
            **self.users[token.user_id],
            "is_you": True,
            "company_id": self.company_id,
            "company_name": self.company_name,
            "company_domain": "acme-sim",
            "company_country": "EE",
            "company_industry": "software",
            "language": {"language_code": "en", "country_code": "US"},
        }
        return _ok(me)

    async def _users(self, request: web.Request, token: Token) -> web.Response:
        return _ok(
            [{**u, "is_you": u["id"] == token.user_id} for _, u in sorted(self.users.items())]
        )

    async def _user(self, request: web.Request, token: Token) -> web.Response:
        user = self.users.get(_int(request.match_info["id"]) or 0)
        if user is None:
            raise Refused(404, "User not found")
        return _ok({**user, "is_you": user["id"] == token.user_id})

    # ---- fields -----------------------------------------------------------------------------

    def _fields_route(
        self, collection: str
    ) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            fields = self.fields[collection]
            start, limit = _paging(request)
            page = fields[start : start + limit]
            return _ok(
                [f.describe(start + i) for i, f in enumerate(page)],
                _pagination(start, limit, len(page), start + limit < len(fields)),
            )

        return handler

    def _field(self, collection: str, key: str) -> Field | None:
        if key == "owner_id" and collection in OWNER_IS_USER_ID:
            key = "user_id"  # v2's owner_id is v1's user_id field
        return next((f for f in self.fields[collection] if f.key == key), None)

    # ---- records: the store, in v2 shapes -----------------------------------------------------

    def _check(
        self, collection: str, values: dict[str, Any], creating: bool, v2: bool
    ) -> dict[str, Any]:
        """Values as stored (v2 shapes), or Pipedrive's validation error."""
        problems: list[str] = []
        clean: dict[str, Any] = {}
        custom = values.pop("custom_fields", None) if v2 else None
        if custom is not None and not isinstance(custom, dict):
            problems.append("custom_fields: Expected object")
            custom = None
        for key, value in list(values.items()) + list((custom or {}).items()):
            spec = self._field(collection, key)
            if key in ("emails", "phones", "participants", "value") and collection in (
                "persons",
                "activities",
                "leads",
            ):
                spec = Field(0, key, key, "list")
            if spec is None or not spec.writable:
                if v2 or spec is not None:
                    problems.append(f"{key}: Unrecognized or read-only key")
                continue  # v1 ignores what it does not know
            if v2 and spec.custom and custom is None:
                problems.append(f"{key}: custom fields go under custom_fields")
                continue
            if value is None:
                clean[key] = None
                continue
            if spec.custom and spec.field_type in V2_CUSTOM_SHAPES:
                problem = _custom_problem(spec, value)
                if problem:
                    problems.append(f"{key}: {problem}")
                else:
                    clean[key] = value  # kept in v2's shape
                continue
            problem = self._bad_value(collection, spec, value, v2)
            if problem:
                problems.append(f"{key}: {problem}")
                continue
            clean[key] = self._normal(collection, spec, value)
        if creating:
            for spec in self.fields[collection]:
                if spec.mandatory and clean.get(spec.key) in (None, ""):
                    problems.append(f"{spec.key}: Required")
            if collection == "leads" and not (
                clean.get("person_id") or clean.get("organization_id")
            ):
                problems.append("person_id: A lead must be linked to a person or an organization")
            if collection == "notes" and not any(
                clean.get(k) for k in ("deal_id", "person_id", "org_id", "lead_id")
            ):
                problems.append("deal_id: The note must be attached to a deal, person, org or lead")
        if problems:
            raise _invalid(problems)
        return clean

    def _bad_value(self, collection: str, spec: Field, value: Any, v2: bool) -> str | None:
        kind = spec.field_type
        if kind in ("monetary", "double", "int") and (
            isinstance(value, bool) or not isinstance(value, (int, float))
        ):
            if v2 or not _number(value):
                return "Expected number"
        if kind in ("org", "people", "deal", "user", "stage") and spec.key != "lead_id":
            if isinstance(value, bool) or not isinstance(value, int):
                if v2 or not str(value).isdigit():
                    return "Expected integer"
            target = {"org": "organizations", "people": "persons", "deal": "deals"}.get(kind)
            if target and str(value) not in self.records[target]:
                return f"{target[:-1].capitalize()} with id {value} not found"
        if kind == "lead" and (not isinstance(value, str) or value not in self.records["leads"]):
            return "Lead not found"
        if kind == "date" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
            return "Expected date in YYYY-MM-DD format"
        if kind == "enum" and spec.custom:  # a custom option field keeps its option's id
            if str(value) not in {str(i + 1) for i in range(len(spec.options))}:
                return "Invalid option id"
        elif kind in ("enum", "status") and spec.options and str(value) not in spec.options:
            return f"Invalid option, expected one of: {', '.join(spec.options)}"
        if kind == "boolean" and not isinstance(value, bool) and value not in (0, 1):
            return "Expected boolean"
        if spec.key in ("emails", "phones", "participants"):
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                return "Expected array of objects"
        if kind == "address" and not isinstance(value, (dict, str)):
            return "Expected object"
        if kind in ("varchar", "text", "phone") and spec.key not in ("email", "phone"):
            if not isinstance(value, str):
                return "Expected string"
        return None

    def _normal(self, collection: str, spec: Field, value: Any) -> Any:
        kind = spec.field_type
        if kind in ("org", "people", "deal", "user", "stage") and spec.key != "lead_id":
            return int(value)
        if kind in ("monetary", "double", "int"):
            return float(value) if not isinstance(value, int) else value
        if kind == "address" and isinstance(value, str):
            return {"value": value}
        if kind == "boolean":
            return bool(value)
        if kind == "enum" and spec.custom:
            return int(value)
        if spec.key in ("email", "phone") and not isinstance(value, list):  # v1 accepts text
            return [{"value": str(value), "primary": True, "label": "work"}]
        return value

    def _v1_shapes(self, collection: str, values: dict[str, Any]) -> dict[str, Any]:
        """v1 bodies as v2 ones: a person's ``email``/``phone`` (text or a list), the owner
        of a deal or activity (``user_id``) and custom fields (top-level keys, a monetary
        field's currency as ``<key>_currency``, options as ``"1,2"``)."""
        shaped = dict(values)
        if collection in OWNER_IS_USER_ID and "user_id" in shaped:
            shaped["owner_id"] = shaped.pop("user_id")
        custom: dict[str, Any] = {}
        for spec in self.fields[collection]:
            if not spec.custom or spec.key not in shaped:
                continue
            value = shaped.pop(spec.key)
            currency = shaped.pop(f"{spec.key}_currency", None) or "EUR"
            if value is not None and spec.field_type == "monetary":
                value = {"value": float(value) if _number(value) else value, "currency": currency}
            elif value is not None and spec.field_type == "set":
                value = [int(v) if str(v).isdigit() else v for v in str(value).split(",")]
            elif value is not None and spec.field_type == "address":
                value = {"value": str(value)}
            elif value is not None and spec.field_type == "enum" and str(value).isdigit():
                value = int(value)
            custom[spec.key] = value
        if custom:
            shaped["custom_fields"] = custom
        if collection != "persons":
            return shaped
        for v1, v2 in (("email", "emails"), ("phone", "phones")):
            if v1 in shaped:
                value = shaped.pop(v1)
                if isinstance(value, str):
                    value = [{"value": value, "primary": True, "label": "work"}]
                shaped[v2] = value
        return shaped

    def _create(self, collection: str, values: dict[str, Any], user_id: int) -> dict[str, Any]:
        clean = self._check(collection, values, creating=True, v2=True)
        now = _now()
        record_id: int | str = str(uuid.uuid4()) if collection == "leads" else next(self._ids)
        record = {"id": record_id, "add_time": now, "update_time": now, **clean}
        record.setdefault("owner_id", user_id)
        if collection == "notes":
            record["user_id"] = user_id
        if collection == "deals":
            record.setdefault("status", "open")
            record.setdefault("currency", "EUR")
            record.setdefault("stage_id", 1)
        if collection == "activities":
            record.setdefault("type", "task")
            record.setdefault("done", False)
        self._derive(collection, record)
        self.records[collection][str(record_id)] = record
        return record

    @staticmethod
    def _derive(collection: str, record: dict[str, Any]) -> None:
        if collection == "persons" and record.get("name"):
            first, _, last = str(record["name"]).strip().partition(" ")
            record["first_name"], record["last_name"] = first, last or None
        if collection == "persons":
            record.setdefault("emails", [])
            record.setdefault("phones", [])
        if collection == "activities" and "person_id" in record:
            person = record.pop("person_id")
            record["participants"] = [{"person_id": person, "primary": True}] if person else []

    def _record(self, collection: str, record_id: str) -> dict[str, Any]:
        record = self.records[collection].get(record_id)
        if record is None:
            raise Refused(404, f"{OBJECTS[collection][0].capitalize()} not found")
        return record

    def _apply(
        self, collection: str, record: dict[str, Any], values: dict[str, Any], v2: bool
    ) -> None:
        clean = self._check(collection, values, creating=False, v2=True)
        for key, value in clean.items():
            spec = self._field(collection, key)
            if spec is not None and spec.mandatory and value in (None, ""):
                raise _invalid([f"{key}: Required"])
        record.update(clean)
        record["update_time"] = _now()
        self._derive(collection, record)

    # ---- rendering ----------------------------------------------------------------------------

    def _v2(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        custom_keys = [f.key for f in self.fields[collection] if f.custom]
        shown: dict[str, Any] = {
            k: v for k, v in record.items() if k not in custom_keys and k != "custom_fields"
        }
        shown["add_time"] = _v2_time(record["add_time"])
        shown["update_time"] = _v2_time(record["update_time"])
        shown["custom_fields"] = {k: record.get(k) for k in custom_keys}
        if collection == "persons":
            shown.setdefault("job_title", None)
            shown.setdefault("org_id", None)
        if collection == "activities":
            shown.setdefault("participants", [])
            for key in ("deal_id", "lead_id", "org_id", "due_date", "location", "note"):
                shown.setdefault(key, None)
        if collection == "deals":
            for key in ("org_id", "person_id", "value", "expected_close_date", "probability"):
                shown.setdefault(key, None)
        if collection == "organizations":
            shown.setdefault("address", None)
        shown["is_deleted"] = bool(record.get("is_deleted"))
        return shown

    def _v1(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in self._v2(collection, record).items() if k != "custom_fields"}
        for spec in self.fields[collection]:
            if not spec.custom:
                continue
            value = record.get(spec.key)
            if spec.field_type == "monetary":  # v1: the number and <key>_currency
                shown[f"{spec.key}_currency"] = value.get("currency") if value else None
                value = value.get("value") if value else None
            elif spec.field_type == "address":
                value = value.get("value") if value else None
            elif spec.field_type == "set":
                value = ",".join(str(v) for v in value) if value else None
            shown[spec.key] = value
        if collection == "leads":  # leads are newer: ISO times, v1 only
            shown["add_time"] = record["add_time"].isoformat().replace("+00:00", ".000Z")
            shown["update_time"] = record["update_time"].isoformat().replace("+00:00", ".000Z")
            return shown
        shown["add_time"] = _v1_time(record["add_time"])
        shown["update_time"] = _v1_time(record["update_time"])
        shown["active_flag"] = not shown.pop("is_deleted", False)
        owner = self.users.get(record.get("owner_id") or 0)
        if collection in ("persons", "organizations", "deals") and owner is not None:
            shown["owner_id"] = {
                "id": owner["id"],
                "name": owner["name"],
                "email": owner["email"],
                "value": owner["id"],
            }
        if collection == "deals":
            shown["user_id"] = shown.pop("owner_id", None)
        if collection == "activities":
            shown["user_id"] = shown.pop("owner_id", None)
            location = record.get("location")
            shown["location"] = location.get("value") if isinstance(location, dict) else None
            participants = record.get("participants") or []
            shown["person_id"] = next(
                (p.get("person_id") for p in participants if p.get("primary")), None
            )
            shown.pop("participants", None)
        for key, target in (("org_id", "organizations"), ("person_id", "persons")):
            linked = self.records[target].get(str(record.get(key)))
            if linked is not None and collection in ("persons", "deals"):
                shown[key] = {"name": linked.get("name"), "value": linked["id"]}
        if collection == "persons":
            shown["email"] = shown.pop("emails", [])
            shown["phone"] = shown.pop("phones", [])
            shown["primary_email"] = next(
                (e["value"] for e in shown["email"] if e.get("primary")), None
            )
        if collection == "organizations":
            address = record.get("address") or {}
            shown["address"] = address.get("value")
            for part in ("locality", "country", "postal_code", "admin_area_level_1", "route"):
                shown[f"address_{part}"] = address.get(part)
        return shown

    # ---- selection: filter, sort --------------------------------------------------------------

    def _selected(
        self, collection: str, request: web.Request, v2: bool = False
    ) -> list[dict[str, Any]]:
        """The records a list shows: not deleted ones, through the filter or else the query
        parameters (v2: only those its documentation names for the object)."""
        rows = [r for r in self.records[collection].values() if not r.get("is_deleted")]
        filter_id = request.query.get("filter_id")
        if filter_id:
            found = self.filters.get(_int(filter_id) or 0)
            if found is None or found["type"] != OBJECTS[collection][1]:
                raise Refused(404, "Filter not found")
            rows = [r for r in rows if self._passes(collection, r, found["conditions"])]
        else:
            for key in ("owner_id", "org_id", "person_id", "deal_id", "lead_id", "user_id"):
                wanted = request.query.get(key)
                if key == "user_id" and collection != "notes":
                    continue
                if v2 and key not in V2_PARAMETERS[collection]:
                    continue
                if wanted is not None:
                    rows = [r for r in rows if str(self._link(collection, r, key)) == wanted]
            if collection == "leads":
                wanted = request.query.get("organization_id")
                if wanted is not None:
                    rows = [r for r in rows if str(r.get("organization_id")) == wanted]
            ids = request.query.get("ids")
            if ids and (not v2 or "ids" in V2_PARAMETERS[collection]):
                rows = [r for r in rows if str(r["id"]) in ids.split(",")]
        return rows

    @staticmethod
    def _link(collection: str, record: dict[str, Any], key: str) -> Any:
        if key == "user_id" and collection in OWNER_IS_USER_ID:
            key = "owner_id"
        if collection == "activities" and key == "person_id":
            return next(
                (p.get("person_id") for p in record.get("participants") or [] if p.get("primary")),
                None,
            )
        return record.get(key)

    def _passes(self, collection: str, record: dict[str, Any], conditions: dict[str, Any]) -> bool:
        groups = conditions.get("conditions") or []
        for group in groups:
            results = [
                self._condition(collection, record, c) for c in group.get("conditions") or []
            ]
            if not results:
                continue
            if group.get("glue") == "or" and not any(results):
                return False
            if group.get("glue") != "or" and not all(results):
                return False
        return True

    def _condition(
        self, collection: str, record: dict[str, Any], condition: dict[str, Any]
    ) -> bool:
        spec = next(
            (f for f in self.fields[collection] if str(f.id) == str(condition.get("field_id"))),
            None,
        )
        if spec is None:
            return False
        operator = str(condition.get("operator"))
        wanted = condition.get("value")
        raw = self._link(collection, record, spec.key) if spec.key != "email" else None
        if spec.key in ("email", "phone"):
            texts = [str(e.get("value")) for e in record.get(spec.key + "s") or []]
        elif spec.field_type in ("address", "monetary") and isinstance(raw, dict):
            texts = [str(raw["value"])] if raw.get("value") not in (None, "") else []
        elif isinstance(raw, list):
            texts = [str(v) for v in raw]
        elif raw is None or raw == "":
            texts = []
        elif isinstance(raw, datetime):
            texts = [raw.date().isoformat()]
        elif isinstance(raw, bool):
            texts = ["1" if raw else "0"]
        else:
            texts = [str(raw)]
        if operator == "IS NULL":
            return not texts
        if operator == "IS NOT NULL":
            return bool(texts)
        if not texts:
            return (
                operator == "!="
            )  # SQL would say unknown; Pipedrive shows empty ones as not equal
        numeric = spec.field_type in ("int", "double", "monetary", "org", "people", "deal", "user")
        like = {"LIKE '$%'": "{}%", "LIKE '%$%'": "%{}%", "NOT LIKE '$%'": "{}%"}
        if operator in like:
            pattern = _like(like[operator].format(str(wanted)))
            hit = any(pattern.fullmatch(text) for text in texts)
            return not hit if operator.startswith("NOT") else hit
        compare: dict[str, Callable[[Any, Any], bool]] = {
            "=": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            ">": lambda a, b: a > b,
            "<=": lambda a, b: a <= b,
            ">=": lambda a, b: a >= b,
        }
        if operator not in compare:
            raise Refused(400, f"Unknown operator {operator}")

        def holds(text: str) -> bool:
            left: Any = text.lower()
            right: Any = str(wanted).lower()
            if numeric and _number(text) and _number(wanted):
                left, right = float(text), float(str(wanted))
            return compare[operator](left, right)

        return all(map(holds, texts)) if operator == "!=" else any(map(holds, texts))

    def _sorted_v1(
        self, collection: str, rows: list[dict[str, Any]], sort: str
    ) -> list[dict[str, Any]]:
        keys = [part.strip().split() for part in sort.split(",") if part.strip()]
        rows = sorted(rows, key=lambda r: str(r["id"]))
        rows = sorted(rows, key=lambda r: int(r["id"]) if isinstance(r["id"], int) else 0)
        for spec in reversed(keys):
            name = spec[0]
            descending = len(spec) > 1 and spec[1].upper() == "DESC"
            if self._field(collection, name) is None:
                raise Refused(400, f"Invalid sort field: {name}")
            if name == "user_id" and collection in OWNER_IS_USER_ID:
                name = "owner_id"
            rows = _ordered(rows, name, descending)
        return rows

    # ---- v1 routes ----------------------------------------------------------------------------

    def _v1_list(self, collection: str) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            rows = self._selected(collection, request)
            if collection == "activities":
                # v1 activities: no sort; the token's user's own unless user_id (0: everyone's)
                wanted = request.query.get("user_id")
                user = token.user_id if wanted is None else _int(wanted)
                rows = sorted(rows, key=lambda r: int(r["id"]))
                rows = [r for r in rows if user in (0, r.get("owner_id"))]
            else:
                rows = self._sorted_v1(collection, rows, request.query.get("sort", ""))
            start, limit = _paging(request)
            page = rows[start : start + limit]
            more = start + limit < len(rows)
            data = [self._v1(collection, r) for r in page]
            if collection == "leads":  # the leads API pages without the pagination object
                return _ok(data, {"start": start, "limit": limit, "more_items_in_collection": more})
            return _ok(data or None, _pagination(start, limit, len(page), more))

        return handler

    def _v1_get(self, collection: str) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            record = self._record(collection, request.match_info["id"])
            return _ok(self._v1(collection, record))

        return handler

    def _v1_create(
        self, collection: str
    ) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            self._write_allowed(token)
            body = await self._json(request)
            if collection == "leads":
                record = self._create(collection, body, token.user_id)
            else:
                known = {f.key for f in self.fields[collection]}
                known |= {f"{f.key}_currency" for f in self.fields[collection] if f.custom}
                values = self._v1_shapes(collection, {k: v for k, v in body.items() if k in known})
                record = self._create(collection, values, token.user_id)
            return _ok(self._v1(collection, record), status=201)

        return handler

    def _v1_update(
        self, collection: str
    ) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            self._write_allowed(token)
            record = self._record(collection, request.match_info["id"])
            body = await self._json(request)
            known = {f.key for f in self.fields[collection]}
            known |= {f"{f.key}_currency" for f in self.fields[collection] if f.custom}
            values = (
                body if collection == "leads" else {k: v for k, v in body.items() if k in known}
            )
            values = self._v1_shapes(collection, values)
            self._apply(collection, record, values, v2=False)
            return _ok(self._v1(collection, record))

        return handler

    def _delete(self, collection: str) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            self._write_allowed(token)
            record = self._record(collection, request.match_info["id"])
            if collection not in V2_OBJECTS:
                del self.records[collection][str(record["id"])]
            elif record.get("is_deleted"):
                raise Refused(404, f"{OBJECTS[collection][0].capitalize()} not found")
            else:  # marked as deleted; Pipedrive removes it for good after 30 days
                record["is_deleted"] = True
                record["update_time"] = _now()
            return _ok({"id": record["id"]})

        return handler

    # ---- v2 routes ----------------------------------------------------------------------------

    def _v2_list(self, collection: str) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            query = request.query
            sort_by = query.get("sort_by", "id")
            direction = query.get("sort_direction", "asc")
            problems = []
            if sort_by not in V2_SORTS[collection]:
                problems.append(f"sort_by: Invalid enum value, expected {V2_SORTS[collection]}")
            if direction not in ("asc", "desc"):
                problems.append("sort_direction: Invalid enum value, expected 'asc' | 'desc'")
            limit = _int(query.get("limit", "100"))
            if limit is None or not 1 <= limit <= MAX_LIMIT:
                problems.append(f"limit: Number must be between 1 and {MAX_LIMIT}")
            if problems:
                raise _invalid(problems)
            assert limit is not None
            offset = 0
            if query.get("cursor"):
                try:
                    offset = int(json.loads(base64.b64decode(query["cursor"]))["offset"])
                except (ValueError, KeyError, TypeError):
                    raise Refused(400, "Invalid cursor") from None
            rows = self._selected(collection, request, v2=True)
            rows = sorted(rows, key=lambda r: int(r["id"]))
            if sort_by != "id":
                rows = _ordered(rows, sort_by, direction == "desc")
            elif direction == "desc":
                rows.reverse()
            page = rows[offset : offset + limit]
            following = None
            if offset + limit < len(rows):
                following = base64.b64encode(
                    json.dumps({"offset": offset + limit}).encode()
                ).decode()
            return _ok([self._v2(collection, r) for r in page], {"next_cursor": following})

        return handler

    def _v2_get(self, collection: str) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            if not request.match_info["id"].isdigit():
                raise _invalid(["id: Expected number, received string"])
            return _ok(self._v2(collection, self._record(collection, request.match_info["id"])))

        return handler

    def _v2_create(
        self, collection: str
    ) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            self._write_allowed(token)
            body = await self._json(request)
            return _ok(self._v2(collection, self._create(collection, body, token.user_id)))

        return handler

    def _v2_update(
        self, collection: str
    ) -> Callable[[web.Request, Token], Awaitable[web.Response]]:
        async def handler(request: web.Request, token: Token) -> web.Response:
            self._write_allowed(token)
            if not request.match_info["id"].isdigit():
                raise _invalid(["id: Expected number, received string"])
            record = self._record(collection, request.match_info["id"])
            self._apply(collection, record, await self._json(request), v2=True)
            return _ok(self._v2(collection, record))

        return handler

    # ---- filters ------------------------------------------------------------------------------

    def _filter_view(self, found: dict[str, Any], with_conditions: bool) -> dict[str, Any]:
        shown = {k: v for k, v in found.items() if with_conditions or k != "conditions"}
        return shown

    async def _filters(self, request: web.Request, token: Token) -> web.Response:
        kind = request.query.get("type")
        return _ok(
            [
                self._filter_view(f, False)
                for f in self.filters.values()
                if kind is None or f["type"] == kind
            ]
        )

    async def _filter_get(self, request: web.Request, token: Token) -> web.Response:
        found = self.filters.get(_int(request.match_info["id"]) or 0)
        if found is None:
            raise Refused(404, "Filter not found")
        return _ok(self._filter_view(found, True))

    def _checked_conditions(self, kind: Any, conditions: Any) -> dict[str, Any]:
        collection = next((c for c, spec in OBJECTS.items() if spec[1] == kind), None)
        if collection is None:
            raise Refused(400, "Invalid filter type")
        if isinstance(conditions, str):
            try:
                conditions = json.loads(conditions)
            except ValueError:
                raise Refused(400, "Invalid conditions JSON") from None
        groups = conditions.get("conditions") if isinstance(conditions, dict) else None
        if (
            not isinstance(groups, list)
            or conditions.get("glue") != "and"
            or len(groups) != 2
            or [g.get("glue") if isinstance(g, dict) else None for g in groups] != ["and", "or"]
        ):
            raise Refused(400, "Invalid conditions structure")
        lines = [c for g in groups for c in g.get("conditions") or []]
        if len(lines) > MAX_CONDITIONS:
            raise Refused(400, f"A filter may have at most {MAX_CONDITIONS} conditions")
        operators = {"=", "!=", "<", ">", "<=", ">=", "IS NULL", "IS NOT NULL"}
        operators |= {"LIKE '$%'", "LIKE '%$%'", "NOT LIKE '$%'"}
        for line in lines:
            if not isinstance(line, dict) or line.get("operator") not in operators:
                raise Refused(400, "Invalid condition operator")
            if line.get("object") != OBJECTS[collection][0]:
                raise Refused(400, f"Invalid condition object {line.get('object')!r}")
            spec = next(
                (f for f in self.fields[collection] if str(f.id) == str(line.get("field_id"))),
                None,
            )
            if spec is None:
                raise Refused(400, f"Invalid field_id {line.get('field_id')!r}")
            if spec.field_type == "date" and line["operator"] not in ("IS NULL", "IS NOT NULL"):
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(line.get("value"))):
                    raise Refused(400, "Date values must be in the YYYY-MM-DD format")
        checked: dict[str, Any] = conditions
        return checked

    async def _filter_create(self, request: web.Request, token: Token) -> web.Response:
        body = await self._json(request)
        if not isinstance(body.get("name"), str) or not body["name"]:
            raise Refused(400, "Name must be given")
        conditions = self._checked_conditions(body.get("type"), body.get("conditions"))
        filter_id = next(self._filter_ids)
        now = _v1_time(_now())
        self.filters[filter_id] = {
            "id": filter_id,
            "name": body["name"],
            "active_flag": True,
            "type": body["type"],
            "temporary_flag": None,
            "user_id": token.user_id,
            "add_time": now,
            "update_time": now,
            "visible_to": "7",
            "custom_view_id": None,
            "conditions": conditions,
        }
        return _ok(self._filter_view(self.filters[filter_id], True))

    async def _filter_update(self, request: web.Request, token: Token) -> web.Response:
        found = self.filters.get(_int(request.match_info["id"]) or 0)
        if found is None:
            raise Refused(404, "Filter not found")
        body = await self._json(request)
        if "conditions" in body:
            found["conditions"] = self._checked_conditions(found["type"], body["conditions"])
        if isinstance(body.get("name"), str):
            found["name"] = body["name"]
        return _ok(self._filter_view(found, True))

    async def _filter_delete(self, request: web.Request, token: Token) -> web.Response:
        filter_id = _int(request.match_info["id"]) or 0
        if self.filters.pop(filter_id, None) is None:
            raise Refused(404, "Filter not found")
        return _ok({"id": filter_id})


# ---- helpers -------------------------------------------------------------------------------


def _mechanism(request: web.Request) -> str:
    """How a call authenticated, recorded for tests (the token itself is never kept)."""
    found = []
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        found.append("bearer")
    elif header.startswith("Basic "):
        found.append("basic")
    if "x-api-token" in request.headers:
        found.append("header")
    if "api_token" in request.query:
        found.append("query")
    return "+".join(found) or "none"


def _custom_problem(spec: Field, value: Any) -> str | None:
    """What is wrong with a v2 custom field value of a monetary (``{"value": 2300,
    "currency": "EUR"}``), multiple options (``[1, 2]``) or address (``{"value": ...}``)
    field."""
    if spec.field_type == "monetary":
        if (
            not isinstance(value, dict)
            or isinstance(value.get("value"), bool)
            or not isinstance(value.get("value"), (int, float))
            or not isinstance(value.get("currency"), str)
            or set(value) - {"value", "currency"}
        ):
            return 'Expected object {"value": number, "currency": string}'
    if spec.field_type == "set":
        options = {i + 1 for i in range(len(spec.options))}
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v in options for v in value
        ):
            return "Expected array of option ids"
    if spec.field_type == "address" and (
        not isinstance(value, dict) or not isinstance(value.get("value"), str)
    ):
        return 'Expected object {"value": string, ...}'
    return None


def _ok(data: Any, additional: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    body: dict[str, Any] = {"success": True, "data": data}
    if additional is not None:
        body["additional_data"] = additional
    return web.json_response(body, status=status)


def _grant_error(message: str) -> web.Response:
    return web.json_response({"error": "invalid_grant", "error_description": message}, status=400)


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _number(value: Any) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _paging(request: web.Request) -> tuple[int, int]:
    start = _int(request.query.get("start", "0"))
    limit = _int(request.query.get("limit", "100"))
    if start is None or limit is None:
        raise Refused(400, "start and limit must be whole numbers")
    return start, min(max(limit, 1), MAX_LIMIT)


def _pagination(start: int, limit: int, count: int, more: bool) -> dict[str, Any]:
    pagination: dict[str, Any] = {
        "start": start,
        "limit": limit,
        "more_items_in_collection": more,
    }
    if more:
        pagination["next_start"] = start + count
    return {"pagination": pagination}


def _like(pattern: str) -> re.Pattern[str]:
    """SQL LIKE, case-insensitive: % is any text, _ any one character."""
    parts = ["." if c == "_" else ".*" if c == "%" else re.escape(c) for c in pattern]
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _sort_key(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dict):
        return str(value.get("value") or "").lower()
    return str(value).lower()


def _ordered(rows: list[dict[str, Any]], name: str, descending: bool) -> list[dict[str, Any]]:
    """Sorted by ``name``, empty values last, as Pipedrive lists them."""
    present = [r for r in rows if r.get(name) not in (None, "")]
    absent = [r for r in rows if r.get(name) in (None, "")]
    present.sort(key=lambda r: _sort_key(r[name]), reverse=descending)
    return present + absent


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point Pipedrive at a simulator running at ``base_url``
    (the simulator plays both the company domain and oauth.pipedrive.com)."""
    host = base_url.removeprefix("https://")
    oauth = {
        "authorize_url": f"{base_url}/oauth/authorize",
        "token_url": f"{base_url}/oauth/token",
    }
    return {"Pipedrive": {"instance_hosts": [host], "oauth": oauth}}


def seed_pipedrive(sim: PipedriveSimulator) -> None:
    """A small, believable Pipedrive company: organizations with their people, deals,
    activities, leads and notes."""
    tier = sim.add_custom_field("persons", "Loyalty tier", "enum", ("Gold", "Silver", "Bronze"))
    orgs = []
    for name, city, country in (
        ("Northwind Traders", "Seattle", "US"),
        ("Contoso Pharmaceuticals", "Berlin", "DE"),
        ("Fabrikam Farms", "Lyon", "FR"),
    ):
        address = {"value": f"{city}, {country}", "locality": city, "country": country}
        orgs.append(sim.insert("organizations", {"name": name, "address": address}))
    people = []
    for n, (name, title, org) in enumerate(
        (
            ("Nancy Davolio", "Sales Representative", 0),
            ("Andrew Fuller", "Vice President, Sales", 0),
            ("Janet Leverling", "Head of Research", 1),
            ("Margaret Peacock", "Procurement Lead", 1),
            ("Steven Buchanan", "Farm Manager", 2),
        )
    ):
        email = name.lower().replace(" ", ".") + "@example.com"
        people.append(
            sim.insert(
                "persons",
                {
                    "name": name,
                    "job_title": title,
                    "org_id": int(orgs[org]),
                    "emails": [{"value": email, "primary": True, "label": "work"}],
                    "phones": [
                        {"value": f"+1 206 555 01{n:02d}", "primary": True, "label": "work"}
                    ],
                    "custom_fields": {tier: n % 3 + 1},
                },
            )
        )
    deals = []
    for n, (title, value) in enumerate(
        (("Northwind renewal", 12000), ("Contoso pilot", 45000), ("Fabrikam tractors", 8000))
    ):
        deals.append(
            sim.insert(
                "deals",
                {
                    "title": title,
                    "value": value,
                    "org_id": int(orgs[n]),
                    "person_id": int(people[n * 2 if n < 2 else 4]),
                    "expected_close_date": f"2027-0{n + 3}-15",
                },
            )
        )
    for subject, kind, deal in (
        ("Call about renewal", "call", 0),
        ("Pilot kick-off", "meeting", 1),
        ("Send quote", "task", 2),
    ):
        sim.insert(
            "activities",
            {
                "subject": subject,
                "type": kind,
                "deal_id": int(deals[deal]),
                "due_date": "2027-02-01",
            },
        )
    for title, person in (("Adatum website lead", 3), ("Litware referral", 4)):
        sim.insert("leads", {"title": title, "person_id": int(people[person])})
    sim.insert("notes", {"content": "Prefers email to calls.", "person_id": int(people[0])})
    sim.insert("notes", {"content": "Budget approved for Q2.", "deal_id": int(deals[1])})
