"""A HubSpot portal: the subset of HubSpot's CRM API v3 that crmgate uses, as HubSpot documents it.

- Auth: ``Authorization: Bearer <token>``: private app access tokens (``add_private_app``) and
  OAuth access tokens (``issue_access_token``, with an expiry); 401 ``EXPIRED_AUTHENTICATION`` /
  ``INVALID_AUTHENTICATION``, 403 ``MISSING_SCOPES``.
- Objects (contacts, companies, deals, tasks, notes, calls, meetings):
  ``GET/POST /crm/v3/objects/{type}``, ``GET/PATCH/DELETE /crm/v3/objects/{type}/{id}``,
  ``POST /crm/v3/objects/{type}/search`` (filterGroups, sorts, properties, limit <= 200, after;
  at most 10,000 results), ``POST /crm/v3/objects/{type}/batch/create|update|archive`` (<= 100).
  Records are ``{id, properties, createdAt, updatedAt, archived}``, property values as text.
- ``GET /crm/v3/properties/{type}``: property definitions (name, label, type, fieldType,
  options, modificationMetadata.readOnlyValue).
- ``GET /account-info/v3/details``: the portal.
- Custom objects (``add_custom_object``): ``GET /crm/v3/schemas`` lists them; the objects,
  search, batch and properties APIs serve them under their fully qualified name
  (``p<portal>_<name>``), with the scopes ``crm.objects.custom.read|write``.
- ``GET /crm/v3/owners`` (limit <= 500, after, email) and ``GET /crm/v3/owners/{id}``: the
  portal's users (scope ``crm.objects.owners.read``).
- Associations: ``associations=companies,...`` on object reads and lists (v3 shape), an
  ``associations`` list on creates (HUBSPOT_DEFINED type ids, checked against HubSpot's table),
  v4 ``PUT /crm/v4/objects/{from}/{id}/associations/default/{to}/{toId}``,
  ``PUT .../associations/{to}/{toId}`` (labelled), ``DELETE .../associations/{to}/{toId}``,
  ``POST /crm/v4/associations/{from}/{to}/batch/read``, and the search pseudo-property
  ``associations.{object}`` (EQ a record id).
- Rate limits: ``ten_secondly`` requests per rolling 10 s per token; beyond, 429 with
  ``X-HubSpot-RateLimit-*`` headers and HubSpot's RATE_LIMIT body.
"""

from __future__ import annotations

import base64
import itertools
import random
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from yarl import URL

PRIVATE_APP_SCOPES = (
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.objects.deals.read",
    "crm.objects.deals.write",
    "crm.objects.owners.read",
    "crm.objects.leads.read",
    "crm.objects.leads.write",
    "crm.objects.custom.read",
    "crm.objects.custom.write",
    "crm.schemas.custom.read",
)
SEARCH_LIMIT = 10_000
SINGULAR = {
    "contacts": "contact",
    "companies": "company",
    "deals": "deal",
    "tasks": "task",
    "notes": "note",
    "calls": "call",
    "meetings": "meeting",
    "leads": "lead",
}
# HubSpot's HUBSPOT_DEFINED association types: (from, to) -> {type id: (label, inverse id)}.
# Unlabelled types have no label; a primary company is labelled "Primary".
ASSOCIATION_TYPES: dict[tuple[str, str], dict[int, tuple[str | None, int]]] = {
    ("contacts", "companies"): {279: (None, 280), 1: ("Primary", 2)},
    ("companies", "contacts"): {280: (None, 279), 2: ("Primary", 1)},
    ("deals", "companies"): {341: (None, 342), 5: ("Primary", 6)},
    ("companies", "deals"): {342: (None, 341), 6: ("Primary", 5)},
    ("deals", "contacts"): {3: (None, 4)},
    ("contacts", "deals"): {4: (None, 3)},
    ("notes", "contacts"): {202: (None, 201)},
    ("contacts", "notes"): {201: (None, 202)},
    ("notes", "companies"): {190: (None, 189)},
    ("companies", "notes"): {189: (None, 190)},
    ("notes", "deals"): {214: (None, 213)},
    ("deals", "notes"): {213: (None, 214)},
    ("tasks", "contacts"): {204: (None, 203)},
    ("contacts", "tasks"): {203: (None, 204)},
    ("tasks", "companies"): {192: (None, 191)},
    ("companies", "tasks"): {191: (None, 192)},
    ("tasks", "deals"): {216: (None, 215)},
    ("deals", "tasks"): {215: (None, 216)},
    ("calls", "contacts"): {194: (None, 193)},
    ("contacts", "calls"): {193: (None, 194)},
    ("calls", "companies"): {182: (None, 181)},
    ("companies", "calls"): {181: (None, 182)},
    ("calls", "deals"): {206: (None, 205)},
    ("deals", "calls"): {205: (None, 206)},
    ("meetings", "contacts"): {200: (None, 199)},
    ("contacts", "meetings"): {199: (None, 200)},
    ("meetings", "companies"): {188: (None, 187)},
    ("companies", "meetings"): {187: (None, 188)},
    ("meetings", "deals"): {212: (None, 211)},
    ("deals", "meetings"): {211: (None, 212)},
    # A lead is created with its primary contact (578). The lead ids are HubSpot's; their
    # inverses (contact or company to lead) are this simulator's own numbers.
    ("leads", "contacts"): {608: (None, 90_608), 578: ("Primary", 90_578)},
    ("contacts", "leads"): {90_608: (None, 608), 90_578: ("Primary", 578)},
    ("leads", "companies"): {610: (None, 90_610)},
    ("companies", "leads"): {90_610: (None, 610)},
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Prop:
    name: str
    type: str = "string"  # string, number, date, datetime, enumeration, bool
    label: str = ""
    options: tuple[str, ...] = ()
    read_only: bool = False
    required: bool = False  # on create
    custom: bool = False

    @property
    def field_type(self) -> str:
        return {
            "number": "number",
            "date": "date",
            "datetime": "date",
            "enumeration": "select",
            "bool": "booleancheckbox",
        }.get(self.type, "text")

    def describe(self, object_type: str) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label or self.name,
            "type": self.type,
            "fieldType": self.field_type,
            "groupName": f"{object_type[:-1]}information",
            "options": [
                {"label": o, "value": o, "displayOrder": i, "hidden": False}
                for i, o in enumerate(self.options)
            ],
            "hubspotDefined": not self.custom,
            "calculated": False,
            "hasUniqueValue": self.name == "hs_object_id",
            "modificationMetadata": {
                "archivable": True,
                "readOnlyDefinition": not self.custom,
                "readOnlyValue": self.read_only,
            },
        }


