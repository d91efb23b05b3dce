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

import itertools
import random
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crmsim.app import Route, Simulator, UserTokens, after, cursor, overrides, uncursor
from crmsim.columns import READ_ONLY, REQUIRED, UNKNOWN, Column, Invalid, Problem, check
from crmsim.guard import Answer, Guard, RateWindow, Refusal, Verdict, bearer, json_body, json_object
from crmsim.hubspot_schema import (
    ASSOCIATION_TYPES,
    LEADS_TO,
    PLURAL,
    SINGULAR,
    UNLABELLED,
    Prop,
    stamps,
    standard_properties,
    system_properties,
)
from crmsim.oauth import AuthorizationServer, Issued, OAuthError
from crmsim.records import Links, Row, Sort, Store, instant, order, page, test, typed
from crmsim.tokens import AccessToken, Client, TokenStore

# The objects whose scopes (crm.objects.<family>.read|write) a token needs; the others need none.
FAMILIES = ("contacts", "companies", "deals", "leads", "custom")
PRIVATE_APP_SCOPES = (
    *(f"crm.objects.{family}.{access}" for family in FAMILIES for access in ("read", "write")),
    "crm.objects.owners.read",
    "crm.schemas.custom.read",
)
SEARCH_LIMIT = 10_000
ID = "hs_object_id"  # a record's id, among its properties
Token = AccessToken[int]  # its subject: the portal id
_NO_CREDENTIALS = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
    "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)


class Refused(Answer):
    """HubSpot's error answer: ``{status: error, message, correlationId, category, ...}``."""

    def __init__(self, status: int, category: str, message: str, **extra: Any) -> None:
        said = {"status": "error", "message": message, "correlationId": str(uuid.uuid4())}
        super().__init__(status, said | {"category": category} | extra)
        self.category, self.message = category, message


def _invalid(message: str, **extra: Any) -> Refused:
    return Refused(400, "VALIDATION_ERROR", message, **extra)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Guard(Guard[int]):
    """Bearer tokens; ``ten_secondly`` requests per token in any rolling 10 seconds."""

    def __init__(self, sim: HubSpotSimulator) -> None:
        window = RateWindow(lambda: sim.ten_secondly, 10)
        super().__init__(sim.tokens, [bearer()], window, sim.faults)

    def unauthorized(self, request: web.Request, token: Token | None) -> web.Response:
        if token is None:
            return Refused(401, "INVALID_AUTHENTICATION", _NO_CREDENTIALS).response()
        expired = "The OAuth token used to make this call expired 0 second(s) ago."
        return Refused(401, "EXPIRED_AUTHENTICATION", expired).response()

    def limited(self, verdict: Verdict) -> web.Response:
        message = "You have reached your ten_secondly_rolling limit."
        limit = {"errorType": "RATE_LIMIT", "policyName": "TEN_SECONDLY_ROLLING"}
        return Refused(429, "RATE_LIMITS", message, **limit).response()

    def rate_headers(self, verdict: Verdict) -> dict[str, str]:
        return {
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": str(verdict.limit),
            "X-HubSpot-RateLimit-Remaining": str(verdict.remaining),
        }

    def insufficient_scope(self, needed: tuple[str, ...]) -> Refusal:
        message = "This app hasn't been granted all required scopes to make this call."
        said = "One or more of the following scopes are required."
        errors = [{"message": said, "context": {"requiredGranularScopes": list(needed)}}]
        return Refused(403, "MISSING_SCOPES", message, errors=errors)


# HubSpot's token endpoint names each refusal its own way
_OAUTH_STATUS = {
    "grant": ("BAD_GRANT_TYPE", "grant_type is not supported"),
    "unknown_client": ("BAD_CLIENT_ID", "missing or unknown client id"),
    "bad_secret": ("BAD_CLIENT_SECRET", "missing or invalid client secret"),
    "refresh": ("BAD_REFRESH_TOKEN", "missing or invalid refresh token"),
    "code": ("BAD_AUTH_CODE", "missing or unknown auth code"),  # and any other refusal
}