def _system(created: str = "createdate", modified: str = "hs_lastmodifieddate") -> list[Prop]:
    return [
        Prop("hs_object_id", "number", "Record ID", read_only=True),
        Prop(created, "datetime", "Create Date", read_only=True),
        Prop(modified, "datetime", "Last Modified Date", read_only=True),
    ]


def standard_properties() -> dict[str, dict[str, Prop]]:
    def props(
        *items: Prop, created: str = "createdate", modified: str = "hs_lastmodifieddate"
    ) -> dict[str, Prop]:
        return {p.name: p for p in (*_system(created, modified), *items)}

    engagement = {"created": "hs_createdate", "modified": "hs_lastmodifieddate"}
    return {
        "contacts": props(
            Prop("firstname", label="First Name"),
            Prop("lastname", label="Last Name"),
            Prop("email", label="Email"),
            Prop("phone", label="Phone Number"),
            Prop("mobilephone", label="Mobile Phone Number"),
            Prop("jobtitle", label="Job Title"),
            Prop("company", label="Company Name"),
            Prop("website", label="Website URL"),
            Prop("address"),
            Prop("city"),
            Prop("state"),
            Prop("zip"),
            Prop("country"),
            Prop(
                "lifecyclestage",
                "enumeration",
                "Lifecycle Stage",
                ("subscriber", "lead", "marketingqualifiedlead", "opportunity", "customer"),
            ),
            modified="lastmodifieddate",
        ),
        "companies": props(
            Prop("name", label="Company name"),
            Prop("domain", label="Company Domain Name"),
            Prop("phone", label="Phone Number"),
            Prop("description", label="Description"),
            Prop("industry", "enumeration", "Industry", ("COMPUTER_SOFTWARE", "RETAIL", "FARMING")),
            Prop("numberofemployees", "number", "Number of Employees"),
            Prop("annualrevenue", "number", "Annual Revenue"),
            Prop("address"),
            Prop("city"),
            Prop("state"),
            Prop("zip"),
            Prop("country"),
        ),
        "deals": props(
            Prop("dealname", label="Deal Name", required=True),
            Prop("amount", "number", "Amount"),
            Prop(
                "dealstage",
                "enumeration",
                "Deal Stage",
                ("appointmentscheduled", "qualifiedtobuy", "closedwon", "closedlost"),
                required=True,
            ),
            Prop("pipeline", "enumeration", "Pipeline", ("default",)),
            Prop("closedate", "datetime", "Close Date"),
            Prop("description", label="Deal Description"),
        ),
        "tasks": props(
            Prop("hs_task_subject", label="Task Title"),
            Prop("hs_task_body", label="Task notes"),
            Prop(
                "hs_task_status",
                "enumeration",
                "Task Status",
                ("NOT_STARTED", "IN_PROGRESS", "WAITING", "COMPLETED", "DEFERRED"),
            ),
            Prop("hs_task_priority", "enumeration", "Priority", ("LOW", "MEDIUM", "HIGH")),
            Prop("hs_timestamp", "datetime", "Due date", required=True),
            **engagement,
        ),
        "notes": props(
            Prop("hs_note_body", label="Note body"),
            Prop("hs_timestamp", "datetime", "Activity date", required=True),
            **engagement,
        ),
        "calls": props(
            Prop("hs_call_title", label="Call Title"),
            Prop("hs_call_body", label="Call notes"),
            Prop("hs_call_direction", "enumeration", "Call direction", ("INBOUND", "OUTBOUND")),
            Prop(
                "hs_call_status",
                "enumeration",
                "Call status",
                ("COMPLETED", "BUSY", "NO_ANSWER", "FAILED", "CANCELED"),
            ),
            Prop("hs_timestamp", "datetime", "Activity date", required=True),
            **engagement,
        ),
        "meetings": props(
            Prop("hs_meeting_title", label="Meeting name"),
            Prop("hs_meeting_body", label="Meeting description"),
            Prop("hs_meeting_location", label="Location"),
            Prop("hs_meeting_start_time", "datetime", "Start time"),
            Prop("hs_meeting_end_time", "datetime", "End time"),
            Prop("hs_timestamp", "datetime", "Activity date", required=True),
            **engagement,
        ),
        "leads": props(
            Prop("hs_lead_name", label="Lead name", required=True),
            Prop(
                "hs_lead_type",
                "enumeration",
                "Lead type",
                ("NEW_BUSINESS", "UPSELL", "RE_ATTEMPTING"),
            ),
            Prop("hs_lead_label", "enumeration", "Lead label", ("COLD", "WARM", "HOT")),
            Prop("hs_pipeline", "enumeration", "Pipeline", ("lead-pipeline-id",)),
            Prop(
                "hs_pipeline_stage",
                "enumeration",
                "Lead stage",
                (
                    "new-stage-id",
                    "attempting-stage-id",
                    "connected-stage-id",
                    "qualified-stage-id",
                    "unqualified-stage-id",
                ),
            ),
            **engagement,
        ),
    }


@dataclass
class Token:
    scopes: tuple[str, ...]
    expires_at: float | None = None  # None: a private app token (no expiry)
    requests: deque[float] = field(default_factory=deque)


class Refused(Exception):
    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.category, self.message, self.extra = status, category, message, extra

    def response(self) -> web.Response:
        return hs_error(self.status, self.category, self.message, **self.extra)