class _OAuth(AuthorizationServer[int]):
    """app.hubspot.com/oauth/authorize and POST /oauth/v1/token: the client's id and secret in
    the form; single-use codes (5 minutes) bound to their redirect URL; a refresh answers the
    same refresh token; HubSpot's BAD_* errors. A request HubSpot cannot trust (unknown client,
    unlisted redirect URL, unknown scope) gets an error page, never a redirect."""

    token_type = "bearer"  # noqa: S105 - as HubSpot spells it

    def requested_scopes(self, params: Mapping[str, str], client: Client) -> tuple[str, ...]:
        scopes = tuple(params.get("scope", "").split())
        if not scopes or any(scope not in PRIVATE_APP_SCOPES for scope in scopes):
            raise OAuthError("invalid_scope", "invalid scope", "scope")
        # optional scopes the portal has are granted; the ones it lacks are left out (every
        # scope this simulator knows, the portal has)
        optional = tuple(params.get("optional_scope", "").split())
        return scopes + tuple(s for s in optional if s in PRIVATE_APP_SCOPES and s not in scopes)

    def refuse(self, error: OAuthError, redirect_uri: str, state: str | None) -> web.Response:
        return self.error_page(error)

    def error_page(self, error: OAuthError) -> web.Response:
        reason = "invalid client or URL" if error.error == "invalid_request" else error.description
        return web.Response(status=400, text=f"Authorization failed: {reason}")

    def token_answer(self, issued: Issued[int], request: web.Request) -> dict[str, Any]:
        answer = super().token_answer(issued, request)
        answer.pop("scope", None)
        return answer

    def error_answer(self, error: OAuthError) -> web.Response:
        status, message = _OAUTH_STATUS.get(error.reason, _OAUTH_STATUS["code"])
        body = {"status": status, "message": message, "correlationId": str(uuid.uuid4())}
        return web.json_response(body, status=400)