def hs_error(status: int, category: str, message: str, **extra: Any) -> web.Response:
    body = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
        **extra,
    }
    return web.json_response(body, status=status)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubSpotSimulator:
    def __init__(self, portal_id: int = 20_000_001, ten_secondly: int = 190) -> None:
        self.portal_id = portal_id
        self.ten_secondly = ten_secondly  # HubSpot's private app burst limit is 190 / 10 s
        self.tokens: dict[str, Token] = {}
        self.properties = standard_properties()
        self.records: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in self.properties}
        self.calls: deque[tuple[str, str]] = deque(maxlen=100_000)
        self._ids = itertools.count(1001)
        self.base_url = ""
        self.apps: dict[str, str] = {}  # OAuth client id -> secret
        self.redirect_uris: dict[str, tuple[str, ...]] = {}  # OAuth client id -> redirect URLs
        self.codes: dict[str, tuple[str, str, tuple[str, ...], float]] = {}  # client, uri, scopes
        self.refresh_tokens: dict[str, str] = {}  # refresh token -> client id
        self.token_lifetime = 1800.0
        # (object type, id) -> {(object type, id): association type ids}, both directions
        self.links: dict[tuple[str, str], dict[tuple[str, str], set[int]]] = {}
        self.owners: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}  # fully qualified name -> schema
        self.add_owner("admin@portal.example", "Pat", "Admin")

    # ---- state ------------------------------------------------------------------------------

    def add_private_app(self, scopes: tuple[str, ...] = PRIVATE_APP_SCOPES) -> str:
        token = "pat-na1-" + str(uuid.uuid4())
        self.tokens[token] = Token(tuple(scopes))
        return token

    def issue_access_token(
        self, scopes: tuple[str, ...] = PRIVATE_APP_SCOPES, lifetime: float = 1800
    ) -> str:
        token = "CO" + secrets.token_urlsafe(48)
        self.tokens[token] = Token(tuple(scopes), time.time() + lifetime)
        return token

    def add_app(
        self, client_id: str, client_secret: str, redirect_uris: tuple[str, ...] = ()
    ) -> None:
        """A public app's OAuth client, with the redirect URLs its settings list."""
        self.apps[client_id] = client_secret
        self.redirect_uris[client_id] = tuple(redirect_uris)

    def issue_refresh_token(self, client_id: str) -> str:
        token = str(uuid.uuid4())
        self.refresh_tokens[token] = client_id
        return token

    def expire_tokens(self) -> None:
        for token in self.tokens.values():
            if token.expires_at is not None:
                token.expires_at = 0

    def insert(self, object_type: str, properties: dict[str, Any]) -> str:
        return str(self._create(object_type, properties)["id"])

    def add_custom_object(
        self, name: str, singular: str, plural: str, properties: list[Prop]
    ) -> str:
        """A custom object (as made in HubSpot's settings or with the schemas API); returns its
        fully qualified name, by which the APIs reach it."""
        qualified = f"p{self.portal_id}_{name}"
        props = {p.name: p for p in (*_system(), *(replace(p, custom=True) for p in properties))}
        self.properties[qualified] = props
        self.records[qualified] = {}
        self.schemas[qualified] = {
            "id": str(len(self.schemas) + 1),
            "name": name,
            "labels": {"singular": singular, "plural": plural},
            "objectTypeId": f"2-{1_000_000 + len(self.schemas)}",
            "fullyQualifiedName": qualified,
            "primaryDisplayProperty": properties[0].name if properties else "hs_object_id",
            "requiredProperties": [p.name for p in properties if p.required],
            "searchableProperties": [p.name for p in properties],
            "secondaryDisplayProperties": [],
            "archived": False,
            "createdAt": _now(),
            "updatedAt": _now(),
        }
        return qualified

    def add_owner(self, email: str, first: str, last: str) -> str:
        owner_id = str(41_629_779 + len(self.owners))
        now = _now()
        self.owners[owner_id] = {
            "id": owner_id,
            "email": email,
            "firstName": first,
            "lastName": last,
            "userId": 9_586_504 + len(self.owners),
            "userIdIncludingInactive": 9_586_504 + len(self.owners),
            "createdAt": now,
            "updatedAt": now,
            "archived": False,
            "teams": [],
            "type": "PERSON",
        }
        return owner_id

    def add_queue(self, name: str) -> str:
        """An owner that is a queue (a team inbox), not a person."""
        owner_id = self.add_owner("", name, "")
        self.owners[owner_id]["type"] = "QUEUE"
        return owner_id

    def associate(
        self, from_type: str, from_id: str, to_type: str, to_id: str, type_id: int | None = None
    ) -> None:
        """Link two records with a HUBSPOT_DEFINED type (the unlabelled one when None); a
        labelled type brings the unlabelled one with it, as in HubSpot."""
        types = ASSOCIATION_TYPES.get((from_type, to_type))
        if types is None:
            raise Refused(
                400, "VALIDATION_ERROR", f"{from_type} cannot be associated with {to_type}"
            )
        unlabelled = next(t for t, (label, _) in types.items() if label is None)
        chosen = unlabelled if type_id is None else type_id
        if chosen not in types:
            raise Refused(
                400,
                "VALIDATION_ERROR",
                f"association type id {chosen} doesn't exist between {from_type} and {to_type}",
            )
        self._record(from_type, from_id)
        if to_id not in self.records[to_type]:
            raise Refused(404, "OBJECT_NOT_FOUND", f"{SINGULAR[to_type]} {to_id} not found")
        for type_id_ in {unlabelled, chosen}:
            inverse = types[type_id_][1]
            self.links.setdefault((from_type, from_id), {}).setdefault((to_type, to_id), set()).add(
                type_id_
            )
            self.links.setdefault((to_type, to_id), {}).setdefault((from_type, from_id), set()).add(
                inverse
            )

    def dissociate(self, from_type: str, from_id: str, to_type: str, to_id: str) -> None:
        self.links.get((from_type, from_id), {}).pop((to_type, to_id), None)
        self.links.get((to_type, to_id), {}).pop((from_type, from_id), None)

    def associated(self, from_type: str, from_id: str, to_type: str) -> list[tuple[str, set[int]]]:
        """The live records of ``to_type`` linked to a record, by id, with their type ids."""
        links = self.links.get((from_type, from_id), {})
        return sorted(
            (
                (to_id, types)
                for (kind, to_id), types in links.items()
                if kind == to_type and to_id in self.records[to_type]
            ),
            key=lambda item: int(item[0]),
        )

    # ---- HTTP -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        @web.middleware
        async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
            self.calls.append((request.method, request.path))
            if not self.base_url:
                self.base_url = f"{request.scheme}://{request.host}"
            return await handler(request)

        application = web.Application(middlewares=[record])
        application.router.add_get("/oauth/authorize", self._authorize)
        application.router.add_post("/oauth/v1/token", self._token)
        application.router.add_delete("/oauth/v1/refresh-tokens/{token}", self._revoke)
        route = "/crm/v3/objects/{type}"
        for method, path, handler in [
            ("GET", "/account-info/v3/details", self._account),
            ("GET", "/crm/v3/schemas", self._schemas),
            ("GET", "/crm/v3/owners", self._owners),
            ("GET", "/crm/v3/owners/", self._owners),  # the path as HubSpot documents it
            ("GET", "/crm/v3/owners/{id}", self._owner),
            ("GET", "/crm/v3/properties/{type}", self._properties_route),
            ("GET", route, self._list),
            ("POST", route, self._create_route),
            ("POST", route + "/search", self._search),
            ("POST", route + "/batch/create", self._batch_create),
            ("POST", route + "/batch/update", self._batch_update),
            ("POST", route + "/batch/archive", self._batch_archive),
            ("GET", route + "/{id}", self._get),
            ("PATCH", route + "/{id}", self._update),
            ("DELETE", route + "/{id}", self._archive),
            ("PUT", "/crm/v4/objects/{type}/{id}/associations/default/{to}/{to_id}", self._link),
            ("PUT", "/crm/v4/objects/{type}/{id}/associations/{to}/{to_id}", self._link),
            ("DELETE", "/crm/v4/objects/{type}/{id}/associations/{to}/{to_id}", self._unlink),
            ("POST", "/crm/v4/associations/{type}/{to}/batch/read", self._links_read),
        ]:
            application.router.add_route(method, path, self._guard(handler))
        return application

    def _guard(self, handler: Callable[[web.Request, Token], Awaitable[web.Response]]) -> Handler:
        async def guarded(request: web.Request) -> web.StreamResponse:
            header = request.headers.get("Authorization", "")
            token = self.tokens.get(header.removeprefix("Bearer ").strip())
            if token is None:
                return hs_error(
                    401,
                    "INVALID_AUTHENTICATION",
                    "Authentication credentials not found. This API supports OAuth 2.0 "
                    "authentication and you can find more details at "
                    "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                )
            if token.expires_at is not None and token.expires_at < time.time():
                return hs_error(
                    401,
                    "EXPIRED_AUTHENTICATION",
                    "The OAuth token used to make this call expired 0 second(s) ago.",
                )
            now = time.monotonic()
            while token.requests and now - token.requests[0] > 10:
                token.requests.popleft()
            headers = {
                "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                "X-HubSpot-RateLimit-Max": str(self.ten_secondly),
                "X-HubSpot-RateLimit-Remaining": str(
                    max(0, self.ten_secondly - len(token.requests) - 1)
                ),
            }
            if len(token.requests) >= self.ten_secondly:
                response = hs_error(
                    429,
                    "RATE_LIMITS",
                    "You have reached your ten_secondly_rolling limit.",
                    errorType="RATE_LIMIT",
                    policyName="TEN_SECONDLY_ROLLING",
                )
                response.headers.update(headers)
                return response
            token.requests.append(now)
            try:
                response = await handler(request, token)
            except Refused as refused:
                response = refused.response()
            response.headers.update(headers)
            return response

        return guarded

    def _type(self, request: web.Request, token: Token, write: bool = False) -> str:
        object_type = _plural(request.match_info["type"])
        if object_type not in self.properties:
            raise Refused(
                400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}"
            )
        family = object_type if object_type in ("contacts", "companies", "deals", "leads") else None
        family = "custom" if object_type in self.schemas else family
        if family is not None:
            needed = f"crm.objects.{family}.{'write' if write else 'read'}"
            if needed not in token.scopes:
                raise Refused(
                    403,
                    "MISSING_SCOPES",
                    "This app hasn't been granted all required scopes to make this call.",
                    errors=[
                        {
                            "message": "One or more of the following scopes are required.",
                            "context": {"requiredGranularScopes": [needed]},
                        }
                    ],
                )
        return object_type

    async def _json(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise Refused(400, "VALIDATION_ERROR", "Invalid input JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "VALIDATION_ERROR", "Invalid input JSON: expected an object")
        return body

    # ---- OAuth --------------------------------------------------------------------------------

    async def _authorize(self, request: web.Request) -> web.Response:
        """GET /oauth/authorize (app.hubspot.com): the user picks a portal and approves at once
        here; back to the app's exact redirect URL with ``code`` and ``state``. A request
        HubSpot cannot trust (unknown client, unlisted redirect URL, unknown scope) gets an
        error page, never a redirect."""
        query = request.query
        client_id, redirect_uri = query.get("client_id", ""), query.get("redirect_uri", "")
        if client_id not in self.apps or redirect_uri not in self.redirect_uris.get(client_id, ()):
            return web.Response(status=400, text="Authorization failed: invalid client or URL")
        scopes = tuple(query.get("scope", "").split())
        if not scopes or any(scope not in PRIVATE_APP_SCOPES for scope in scopes):
            return web.Response(status=400, text="Authorization failed: invalid scope")
        # optional scopes the portal has are granted; the ones it lacks are left out (every
        # scope this simulator knows, the portal has)
        optional = tuple(query.get("optional_scope", "").split())
        scopes += tuple(s for s in optional if s in PRIVATE_APP_SCOPES and s not in scopes)
        code = secrets.token_urlsafe(24)
        self.codes[code] = (client_id, redirect_uri, scopes, time.time() + 300)
        target = URL(redirect_uri).update_query(code=code, state=query.get("state", ""))
        raise web.HTTPFound(str(target))

    async def _token(self, request: web.Request) -> web.Response:
        """POST /oauth/v1/token: the authorization_code grant (single-use codes bound to their
        redirect URL) and the refresh_token grant: an access token (30 minutes) and the same
        refresh token, or HubSpot's BAD_* errors."""
        form = await request.post()
        client_id, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        grant = form.get("grant_type")
        if grant not in ("refresh_token", "authorization_code"):
            return _oauth_error("BAD_GRANT_TYPE", "grant_type is not supported")
        if self.apps.get(client_id) is None:
            return _oauth_error("BAD_CLIENT_ID", "missing or unknown client id")
        if self.apps[client_id] != secret:
            return _oauth_error("BAD_CLIENT_SECRET", "missing or invalid client secret")
        scopes: tuple[str, ...] = PRIVATE_APP_SCOPES
        if grant == "authorization_code":
            issued = self.codes.pop(str(form.get("code", "")), None)
            if (
                issued is None
                or issued[0] != client_id
                or issued[1] != form.get("redirect_uri")
                or issued[3] < time.time()
            ):
                return _oauth_error("BAD_AUTH_CODE", "missing or unknown auth code")
            scopes = issued[2]
            refresh = self.issue_refresh_token(client_id)
        else:
            refresh = str(form.get("refresh_token", ""))
            if self.refresh_tokens.get(refresh) != client_id:
                return _oauth_error("BAD_REFRESH_TOKEN", "missing or invalid refresh token")
        access = self.issue_access_token(scopes, lifetime=self.token_lifetime)
        return web.json_response(
            {
                "token_type": "bearer",
                "refresh_token": refresh,
                "access_token": access,
                "expires_in": int(self.token_lifetime),
            }
        )

    async def _revoke(self, request: web.Request) -> web.Response:
        self.refresh_tokens.pop(request.match_info["token"], None)
        return web.Response(status=204)

    # ---- records ----------------------------------------------------------------------------

    def _render(
        self,
        object_type: str,
        record: dict[str, Any],
        wanted: list[str] | None,
        associations: list[str] | None = None,
    ) -> dict[str, Any]:
        props = self.properties[object_type]
        created = next(p for p in props if p in ("createdate", "hs_createdate"))
        modified = next(p for p in props if p in ("lastmodifieddate", "hs_lastmodifieddate"))
        names = (
            wanted
            if wanted
            else [
                n
                for n in props
                if n in record["values"] or n in (created, modified, "hs_object_id")
            ]
        )
        properties = {}
        for name in names:
            if name in props:
                value = record["values"].get(name)
                properties[name] = None if value is None else str(value)
        properties.setdefault("hs_object_id", record["id"])
        properties.setdefault(created, record["values"][created])
        properties.setdefault(modified, record["values"][modified])
        rendered: dict[str, Any] = {
            "id": record["id"],
            "properties": properties,
            "createdAt": record["values"][created],
            "updatedAt": record["values"][modified],
            "archived": False,
        }
        linked: dict[str, Any] = {}
        for to_type in associations or ():
            results = []
            for to_id, types in self.associated(object_type, record["id"], to_type):
                pair = ASSOCIATION_TYPES.get((object_type, to_type), {})
                name = f"{SINGULAR[object_type]}_to_{SINGULAR[to_type]}"
                labelled = any(pair.get(t, (None, 0))[0] for t in types)
                if labelled or len(pair) == 1:
                    results.append({"id": to_id, "type": name})
                if len(pair) > 1:
                    results.append({"id": to_id, "type": f"{name}_unlabeled"})
            if results:
                linked[to_type] = {"results": results}
        if linked:
            rendered["associations"] = linked
        return rendered

    def _check(self, object_type: str, values: Any, creating: bool) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise Refused(400, "VALIDATION_ERROR", "properties must be an object")
        props = self.properties[object_type]
        errors = []
        clean: dict[str, Any] = {}
        for name, value in values.items():
            prop = props.get(name)
            if prop is None:
                errors.append(
                    {
                        "isValid": False,
                        "message": f'Property "{name}" does not exist',
                        "error": "PROPERTY_DOESNT_EXIST",
                        "name": name,
                    }
                )
                continue
            if prop.read_only:
                errors.append(
                    {
                        "isValid": False,
                        "message": f'"{name}" is a read only property; its value cannot be set.',
                        "error": "READ_ONLY_VALUE",
                        "name": name,
                    }
                )
                continue
            if value in (None, ""):
                clean[name] = None
                continue
            text = str(value).lower() if isinstance(value, bool) else str(value)
            if prop.type == "number":
                try:
                    float(text)
                except ValueError:
                    errors.append(
                        {
                            "isValid": False,
                            "message": f"{text} was not a valid number.",
                            "error": "INVALID_LONG" if "." not in text else "INVALID_DOUBLE",
                            "name": name,
                        }
                    )
                    continue
            if prop.type == "enumeration" and text not in prop.options:
                errors.append(
                    {
                        "isValid": False,
                        "message": f"{text} was not one of the allowed options: "
                        f"[{', '.join(prop.options)}]",
                        "error": "INVALID_OPTION",
                        "name": name,
                    }
                )
                continue
            if prop.type in ("datetime", "date") and not _valid_date(text):
                errors.append(
                    {
                        "isValid": False,
                        "message": f"{text} is not a valid date",
                        "error": "INVALID_DATE",
                        "name": name,
                    }
                )
                continue
            if name == "email" and "@" not in text:
                errors.append(
                    {
                        "isValid": False,
                        "message": f"Email address {text} is invalid",
                        "error": "INVALID_EMAIL",
                        "name": name,
                    }
                )
                continue
            clean[name] = text
        if creating:
            for prop in props.values():
                if prop.required and clean.get(prop.name) in (None, ""):
                    errors.append(
                        {
                            "isValid": False,
                            "message": f"{prop.name} is required",
                            "error": "REQUIRED_FIELD",
                            "name": prop.name,
                        }
                    )
        if errors:
            raise Refused(
                400,
                "VALIDATION_ERROR",
                "Property values were not valid: " + str(errors),
                errors=[
                    {
                        "message": e["message"],
                        "code": e["error"],
                        "context": {"propertyName": [e["name"]]},
                    }
                    for e in errors
                ],
            )
        return clean

    def _create(self, object_type: str, values: dict[str, Any]) -> dict[str, Any]:
        clean = self._check(object_type, values, creating=True)
        record_id = str(next(self._ids))
        now = _now()
        props = self.properties[object_type]
        created = next(p for p in props if p in ("createdate", "hs_createdate"))
        modified = next(p for p in props if p in ("lastmodifieddate", "hs_lastmodifieddate"))
        record = {
            "id": record_id,
            "values": {**clean, created: now, modified: now, "hs_object_id": record_id},
        }
        self.records[object_type][record_id] = record
        return record

    def _record(self, object_type: str, record_id: str) -> dict[str, Any]:
        record = self.records[object_type].get(record_id)
        if record is None:
            raise Refused(404, "OBJECT_NOT_FOUND", "resource not found")
        return record

    def _apply(self, object_type: str, record: dict[str, Any], values: Any) -> None:
        clean = self._check(object_type, values, creating=False)
        record["values"].update(clean)
        props = self.properties[object_type]
        modified = next(p for p in props if p in ("lastmodifieddate", "hs_lastmodifieddate"))
        record["values"][modified] = _now()

    def _associations(self, request: web.Request) -> list[str]:
        """``associations=companies,deals`` (or repeated): the object types to show links to."""
        names = [
            _plural(n) for v in request.query.getall("associations", []) for n in v.split(",") if n
        ]
        return [n for n in names if n in self.properties]

    @staticmethod
    def _wanted(request: web.Request) -> list[str] | None:
        """``properties=a,b`` or ``properties=a&properties=b`` (the SDKs send the latter)."""
        names = [n for v in request.query.getall("properties", []) for n in v.split(",") if n]
        return names or None

    async def _account(self, request: web.Request, token: Token) -> web.Response:
        return web.json_response(
            {
                "portalId": self.portal_id,
                "accountType": "STANDARD",
                "timeZone": "US/Eastern",
                "companyCurrency": "USD",
                "additionalCurrencies": [],
                "utcOffset": "-05:00",
                "utcOffsetMilliseconds": -18000000,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            }
        )

    async def _schemas(self, request: web.Request, token: Token) -> web.Response:
        if "crm.schemas.custom.read" not in token.scopes:
            raise Refused(403, "MISSING_SCOPES", "This app hasn't been granted all required scopes")
        return web.json_response(
            {
                "results": [
                    {
                        **schema,
                        "properties": [p.describe(name) for p in self.properties[name].values()],
                    }
                    for name, schema in self.schemas.items()
                ]
            }
        )

    @staticmethod
    def _owner_scope(token: Token) -> None:
        if "crm.objects.owners.read" not in token.scopes:
            raise Refused(
                403,
                "MISSING_SCOPES",
                "This app hasn't been granted all required scopes to make this call.",
                errors=[{"context": {"requiredGranularScopes": ["crm.objects.owners.read"]}}],
            )

    async def _owners(self, request: web.Request, token: Token) -> web.Response:
        self._owner_scope(token)
        limit = int(request.query.get("limit", "100") or 100)
        if not 1 <= limit <= 500:
            raise Refused(400, "VALIDATION_ERROR", "limit must be between 1 and 500")
        after = request.query.get("after")
        email = request.query.get("email")
        owners = sorted(self.owners.values(), key=lambda o: int(o["id"]))
        if email:
            owners = [o for o in owners if o["email"].lower() == email.lower()]
        if after:  # HubSpot's cursors are opaque: base64 of the last id here
            try:
                last = int(base64.urlsafe_b64decode(after.encode()).decode())
            except ValueError:
                raise Refused(400, "VALIDATION_ERROR", "after is not a valid cursor") from None
            owners = [o for o in owners if int(o["id"]) > last]
        page = owners[:limit]
        body: dict[str, Any] = {"results": page}
        if len(owners) > limit:
            cursor = base64.urlsafe_b64encode(page[-1]["id"].encode()).decode()
            body["paging"] = {"next": {"after": cursor, "link": ""}}
        return web.json_response(body)

    async def _owner(self, request: web.Request, token: Token) -> web.Response:
        self._owner_scope(token)
        owner = self.owners.get(request.match_info["id"])
        if owner is None:
            raise Refused(404, "OBJECT_NOT_FOUND", "resource not found")
        return web.json_response(owner)

    async def _properties_route(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token)
        return web.json_response(
            {"results": [p.describe(object_type) for p in self.properties[object_type].values()]}
        )

    async def _list(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token)
        limit = min(100, int(request.query.get("limit", "10") or 10))
        after = request.query.get("after")
        ordered = sorted(self.records[object_type].values(), key=lambda r: int(r["id"]))
        if after:
            ordered = [r for r in ordered if int(r["id"]) > int(after)]
        page = ordered[:limit]
        wanted = self._wanted(request)
        linked = self._associations(request)
        body: dict[str, Any] = {
            "results": [self._render(object_type, r, wanted, linked) for r in page]
        }
        if len(ordered) > limit:
            body["paging"] = {"next": {"after": page[-1]["id"], "link": ""}}
        return web.json_response(body)

    async def _get(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token)
        record = self._record(object_type, request.match_info["id"])
        wanted = self._wanted(request)
        linked = self._associations(request)
        return web.json_response(self._render(object_type, record, wanted, linked))

    async def _create_route(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        body = await self._json(request)
        self._check_links(object_type, body.get("associations"))
        record = self._create(object_type, body.get("properties") or {})
        self._link_all(object_type, record["id"], body.get("associations"))
        return web.json_response(self._render(object_type, record, None), status=201)

    async def _update(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        record = self._record(object_type, request.match_info["id"])
        body = await self._json(request)
        self._apply(object_type, record, body.get("properties") or {})
        return web.json_response(self._render(object_type, record, None))

    def _check_links(self, object_type: str, associations: Any) -> None:
        """A create's ``associations``: each names an existing record and HUBSPOT_DEFINED type
        ids that exist between the two object types (HubSpot refuses the create otherwise). A
        lead must be created with its primary contact."""
        if object_type == "leads" and not any(
            isinstance(spec, dict)
            and any(
                isinstance(kind, dict) and kind.get("associationTypeId") == 578
                for kind in spec.get("types") or ()
            )
            for spec in associations or ()
        ):
            raise Refused(
                400,
                "VALIDATION_ERROR",
                "A lead must be associated with a primary contact (associationTypeId 578)",
            )
        if associations is None:
            return
        if not isinstance(associations, list):
            raise Refused(400, "VALIDATION_ERROR", "associations must be a list")
        for spec in associations:
            to_id = str(((spec or {}).get("to") or {}).get("id", ""))
            types = (spec or {}).get("types") or []
            if not types:
                raise Refused(400, "VALIDATION_ERROR", "an association needs its types")
            for kind in types:
                type_id = (kind or {}).get("associationTypeId")
                if (kind or {}).get("associationCategory") != "HUBSPOT_DEFINED":
                    raise Refused(400, "VALIDATION_ERROR", "unknown association category")
                pair = next(
                    (
                        to
                        for (start, to), known in ASSOCIATION_TYPES.items()
                        if start == object_type and type_id in known
                    ),
                    None,
                )
                if pair is None:
                    raise Refused(
                        400,
                        "VALIDATION_ERROR",
                        f"association type id {type_id} doesn't exist from {object_type}",
                    )
                if to_id not in self.records[pair]:
                    raise Refused(
                        400,
                        "VALIDATION_ERROR",
                        f"One or more associations are invalid: {SINGULAR[pair]} {to_id} "
                        "does not exist",
                    )

    def _link_all(self, object_type: str, record_id: str, associations: Any) -> None:
        for spec in associations or ():
            to_id = str(spec["to"]["id"])
            for kind in spec["types"]:
                type_id = int(kind["associationTypeId"])
                to_type = next(
                    to
                    for (start, to), known in ASSOCIATION_TYPES.items()
                    if start == object_type and type_id in known
                )
                self.associate(object_type, record_id, to_type, to_id, type_id)

    def _made(self, object_type: str, item: dict[str, Any]) -> dict[str, Any]:
        record = self._create(object_type, item["properties"])
        self._link_all(object_type, record["id"], item.get("associations"))
        return record

    async def _link(self, request: web.Request, token: Token) -> web.Response:
        """v4: PUT .../associations/default/{to}/{toId} (the unlabelled type), or
        PUT .../associations/{to}/{toId} with a list of types."""
        from_type = self._type(request, token, write=True)
        to_type = _plural(request.match_info["to"])
        if to_type not in self.properties:
            raise Refused(400, "VALIDATION_ERROR", f"Unable to infer object type from: {to_type}")
        from_id, to_id = request.match_info["id"], request.match_info["to_id"]
        if "/associations/default/" in request.path:
            self.associate(from_type, from_id, to_type, to_id)
            unlabelled = next(
                t for t, (label, _) in ASSOCIATION_TYPES[(from_type, to_type)].items() if not label
            )
            return web.json_response(
                {
                    "status": "COMPLETE",
                    "results": [
                        {
                            "from": {"id": from_id},
                            "to": {"id": to_id},
                            "associationSpec": {
                                "associationCategory": "HUBSPOT_DEFINED",
                                "associationTypeId": unlabelled,
                            },
                        }
                    ],
                    "startedAt": _now(),
                    "completedAt": _now(),
                }
            )
        else:
            try:
                types = await request.json()
            except ValueError:
                raise Refused(400, "VALIDATION_ERROR", "Invalid input JSON") from None
            if not isinstance(types, list) or not types:
                raise Refused(400, "VALIDATION_ERROR", "a list of association types is needed")
            for kind in types:
                type_id = (kind or {}).get("associationTypeId") if isinstance(kind, dict) else None
                if not isinstance(type_id, int):
                    raise Refused(400, "VALIDATION_ERROR", "associationTypeId must be a number")
                self.associate(from_type, from_id, to_type, to_id, type_id)
        pair = ASSOCIATION_TYPES[(from_type, to_type)]
        labels = [
            pair[t][0]
            for t in self.links[(from_type, from_id)][(to_type, to_id)]
            if pair[t][0] is not None
        ]
        return web.json_response(
            {
                "fromObjectTypeId": from_type,
                "fromObjectId": int(from_id),
                "toObjectTypeId": to_type,
                "toObjectId": int(to_id),
                "labels": labels,
            },
            status=201,
        )

    async def _unlink(self, request: web.Request, token: Token) -> web.Response:
        from_type = self._type(request, token, write=True)
        to_type = _plural(request.match_info["to"])
        self.dissociate(from_type, request.match_info["id"], to_type, request.match_info["to_id"])
        return web.Response(status=204)

    async def _links_read(self, request: web.Request, token: Token) -> web.Response:
        """v4 batch read: for each input id, its associated records of ``to`` with their types."""
        from_type = self._type(request, token)
        to_type = _plural(request.match_info["to"])
        if to_type not in self.properties:
            raise Refused(400, "VALIDATION_ERROR", f"Unable to infer object type from: {to_type}")
        pair = ASSOCIATION_TYPES.get((from_type, to_type), {})
        results, errors = [], []
        for item in await self._inputs(request, limit=1000):
            from_id = str((item or {}).get("id"))
            linked = self.associated(from_type, from_id, to_type)
            if not linked:
                errors.append(
                    {
                        "status": "error",
                        "category": "OBJECT_NOT_FOUND",
                        "message": f"No {to_type} is associated with {SINGULAR[from_type]} "
                        f"{from_id}.",
                        "context": {"fromObjectId": [from_id]},
                    }
                )
                continue
            results.append(
                {
                    "from": {"id": from_id},
                    "to": [
                        {
                            "toObjectId": int(to_id),
                            "associationTypes": [
                                {
                                    "category": "HUBSPOT_DEFINED",
                                    "typeId": t,
                                    "label": pair.get(t, (None, 0))[0],
                                }
                                for t in sorted(types)
                            ],
                        }
                        for to_id, types in linked
                    ],
                }
            )
        body: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": _now(),
            "completedAt": _now(),
        }
        if errors:
            body["errors"] = errors
            body["numErrors"] = len(errors)
        return web.json_response(body, status=207 if errors else 200)

    async def _archive(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        self.records[object_type].pop(request.match_info["id"], None)  # idempotent, as HubSpot
        return web.Response(status=204)

    async def _search(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token)
        body = await self._json(request)
        props = self.properties[object_type]
        groups = body.get("filterGroups") or []
        if (
            len(groups) > 5
            or any(len(g.get("filters") or []) > 6 for g in groups)
            or sum(len(g.get("filters") or []) for g in groups) > 18
        ):
            raise Refused(400, "VALIDATION_ERROR", "Too many filters or filter groups")
        rows = list(self.records[object_type].values())
        if groups:
            rows = [
                r
                for r in rows
                if any(self._matches(object_type, r, g.get("filters") or []) for g in groups)
            ]
        sorts = body.get("sorts") or [{"propertyName": "hs_object_id", "direction": "ASCENDING"}]
        if len(sorts) > 1:
            raise Refused(400, "VALIDATION_ERROR", "Only one sort is supported")
        sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": str(sorts[0])}
        name = sort.get("propertyName", "hs_object_id")
        if name not in props:
            raise Refused(400, "VALIDATION_ERROR", f"Property {name} does not exist")
        present = [r for r in rows if r["values"].get(name) is not None]
        absent = [r for r in rows if r["values"].get(name) is None]
        present.sort(
            key=lambda r: (_sortable(r["values"][name], props[name]), int(r["id"])),
            reverse=sort.get("direction") == "DESCENDING",
        )
        rows = present + absent
        limit = int(body.get("limit") or 10)
        after = int(body.get("after") or 0)
        if limit > 200:
            raise Refused(400, "VALIDATION_ERROR", "limit must be at most 200")
        if after + limit > SEARCH_LIMIT:
            raise Refused(
                400, "VALIDATION_ERROR", "The search endpoint returns at most 10,000 results"
            )
        page = rows[after : after + limit]
        wanted = body.get("properties") or None
        result: dict[str, Any] = {
            "total": len(rows),
            "results": [self._render(object_type, r, wanted) for r in page],
        }
        if after + limit < len(rows):
            result["paging"] = {"next": {"after": str(after + limit)}}
        return web.json_response(result)

    # ---- batch ------------------------------------------------------------------------------

    async def _inputs(self, request: web.Request, limit: int = 100) -> list[dict[str, Any]]:
        body = await self._json(request)
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise Refused(400, "VALIDATION_ERROR", "inputs must be a non-empty list")
        if len(inputs) > limit:
            raise Refused(400, "VALIDATION_ERROR", f"Batch size limit is {limit}")
        return inputs

    async def _batch_create(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        inputs = await self._inputs(request)
        for item in inputs:  # all or nothing, as HubSpot's batch create validates first
            self._check(object_type, (item or {}).get("properties") or {}, creating=True)
            self._check_links(object_type, item.get("associations"))
        made = [
            {
                **self._render(object_type, self._made(object_type, item), None),
                **(
                    {"objectWriteTraceId": item["objectWriteTraceId"]}
                    if "objectWriteTraceId" in item
                    else {}
                ),
            }
            for item in inputs
        ]
        random.shuffle(made)  # HubSpot does not keep the order of the inputs
        return web.json_response(
            {
                "status": "COMPLETE",
                "results": made,
                "startedAt": _now(),
                "completedAt": _now(),
            },
            status=201,
        )

    async def _batch_update(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        inputs = await self._inputs(request)
        results, errors = [], []
        for item in inputs:
            try:
                record = self._record(object_type, str(item.get("id")))
                self._apply(object_type, record, item.get("properties") or {})
                results.append(self._render(object_type, record, None))
            except Refused as refused:
                errors.append(
                    {
                        "status": "error",
                        "category": refused.category,
                        "message": refused.message,
                        "context": {"ids": [str(item.get("id"))]},
                    }
                )
        body: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if errors:
            body["errors"] = errors
            body["numErrors"] = len(errors)
        return web.json_response(body, status=207 if errors else 200)

    async def _batch_archive(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        for item in await self._inputs(request):
            self.records[object_type].pop(str(item.get("id")), None)
        return web.Response(status=204)

    def _matches(self, object_type: str, record: dict[str, Any], filters: list[Any]) -> bool:
        """A search filter group; ``associations.{object}`` EQ an id matches the records
        associated with that record."""
        plain = []
        for spec in filters:
            name = str((spec or {}).get("propertyName", ""))
            if not name.startswith("associations."):
                plain.append(spec)
                continue
            to_type = _plural(name.removeprefix("associations."))
            if to_type not in self.properties or spec.get("operator") != "EQ":
                raise Refused(400, "VALIDATION_ERROR", f"Property {name} does not exist")
            linked = {i for i, _ in self.associated(object_type, record["id"], to_type)}
            if str(spec.get("value")) not in linked:
                return False
        return _matches(record, plain, self.properties[object_type])


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point HubSpot (its API and OAuth) at a simulator running
    at ``base_url`` (the tests and the demo use it)."""
    host = base_url.removeprefix("https://")
    oauth = {
        "authorize_url": f"{base_url}/oauth/authorize",
        "token_url": f"{base_url}/oauth/v1/token",
    }
    return {"HubSpot": {"api_url": base_url, "instance_hosts": [host], "oauth": oauth}}


def _plural(name: str) -> str:
    name = name.lower()
    return next((plural for plural, one in SINGULAR.items() if one == name), name)


def _oauth_error(status: str, message: str) -> web.Response:
    return web.json_response(
        {"status": status, "message": message, "correlationId": str(uuid.uuid4())}, status=400
    )


def _valid_date(text: str) -> bool:
    if text.isdigit():
        return True  # epoch milliseconds
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def _sortable(value: Any, prop: Prop) -> Any:
    if prop.type == "number":
        try:
            return float(value)
        except ValueError:
            return 0.0
    if prop.type in ("date", "datetime"):
        return _epoch(str(value))
    return str(value).lower()


def _epoch(text: str) -> float:
    if text.isdigit():
        return int(text) / 1000
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _matches(record: dict[str, Any], filters: list[dict[str, Any]], props: dict[str, Prop]) -> bool:
    for spec in filters:
        name = spec.get("propertyName", "")
        prop = props.get(name)
        if prop is None:
            raise Refused(400, "VALIDATION_ERROR", f"Property {name} does not exist")
        op = spec.get("operator", "EQ")
        value = record["values"].get(name)
        if op == "HAS_PROPERTY":
            ok = value is not None
        elif op == "NOT_HAS_PROPERTY":
            ok = value is None
        elif op == "CONTAINS_TOKEN":
            pattern = str(spec.get("value", "")).lower()
            text = str(value or "").lower()
            core = pattern.strip("*")
            if pattern.startswith("*") and pattern.endswith("*"):
                ok = core in text
            elif pattern.endswith("*"):
                ok = any(word.startswith(core) for word in [text, *text.split()])
            else:
                ok = core in text.split() or core == text
        elif op in ("EQ", "NEQ", "LT", "LTE", "GT", "GTE"):
            wanted = spec.get("value")
            if value is None:
                ok = op == "NEQ"
            else:
                left, right = _sortable(value, prop), _sortable(wanted, prop)
                if prop.type not in ("number", "date", "datetime"):
                    left, right = str(value).lower(), str(wanted).lower()
                ok = {
                    "EQ": left == right,
                    "NEQ": left != right,
                    "LT": left < right,
                    "LTE": left <= right,
                    "GT": left > right,
                    "GTE": left >= right,
                }[op]
        else:
            raise Refused(400, "VALIDATION_ERROR", f"Unknown operator {op}")
        if not ok:
            return False
    return True