class HubSpotSimulator(UserTokens[int], Simulator[int]):
    scopes = PRIVATE_APP_SCOPES  # what the tokens tests issue are granted

    def __init__(self, portal_id: int = 20_000_001, ten_secondly: int = 190) -> None:
        super().__init__()
        self.portal_id = self.admin = portal_id  # a portal's credentials act as the portal
        self.ten_secondly = ten_secondly  # HubSpot's private app burst limit is 190 / 10 s
        self.tokens = TokenStore(
            access_format=lambda: "CO" + secrets.token_urlsafe(48),
            key_format=lambda: "pat-na1-" + str(uuid.uuid4()),
            refresh_format=lambda portal: str(uuid.uuid4()),
            access_lifetime=1800,  # 30 minutes
            code_lifetime=300,
        )
        self.guard = _Guard(self)
        self.oauth = _OAuth(self.tokens, lambda: self.portal_id)
        self.properties = standard_properties()
        ids = itertools.count(1001)
        self.records = Store(
            self.properties,
            key=lambda t: ID,
            new_id=lambda t: str(next(ids)),
            now=_now,
            derive=_stamp,
        )
        self.links = Links()  # (object type, id) -> (object type, id) -> association type ids
        self.owners: dict[str, dict[str, Any]] = {}
        self.schemas: dict[str, dict[str, Any]] = {}  # fully qualified name -> schema
        self.add_owner("admin@portal.example", "Pat", "Admin")

    # ---- state ------------------------------------------------------------------------------

    def add_private_app(self, scopes: tuple[str, ...] = PRIVATE_APP_SCOPES) -> str:
        return self.tokens.issue_key(self.portal_id, scopes)

    def insert(self, object_type: str, properties: dict[str, Any]) -> str:
        values = self._check(object_type, properties, creating=True)
        return str(self.records.insert(object_type, values)[ID])

    def add_custom_object(
        self, name: str, singular: str, plural: str, properties: list[Prop]
    ) -> str:
        """A custom object (as made in HubSpot's settings or with the schemas API); returns its
        fully qualified name, by which the APIs reach it."""
        qualified = f"p{self.portal_id}_{name}"
        custom = [replace(p, custom=True) for p in properties]
        self.properties[qualified] = {p.name: p for p in (*system_properties(), *custom)}
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

    def add_owner(self, email: str, first: str, last: str, kind: str = "PERSON") -> str:
        """An owner: a user (a PERSON), or a QUEUE (a team inbox, ``add_queue``)."""
        owner_id, now = str(41_629_779 + len(self.owners)), _now()
        user_id = 9_586_504 + len(self.owners)
        self.owners[owner_id] = {
            "id": owner_id,
            "email": email,
            "firstName": first,
            "lastName": last,
            "userId": user_id,
            "userIdIncludingInactive": user_id,
            "createdAt": now,
            "updatedAt": now,
            "archived": False,
            "teams": [],
            "type": kind,
        }
        return owner_id

    def add_queue(self, name: str) -> str:
        return self.add_owner("", name, "", "QUEUE")

    def associate(
        self, from_type: str, from_id: str, to_type: str, to_id: str, type_id: int | None = None
    ) -> None:
        """Link two records with a HUBSPOT_DEFINED type (the unlabelled one when None); a
        labelled type brings the unlabelled one with it, as in HubSpot."""
        types = ASSOCIATION_TYPES.get((from_type, to_type))
        if types is None:
            raise _invalid(f"{from_type} cannot be associated with {to_type}")
        unlabelled = UNLABELLED[(from_type, to_type)]
        chosen = unlabelled if type_id is None else type_id
        if chosen not in types:
            raise _invalid(
                f"association type id {chosen} doesn't exist between {from_type} and {to_type}"
            )
        _found(self.records[from_type], from_id)
        _found(self.records[to_type], to_id, f"{SINGULAR[to_type]} {to_id} not found")
        kinds = {unlabelled, chosen}
        inverse = {types[kind][1] for kind in kinds}
        self.links.link((from_type, from_id), (to_type, to_id), kinds, inverse)

    def associated(self, from_type: str, from_id: str, to_type: str) -> list[tuple[str, set[int]]]:
        """The live records of ``to_type`` linked to a record, by id, with their type ids."""
        linked = self.links.of((from_type, from_id), to_type, self.records[to_type])
        return sorted(linked.items(), key=lambda item: int(item[0]))

    # ---- HTTP -------------------------------------------------------------------------------

    def routes(self) -> list[Route]:
        objects, v4 = "/crm/v3/objects/{type}", "/crm/v4/objects/{type}/{id}/associations"
        return [
            Route("GET", "/oauth/authorize", self.oauth.authorize, guarded=False),
            Route("POST", "/oauth/v1/token", self.oauth.token, guarded=False),
            Route("DELETE", "/oauth/v1/refresh-tokens/{token}", self._revoke, guarded=False),
            Route("GET", "/account-info/v3/details", self._account),
            Route("GET", "/crm/v3/schemas", self._schemas),
            Route("GET", "/crm/v3/owners", self._owners),
            Route("GET", "/crm/v3/owners/", self._owners),  # the path as HubSpot documents it
            Route("GET", "/crm/v3/owners/{id}", self._owner),
            Route("GET", "/crm/v3/properties/{type}", self._properties_route),
            Route("GET", objects, self._list),
            Route("POST", objects, self._create_route),
            Route("POST", objects + "/search", self._search),
            Route("POST", objects + "/batch/create", self._batch_create),
            Route("POST", objects + "/batch/update", self._batch_update),
            Route("POST", objects + "/batch/read", self._batch_read),
            Route("POST", objects + "/batch/archive", self._archive),
            Route("GET", objects + "/{id}", self._get),
            Route("PATCH", objects + "/{id}", self._update),
            Route("DELETE", objects + "/{id}", self._archive),
            Route("PUT", v4 + "/default/{to}/{to_id}", self._link),
            Route("PUT", v4 + "/{to}/{to_id}", self._link),
            Route("DELETE", v4 + "/{to}/{to_id}", self._unlink),
            Route("POST", "/crm/v4/associations/{type}/{to}/batch/read", self._links_read),
        ]

    def _type(
        self, request: web.Request, token: Token | None, write: bool = False, key: str = "type"
    ) -> str:
        """The object type the path names at ``key``, and the scope a token needs for it."""
        object_type = _plural(request.match_info[key])
        if object_type not in self.properties:
            raise _invalid(f"Unable to infer object type from: {object_type}")
        family = "custom" if object_type in self.schemas else object_type
        if token is not None and family in FAMILIES:
            self.guard.require(token, f"crm.objects.{family}.{'write' if write else 'read'}")
        return object_type

    async def _revoke(self, request: web.Request) -> web.Response:
        """DELETE /oauth/v1/refresh-tokens/{token}: the refresh token no longer works."""
        self.tokens.refresh.pop(request.match_info["token"], None)
        return web.Response(status=204)

    # ---- records ----------------------------------------------------------------------------

    def _render(
        self,
        object_type: str,
        record: dict[str, Any],
        wanted: list[str] | None = None,
        associations: list[str] | None = None,
    ) -> dict[str, Any]:
        props, (created, modified) = self.properties[object_type], stamps(object_type)
        standard = (created, modified, ID)
        names = wanted or [n for n in props if n in record or n in standard]
        properties = {
            n: None if record.get(n) is None else str(record[n]) for n in names if n in props
        }
        rendered: dict[str, Any] = {
            "id": record[ID],
            "properties": properties | {n: record[n] for n in standard if n not in properties},
            "createdAt": record[created],
            "updatedAt": record[modified],
            "archived": False,
        }
        linked: dict[str, Any] = {}
        for to_type in associations or ():
            pair = ASSOCIATION_TYPES.get((object_type, to_type), {})
            name, results = f"{SINGULAR[object_type]}_to_{SINGULAR[to_type]}", []
            for to_id, types in self.associated(object_type, record[ID], to_type):
                if len(pair) == 1 or any(pair.get(t, (None, 0))[0] for t in types):
                    results.append({"id": to_id, "type": name})
                if len(pair) > 1:  # a pair with a primary: each link unlabelled as well
                    results.append({"id": to_id, "type": f"{name}_unlabeled"})
            if results:
                linked[to_type] = {"results": results}
        return rendered | ({"associations": linked} if linked else {})

    def _check(self, object_type: str, values: Any, creating: bool) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise _invalid("properties must be an object")
        props = self.properties[object_type]
        clean, problems = check(
            values, props.get, _text, creating=creating, columns=props.values(), empty=(None, "")
        )
        worded = [
            Problem(p.name, _WORDS[p.code][0], _WORDS[p.code][1].format(p.name))
            if p.code in _WORDS
            else p
            for p in problems
        ]
        if worded:
            listed = [{"isValid": False, "message": m, "error": c, "name": n} for n, c, m in worded]
            errors = [
                {"message": m, "code": c, "context": {"propertyName": [n]}} for n, c, m in worded
            ]
            raise _invalid(f"Property values were not valid: {listed}", errors=errors)
        return clean

    def _apply(self, object_type: str, record: dict[str, Any], values: Any) -> None:
        self.records.change(object_type, record, self._check(object_type, values, creating=False))

    def _asked(self, request: web.Request) -> tuple[list[str] | None, list[str]]:
        """The properties (``properties=a,b`` or ``properties=a&properties=b``, as the SDKs
        send it; None: the default ones) and the associated object types to show."""
        said = {
            k: [n for v in request.query.getall(k, []) for n in v.split(",") if n]
            for k in ("properties", "associations")
        }
        linked = [_plural(n) for n in said["associations"] if _plural(n) in self.properties]
        return said["properties"] or None, linked

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
        self.guard.require(token, "crm.schemas.custom.read")
        results = [
            {**schema, "properties": [p.describe(name) for p in self.properties[name].values()]}
            for name, schema in self.schemas.items()
        ]
        return web.json_response({"results": results})

    async def _owners(self, request: web.Request, token: Token) -> web.Response:
        """Owners a page at a time, after an opaque cursor; ``email`` finds one."""
        self.guard.require(token, "crm.objects.owners.read")
        limit, email = int(request.query.get("limit") or 100), request.query.get("email", "")
        if not 1 <= limit <= 500:
            raise _invalid("limit must be between 1 and 500")
        given = request.query.get("after")  # HubSpot's cursors are opaque
        last = uncursor(given) if given else None
        if given and not isinstance(last, int):
            raise _invalid("after is not a valid cursor")
        found = [o for o in self.owners.values() if email.lower() in ("", o["email"].lower())]
        owners = after(found, lambda o: int(o["id"]), last, limit)
        return _page(owners, limit, lambda o: cursor(int(o["id"])))

    async def _owner(self, request: web.Request, token: Token) -> web.Response:
        self.guard.require(token, "crm.objects.owners.read")
        return web.json_response(_found(self.owners, request.match_info["id"]))

    async def _properties_route(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token)
        props = self.properties[object_type].values()
        return web.json_response({"results": [p.describe(object_type) for p in props]})

    async def _list(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token)
        limit, last = min(100, int(request.query.get("limit") or 10)), request.query.get("after")
        start = int(last) if last else None
        rows = after(self.records[object_type].values(), lambda r: int(r[ID]), start, limit)
        asked = self._asked(request)
        return _page([self._render(object_type, r, *asked) for r in rows], limit)

    async def _get(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token)
        record = _found(self.records[object_type], request.match_info["id"])
        return web.json_response(self._render(object_type, record, *self._asked(request)))

    async def _create_route(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        record = self._made(object_type, await _json(request))
        return web.json_response(self._render(object_type, record), status=201)

    async def _update(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        record = _found(self.records[object_type], request.match_info["id"])
        self._apply(object_type, record, (await _json(request)).get("properties") or {})
        return web.json_response(self._render(object_type, record))

    def _check_links(self, object_type: str, associations: Any) -> list[tuple[str, str, int]]:
        """A create's ``associations`` as (object type, id, type id): each names an existing
        record and HUBSPOT_DEFINED type ids that exist between the two object types (HubSpot
        refuses the create otherwise). A lead must be created with its primary contact."""
        if not isinstance(associations, (list, type(None))):
            raise _invalid("associations must be a list")
        specs = [spec if isinstance(spec, dict) else {} for spec in associations or ()]
        kinds = [(s, k if isinstance(k, dict) else {}) for s in specs for k in s.get("types") or ()]
        if object_type == "leads" and not any(k.get("associationTypeId") == 578 for _, k in kinds):
            message = "A lead must be associated with a primary contact (associationTypeId 578)"
            raise _invalid(message)
        if not all(spec.get("types") for spec in specs):
            raise _invalid("an association needs its types")
        links = []
        for spec, kind in kinds:
            to_id = str((spec.get("to") or {}).get("id", ""))
            type_id = kind.get("associationTypeId")
            to_type = LEADS_TO.get((object_type, type_id))
            if kind.get("associationCategory") != "HUBSPOT_DEFINED":
                raise _invalid("unknown association category")
            if to_type is None or not isinstance(type_id, int):
                raise _invalid(f"association type id {type_id} doesn't exist from {object_type}")
            if to_id not in self.records[to_type]:
                known = f"{SINGULAR[to_type]} {to_id}"
                raise _invalid(f"One or more associations are invalid: {known} does not exist")
            links.append((to_type, to_id, type_id))
        return links

    def _made(self, object_type: str, item: dict[str, Any]) -> Row:
        """A create's record (``properties``), linked as its ``associations`` say (checked
        first, as HubSpot makes nothing when one is wrong)."""
        links = self._check_links(object_type, item.get("associations"))
        values = self._check(object_type, item.get("properties") or {}, creating=True)
        record = self.records.insert(object_type, values)
        for to_type, to_id, type_id in links:
            self.associate(object_type, record[ID], to_type, to_id, type_id)
        return record

    async def _link(self, request: web.Request, token: Token) -> web.Response:
        """v4: PUT .../associations/default/{to}/{toId} (the unlabelled type), or
        PUT .../associations/{to}/{toId} with a list of types."""
        from_type = self._type(request, token, write=True)
        to_type = self._type(request, None, key="to")
        from_id, to_id = request.match_info["id"], request.match_info["to_id"]
        if "/associations/default/" in request.path:
            self.associate(from_type, from_id, to_type, to_id)
            kind = UNLABELLED[(from_type, to_type)]
            spec = {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": kind}
            return _batch([{"from": {"id": from_id}, "to": {"id": to_id}, "associationSpec": spec}])
        types = await json_body(request, _invalid, "Invalid input JSON")
        if not isinstance(types, list) or not types:
            raise _invalid("a list of association types is needed")
        for kind in types:
            type_id = kind.get("associationTypeId") if isinstance(kind, dict) else None
            if not isinstance(type_id, int):
                raise _invalid("associationTypeId must be a number")
            self.associate(from_type, from_id, to_type, to_id, type_id)
        pair = ASSOCIATION_TYPES[(from_type, to_type)]
        linked = self.links[(from_type, from_id)][(to_type, to_id)]
        body = {
            "fromObjectTypeId": from_type,
            "fromObjectId": int(from_id),
            "toObjectTypeId": to_type,
            "toObjectId": int(to_id),
            "labels": [pair[t][0] for t in linked if pair[t][0] is not None],
        }
        return web.json_response(body, status=201)

    async def _unlink(self, request: web.Request, token: Token) -> web.Response:
        from_type = self._type(request, token, write=True)
        linked = (_plural(request.match_info["to"]), request.match_info["to_id"])
        self.links.unlink((from_type, request.match_info["id"]), linked)
        return web.Response(status=204)

    async def _links_read(self, request: web.Request, token: Token) -> web.Response:
        """v4 batch read: for each input id, its associated records of ``to`` with their types."""
        from_type = self._type(request, token)
        to_type = self._type(request, None, key="to")
        pair, results, errors = ASSOCIATION_TYPES.get((from_type, to_type), {}), [], []
        for from_id in await self._ids(request, limit=1000):
            linked = self.associated(from_type, from_id, to_type)
            if not linked:
                message = f"No {to_type} is associated with {SINGULAR[from_type]} {from_id}."
                errors.append(_failed("OBJECT_NOT_FOUND", message, fromObjectId=[from_id]))
                continue
            found = [
                {
                    "toObjectId": int(to_id),
                    "associationTypes": [
                        {"category": "HUBSPOT_DEFINED", "typeId": t, "label": pair[t][0]}
                        for t in sorted(types)
                    ],
                }
                for to_id, types in linked
            ]
            results.append({"from": {"id": from_id}, "to": found})
        return _batch(results, errors)

    async def _archive(self, request: web.Request, token: Token) -> web.Response:
        """DELETE .../{id}, or batch/archive of the inputs' ids: idempotent, as in HubSpot."""
        object_type = self._type(request, token, write=True)
        one = request.match_info.get("id")
        for record_id in [one] if one else await self._ids(request):
            self.records[object_type].pop(record_id, None)
        return web.Response(status=204)

    async def _search(self, request: web.Request, token: Token) -> web.Response:
        """filterGroups (any group; every filter of one), one sort, ``limit`` from ``after``."""
        object_type = self._type(request, token)
        body, props = await _json(request), self.properties[object_type]
        groups = [g.get("filters") or [] for g in body.get("filterGroups") or []]
        if len(groups) > 5 or any(len(g) > 6 for g in groups) or sum(map(len, groups)) > 18:
            raise _invalid("Too many filters or filter groups")
        sorts = body.get("sorts") or [{"propertyName": ID, "direction": "ASCENDING"}]
        if len(sorts) > 1:
            raise _invalid("Only one sort is supported")
        sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": str(sorts[0])}
        name, descending = sort.get("propertyName", ID), sort.get("direction") == "DESCENDING"
        if name not in props:
            raise _invalid(f"Property {name} does not exist")
        limit, start = int(body.get("limit") or 10), int(body.get("after") or 0)
        if limit > 200:
            raise _invalid("limit must be at most 200")
        if start + limit > SEARCH_LIMIT:
            raise _invalid("The search endpoint returns at most 10,000 results")
        found = [
            r
            for r in self.records[object_type].values()
            if not groups or any(all(self._holds(object_type, r, f) for f in g) for g in groups)
        ]
        rows = order(
            found,
            Sort(name, descending, nulls_last=True, kind=props[name].kind),
            Sort(lambda r: int(r[ID]), descending),
        )
        shown, more = page(rows, start, limit)
        results = [self._render(object_type, r, body.get("properties") or None) for r in shown]
        paging = {"paging": {"next": {"after": str(start + limit)}}} if more else {}
        return web.json_response({"total": len(rows), "results": results} | paging)

    def _holds(self, object_type: str, record: dict[str, Any], spec: Any) -> bool:
        """One search filter; ``associations.{object}`` EQ an id holds for the records
        associated with that record."""
        props, spec = self.properties[object_type], spec if isinstance(spec, dict) else {}
        name, wanted = str(spec.get("propertyName", "")), spec.get("value")
        op, value = str(spec.get("operator", "EQ")), record.get(name)
        to_type = _plural(name.removeprefix("associations."))
        if name.startswith("associations.") and to_type in self.properties and op == "EQ":
            return str(wanted) in dict(self.associated(object_type, record[ID], to_type))
        if name not in props:
            raise _invalid(f"Property {name} does not exist")
        if op in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            return (value is None) == (op == "NOT_HAS_PROPERTY")
        if op == "CONTAINS_TOKEN":
            return _contains_token(str(value or "").lower(), str(wanted or "").lower())
        if op not in _OPERATORS:
            raise _invalid(f"Unknown operator {op}")
        return test(_OPERATORS[op], value, str(wanted), props[name].kind)

    # ---- batch ------------------------------------------------------------------------------

    async def _items(self, request: web.Request, limit: int = 100) -> list[dict[str, Any]]:
        """A batch's ``inputs``, at most ``limit`` of them."""
        inputs = (await _json(request)).get("inputs")
        if not isinstance(inputs, list) or not inputs:
            raise _invalid("inputs must be a non-empty list")
        if len(inputs) > limit:
            raise _invalid(f"Batch size limit is {limit}")
        return [item if isinstance(item, dict) else {} for item in inputs]

    async def _ids(self, request: web.Request, limit: int = 100) -> list[str]:
        return [str(item.get("id")) for item in await self._items(request, limit)]

    async def _batch_create(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        inputs = await self._items(request)
        for item in inputs:  # all or nothing, as HubSpot's batch create validates first
            self._check(object_type, item.get("properties") or {}, creating=True)
            self._check_links(object_type, item.get("associations"))
        made = []
        for item in inputs:
            trace = {k: v for k, v in item.items() if k == "objectWriteTraceId"}
            made.append(self._render(object_type, self._made(object_type, item)) | trace)
        random.shuffle(made)  # HubSpot does not keep the order of the inputs
        return _batch(made, status=201)

    async def _batch_update(self, request: web.Request, token: Token) -> web.Response:
        object_type = self._type(request, token, write=True)
        results, errors = [], []
        for item in await self._items(request):
            try:
                record = _found(self.records[object_type], str(item.get("id")))
                self._apply(object_type, record, item.get("properties") or {})
                results.append(self._render(object_type, record))
            except Refused as refused:
                errors.append(_failed(refused.category, refused.message, ids=[str(item.get("id"))]))
        return _batch(results, errors)

    async def _batch_read(self, request: web.Request, token: Token) -> web.Response:
        """The records of the inputs' ids; 207 with an OBJECT_NOT_FOUND naming the others."""
        object_type = self._type(request, token)
        rows, ids = self.records[object_type], await self._ids(request)
        wanted = (await _json(request)).get("properties") or None
        results = [self._render(object_type, rows[i], wanted) for i in ids if i in rows]
        message = "Could not get some objects, they may be deleted or not exist."
        missing = [i for i in ids if i not in rows]
        failed = [_failed("OBJECT_NOT_FOUND", message, ids=missing)] if missing else []
        return _batch(results, failed)


# HubSpot's words for the problems every simulator's write check finds (crmsim.columns)
_WORDS = {
    UNKNOWN: ("PROPERTY_DOESNT_EXIST", 'Property "{}" does not exist'),
    READ_ONLY: ("READ_ONLY_VALUE", '"{}" is a read only property; its value cannot be set.'),
    REQUIRED: ("REQUIRED_FIELD", "{} is required"),
}
_OPERATORS = {"EQ": "=", "NEQ": "!=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point HubSpot (its API and OAuth) at a simulator running
    at ``base_url`` (the tests and the demo use it)."""
    oauth = {"authorize_url": "/oauth/authorize", "token_url": "/oauth/v1/token"}
    return overrides("HubSpot", base_url, oauth, "api_url")


async def _json(request: web.Request) -> dict[str, Any]:
    return await json_object(
        request, _invalid, "Invalid input JSON", "Invalid input JSON: expected an object"
    )


def _batch(
    results: list[Any], errors: list[dict[str, Any]] | None = None, status: int = 200
) -> web.Response:
    """A batch answer: COMPLETE, and 207 (with the errors) when some inputs failed."""
    now = _now()
    body = {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}
    failed = {"errors": errors, "numErrors": len(errors)} if errors else {}
    return web.json_response(body | failed, status=207 if errors else status)


def _stamp(object_type: str, record: dict[str, Any]) -> None:
    """A record's stamps, as its object names them: made once, modified at every write."""
    created, modified = stamps(object_type)
    record[modified] = _now()
    record.setdefault(created, record[modified])


def _page(
    rows: list[dict[str, Any]],
    limit: int,
    after_of: Callable[[dict[str, Any]], str] = lambda row: str(row["id"]),
) -> web.Response:
    """A list's page of ``rows`` (one more than ``limit`` where another page follows), with
    the cursor to the next."""
    body: dict[str, Any] = {"results": rows[:limit]}
    if len(rows) > limit:
        body["paging"] = {"next": {"after": after_of(rows[limit - 1]), "link": ""}}
    return web.json_response(body)


def _found(
    rows: Mapping[str, dict[str, Any]], key: str, message: str = "resource not found"
) -> dict[str, Any]:
    if key not in rows:
        raise Refused(404, "OBJECT_NOT_FOUND", message)
    return rows[key]


def _failed(category: str, message: str, **context: list[str]) -> dict[str, Any]:
    """One failed input of a batch."""
    return {"status": "error", "category": category, "message": message, "context": context}


def _plural(name: str) -> str:
    return PLURAL.get(name.lower(), name.lower())


def _text(prop: Column, value: Any) -> str:
    """A property value as HubSpot keeps it, as text, or why its type refuses it."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if prop.type == "number" and typed(text, "number")[0]:
        code = "INVALID_LONG" if "." not in text else "INVALID_DOUBLE"
        raise Invalid(f"{text} was not a valid number.", code)
    if prop.type == "enumeration" and text not in prop.options:
        options = ", ".join(prop.options)
        raise Invalid(f"{text} was not one of the allowed options: [{options}]", "INVALID_OPTION")
    if prop.type in ("datetime", "date") and not text.isdigit() and instant(text) is None:
        raise Invalid(f"{text} is not a valid date", "INVALID_DATE")  # ISO 8601 or epoch ms
    if prop.name == "email" and "@" not in text:
        raise Invalid(f"Email address {text} is invalid", "INVALID_EMAIL")
    return text


def _contains_token(text: str, pattern: str) -> bool:
    """CONTAINS_TOKEN: a whole word, or with ``*`` wildcards a word's start or any part."""
    core = pattern.strip("*")
    if pattern.startswith("*") and pattern.endswith("*"):
        return core in text
    if pattern.endswith("*"):
        return any(word.startswith(core) for word in [text, *text.split()])
    return core in text.split() or core == text
