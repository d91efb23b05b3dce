"""A Pipedrive company: the subset of Pipedrive's REST API that crmgate and the official Python
SDK (pipedrive-python-lib) use, as Pipedrive documents it.

- Auth: an API token (``api_token`` query parameter, as the SDK sends it, or the ``x-api-token``
  header) or an OAuth access token (``Authorization: Bearer``); 401 ``unauthorized access``.
  ``auth`` records how each call authenticated (``header``, ``query``, ``bearer``, ...).
  OAuth: ``POST /oauth/token`` with HTTP Basic client authentication (authorization_code and
  refresh_token grants) and ``POST /oauth/revoke`` (crmsim.oauth); the company's admin
  consents at once; the answer names the company's ``api_domain``.
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

import itertools
import json
import re
import secrets
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crmsim import app
from crmsim.app import LOG, Route, Simulator, cursor, mechanism, one_of, overrides, uncursor, whole
from crmsim.columns import READ_ONLY, REQUIRED, UNKNOWN, Invalid, check
from crmsim.guard import Answer, Guard, RateWindow, Verdict, bearer, header, json_object, query
from crmsim.oauth import AuthorizationServer, Issued
from crmsim.pipedrive_schema import (
    OBJECTS,
    OWNER_IS_USER_ID,
    V2_CUSTOM_SHAPES,
    V2_OBJECTS,
    V2_PARAMETERS,
    V2_SORTS,
    Field,
    custom_key,
    new_field,
    standard_fields,
)
from crmsim.query import like
from crmsim.records import Sort, Store, conforms, order, page, test
from crmsim.seed import ACCOUNTS, CONTACTS, LEADS
from crmsim.tokens import AccessToken, TokenStore

Token = AccessToken[int]  # its subject: the user id
ERROR_INFO = "Please check developers.pipedrive.com for more information about Pipedrive API."
MAX_LIMIT = 500
MAX_CONDITIONS = 16
# Pipedrive's words for the problems every simulator's write check finds (crmsim.columns)
_PROBLEMS = {UNKNOWN: "Unrecognized or read-only key", READ_ONLY: "Unrecognized or read-only key"}
_PROBLEMS[REQUIRED] = "Required"
_LISTS = ("emails", "phones", "participants", "value")  # persons', activities' and leads' lists
# the field types of references (integers), and the collections of those that are checked
_REFERENCES = ("org", "people", "deal", "user", "stage")
_TARGETS = {"org": "organizations", "people": "persons", "deal": "deals"}
_NUMERIC = ("int", "double", "monetary", "org", "people", "deal", "user")
# what a new record of an object is unless the write says otherwise
_DEFAULTS: dict[str, dict[str, Any]] = {
    "deals": {"status": "open", "currency": "EUR", "stage_id": 1},
    "activities": {"type": "task", "done": False},
}
# what v2 shows of an object even when it was never set (null)
_V2_SHOWN = {
    "persons": ("job_title", "org_id"),
    "organizations": ("address",),
    "deals": ("org_id", "person_id", "value", "expected_close_date", "probability"),
    "activities": ("participants", "deal_id", "lead_id", "org_id", "due_date", "location", "note"),
}
# the query parameters of the v1 lists (v2's: V2_PARAMETERS), and those of one list only
V1_PARAMETERS = ("owner_id", "org_id", "person_id", "deal_id", "lead_id", "ids")
V1_OWN = {"notes": ("user_id",), "leads": ("organization_id",)}
_LIKE = {"LIKE '$%'": "{}%", "LIKE '%$%'": "%{}%", "NOT LIKE '$%'": "{}%"}


def refused(status: int, error: str, **extra: Any) -> Answer:
    """Pipedrive's error answer, to raise (or answer with)."""
    body = {"success": False, "error": error, "error_info": ERROR_INFO, "data": None}
    return Answer(status, body | {"additional_data": None, "errorCode": status, **extra})


def _invalid(problems: list[str]) -> Answer:
    message = "Validation failed: " + "; ".join(problems)
    return refused(400, message, code="ERR_SCHEMA_VALIDATION_FAILED")


def _now() -> str:
    """Now as v2 shows a time (RFC 3339, UTC): the records keep their times so."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _v1_time(value: str) -> str:
    """A time as v1 shows it: ``2024-01-31 10:00:00`` (UTC)."""
    return value.replace("T", " ").removesuffix("Z")


class _Guard(Guard[int]):
    def __init__(self, sim: PipedriveSimulator) -> None:
        found = [bearer(), header("x-api-token"), query("api_token")]
        super().__init__(sim.tokens, found, RateWindow(lambda: sim.burst, 2), sim.faults)

    def unauthorized(self, request: web.Request, token: Token | None) -> web.Response:
        return refused(401, "unauthorized access").response()

    def limited(self, verdict: Verdict) -> web.Response:
        return Answer(429, refused(429, "Request over limit").body, {"Retry-After": "2"}).response()

    def rate_headers(self, verdict: Verdict) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(verdict.limit),
            "x-ratelimit-remaining": str(verdict.remaining),
            "x-ratelimit-reset": "2",
        }


class _OAuth(AuthorizationServer[int]):
    client_authentication = "basic"

    def __init__(self, sim: PipedriveSimulator) -> None:
        super().__init__(sim.tokens, lambda: sim.admin)
        self.sim = sim

    def token_answer(self, issued: Issued[int], request: web.Request) -> dict[str, Any]:
        return {
            **super().token_answer(issued, request),
            "scope": "base,deals:full,contacts:full,activities:full,leads:full",
            "expires_in": int(issued.lifetime) - 1,
            "api_domain": self.sim.base_url,
        }


class PipedriveSimulator(app.UserTokens[int], Simulator[int]):
    def __init__(self, company: str = "Acme Sales (sim)", burst: int = 80) -> None:
        super().__init__()
        self.company_id = 7_001
        self.company_name = company
        self.burst = burst  # requests per token per 2-second window
        self.fields = standard_fields()
        self._ids = itertools.count(1)
        self.records = Store(
            OBJECTS,
            key=lambda collection: "id",
            new_id=lambda collection: (
                str(uuid.uuid4()) if collection == "leads" else next(self._ids)
            ),
            now=_now,
            created=("add_time",),
            modified=("update_time",),
            derive=self._derive,
        )
        self.filters: dict[int, dict[str, Any]] = {}
        self.users: dict[int, dict[str, Any]] = {}
        self.tokens = TokenStore(
            access_format=lambda: f"v1u:{secrets.token_urlsafe(40)}",
            key_format=lambda: secrets.token_hex(20),
            refresh_format=lambda user: f"{self.company_id}:{user}:{secrets.token_hex(20)}",
        )
        self.read_only_users: set[int] = set()
        self.guard = _Guard(self)
        self.oauth = _OAuth(self)
        self.queries: deque[tuple[str, str, dict[str, str]]] = deque(maxlen=LOG)
        # how each call authenticated: (method, path, "header" | "query" | "bearer" | ...)
        self.auth: deque[tuple[str, str, str]] = deque(maxlen=LOG)
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

    add_api_token = app.UserTokens.issue_key  # a user's personal API token

    def add_custom_field(
        self,
        collection: str,
        name: str,
        field_type: str = "varchar",
        options: tuple[str, ...] = (),
        key: str | None = None,
    ) -> str:
        made = new_field(key or custom_key(), name, field_type, custom=True, options=options)
        self.fields[collection].append(made)
        if collection == "deals":  # leads share the deals' custom fields
            self.fields["leads"].append(made)
        return made.name

    def insert(self, collection: str, values: dict[str, Any], user_id: int | None = None) -> str:
        """A record made through the same checks as the API's (v2 shapes)."""
        return str(self._create(collection, values, user_id or self.admin)["id"])

    # ---- HTTP -------------------------------------------------------------------------------

    def seen(self, request: web.Request) -> None:
        query = {k: v for k, v in request.query.items() if k != "api_token"}
        self.queries.append((request.method, request.path, query))
        how = mechanism(request, header="x-api-token", parameter="api_token")
        self.auth.append((request.method, request.path, how))

    def routes(self) -> list[Route]:
        v1, v2 = (
            "/v1/" + one_of("collection", OBJECTS),
            "/api/v2/" + one_of("collection", V2_OBJECTS),
        )
        fields = "/v1/" + one_of("collection", [spec[2] for spec in OBJECTS.values()])
        put = "/v1/" + one_of("collection", [c for c in OBJECTS if c != "leads"]) + "/{id}"
        return [
            Route("GET", "/oauth/authorize", self.oauth.authorize, guarded=False),
            Route("POST", "/oauth/token", self.oauth.token, guarded=False),
            Route("POST", "/oauth/revoke", self.oauth.revoke, guarded=False),
            Route("GET", "/v1/users/me", self._me),
            Route("GET", "/v1/users", self._users),
            Route("GET", "/v1/users/{id}", self._user),
            Route("GET", "/v1/filters", self._filters),
            Route("POST", "/v1/filters", self._filter_create),
            Route("GET", "/v1/filters/{id}", self._filter_get),
            Route("PUT", "/v1/filters/{id}", self._filter_update),
            Route("DELETE", "/v1/filters/{id}", self._filter_delete),
            Route("GET", fields, self._fields_route),
            Route("GET", v1, self._v1_list),
            Route("GET", v2, self._v2_list),
            Route("PUT", put, self._update),
            Route("PATCH", "/v1/{collection:leads}/{id}", self._update),
            Route("PATCH", v2 + "/{id}", self._update),
            *(Route("POST", path, self._create_route) for path in (v1, v2)),
            *(Route("GET", path + "/{id}", self._get) for path in (v1, v2)),
            *(Route("DELETE", path + "/{id}", self._delete) for path in (v1, v2)),
        ]

    def _write_allowed(self, token: Token) -> None:
        if token.subject in self.read_only_users:
            raise refused(403, "You do not have permissions to edit this item")

    # ---- users ------------------------------------------------------------------------------

    async def _me(self, request: web.Request, token: Token) -> web.Response:
        me = {
            **self.users[token.subject],
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
            [{**u, "is_you": u["id"] == token.subject} for _, u in sorted(self.users.items())]
        )

    async def _user(self, request: web.Request, token: Token) -> web.Response:
        user = self.users.get(whole(request.match_info["id"]) or 0)
        if user is None:
            raise refused(404, "User not found")
        return _ok({**user, "is_you": user["id"] == token.subject})

    # ---- fields -----------------------------------------------------------------------------

    async def _fields_route(self, request: web.Request, token: Token) -> web.Response:
        collection = _collection(request)
        start, limit = _paging(request)
        shown, more = page(self.fields[collection], start, limit)
        described = [f.describe(start + i) for i, f in enumerate(shown)]
        return _ok(described, _pagination(start, limit, len(shown), more))

    def _field(self, collection: str, key: str) -> Field | None:
        if key == "owner_id" and collection in OWNER_IS_USER_ID:
            key = "user_id"  # v2's owner_id is v1's user_id field
        return next((f for f in self.fields[collection] if f.name == key), None)

    def _field_by_id(self, collection: str, field_id: Any) -> Field | None:
        return next((f for f in self.fields[collection] if str(f.id) == str(field_id)), None)

    # ---- records: the store, in v2 shapes -----------------------------------------------------

    def _check(self, collection: str, values: dict[str, Any], creating: bool) -> dict[str, Any]:
        """Values as stored (v2 shapes), or Pipedrive's validation error."""
        problems: list[str] = []
        custom = values.pop("custom_fields", None)
        if custom is not None and not isinstance(custom, dict):
            problems.append("custom_fields: Expected object")
            custom = None

        def column(key: str) -> Field | None:
            if key in _LISTS and collection in ("persons", "activities", "leads"):
                return Field(key, "list")
            return self._field(collection, key)

        def convert(spec: Field, value: Any) -> Any:
            if spec.custom and custom is None:
                raise Invalid("custom fields go under custom_fields")
            return self._value(spec, value)

        columns = self.fields[collection]
        clean, found = check(
            {**values, **(custom or {})}, column, convert, creating=creating, columns=columns
        )
        problems += [f"{p.name}: {_PROBLEMS.get(p.code, p.message)}" for p in found]
        if (
            creating
            and collection == "leads"
            and not (clean.get("person_id") or clean.get("organization_id"))
        ):
            problems.append("person_id: A lead must be linked to a person or an organization")
        if (
            creating
            and collection == "notes"
            and not any(clean.get(k) for k in ("deal_id", "person_id", "org_id", "lead_id"))
        ):
            problems.append("deal_id: The note must be attached to a deal, person, org or lead")
        if problems:
            raise _invalid(problems)
        return clean

    def _value(self, spec: Field, value: Any) -> Any:
        """A v2 value as stored, or `Invalid` with Pipedrive's reason."""
        kind = spec.type
        if spec.custom and kind in V2_CUSTOM_SHAPES:
            return _shaped(spec, value)
        if kind in ("monetary", "double", "int") and not conforms(value, "number"):
            raise Invalid("Expected number")
        if kind in _REFERENCES:
            target = _TARGETS.get(kind)
            if not conforms(value, "integer"):
                raise Invalid("Expected integer")
            if target and str(value) not in self.records[target]:
                raise Invalid(f"{target[:-1].capitalize()} with id {value} not found")
        if kind == "lead" and (not isinstance(value, str) or value not in self.records["leads"]):
            raise Invalid("Lead not found")
        if kind == "date" and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(value)):
            raise Invalid("Expected date in YYYY-MM-DD format")
        if kind == "enum" and spec.custom:  # a custom option field keeps its option's id
            if str(value) not in {str(i + 1) for i in range(len(spec.options))}:
                raise Invalid("Invalid option id")
            return int(value)
        if kind in ("enum", "status") and spec.options and str(value) not in spec.options:
            raise Invalid(f"Invalid option, expected one of: {', '.join(spec.options)}")
        if kind == "boolean":
            if not isinstance(value, bool) and value not in (0, 1):
                raise Invalid("Expected boolean")
            return bool(value)
        if spec.name in _LISTS[:3] and not (
            isinstance(value, list) and all(isinstance(v, dict) for v in value)
        ):
            raise Invalid("Expected array of objects")
        if kind == "address":
            if not isinstance(value, (dict, str)):
                raise Invalid("Expected object")
            return {"value": value} if isinstance(value, str) else value
        if spec.name in ("email", "phone"):  # v1 accepts text
            return value if isinstance(value, list) else [_contact(str(value))]
        if kind in ("varchar", "text", "phone") and not isinstance(value, str):
            raise Invalid("Expected string")
        return value

    def _v1_body(self, collection: str, body: dict[str, Any]) -> dict[str, Any]:
        """A v1 body as v2 values: what v1 does not know left out (leads are v2 alike), a
        person's ``email``/``phone`` (text or a list), the owner of a deal or activity
        (``user_id``) and custom fields (top-level keys, a monetary field's currency as
        ``<key>_currency``, options as ``"1,2"``)."""
        known = {f.name for f in self.fields[collection]}
        known |= {f"{f.name}_currency" for f in self.fields[collection] if f.custom}
        shaped = {k: v for k, v in body.items() if k in known or collection == "leads"}
        if collection in OWNER_IS_USER_ID and "user_id" in shaped:
            shaped["owner_id"] = shaped.pop("user_id")
        custom: dict[str, Any] = {}
        for spec in self.fields[collection]:
            if not spec.custom or spec.name not in shaped:
                continue
            value = shaped.pop(spec.name)
            currency = shaped.pop(f"{spec.name}_currency", None) or "EUR"
            if value is not None and spec.type == "monetary":
                value = {"value": float(value) if _number(value) else value, "currency": currency}
            elif value is not None and spec.type == "set":
                value = [int(v) if str(v).isdigit() else v for v in str(value).split(",")]
            elif value is not None and spec.type == "address":
                value = {"value": str(value)}
            custom[spec.name] = value
        if custom:
            shaped["custom_fields"] = custom
        for v1, v2 in (("email", "emails"), ("phone", "phones")) if collection == "persons" else ():
            if v1 in shaped:
                value = shaped.pop(v1)
                shaped[v2] = [_contact(value)] if isinstance(value, str) else value
        return shaped

    def _create(self, collection: str, values: dict[str, Any], user_id: int) -> dict[str, Any]:
        clean = self._check(collection, values, creating=True)
        record = {"owner_id": user_id, **_DEFAULTS.get(collection, {}), **clean}
        if collection == "notes":
            record["user_id"] = user_id
        return self.records.insert(collection, record)

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

    def _record(self, collection: str, record_id: str, live: bool = False) -> dict[str, Any]:
        """A record by its id; ``live``: not one marked as deleted."""
        record = self.records[collection].get(record_id)
        if record is None or (live and record.get("is_deleted")):
            raise refused(404, f"{OBJECTS[collection][0].capitalize()} not found")
        return record

    def _apply(self, collection: str, record: dict[str, Any], values: dict[str, Any]) -> None:
        clean = self._check(collection, values, creating=False)
        for key, value in clean.items():
            spec = self._field(collection, key)
            if spec is not None and spec.required and value in (None, ""):
                raise _invalid([f"{key}: Required"])
        self.records.change(collection, record, clean)

    # ---- rendering ----------------------------------------------------------------------------

    def _v2(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        custom_keys = [f.name for f in self.fields[collection] if f.custom]
        shown: dict[str, Any] = dict.fromkeys(_V2_SHOWN.get(collection, ()))
        shown |= {k: v for k, v in record.items() if k not in custom_keys and k != "custom_fields"}
        if collection == "activities":
            shown["participants"] = shown["participants"] or []
        shown["custom_fields"] = {k: record.get(k) for k in custom_keys}
        shown["is_deleted"] = bool(record.get("is_deleted"))
        return shown

    def _v1(self, collection: str, record: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in self._v2(collection, record).items() if k != "custom_fields"}
        for spec in (f for f in self.fields[collection] if f.custom):
            value = record.get(spec.name)
            if spec.type == "monetary":  # v1: the number and <key>_currency
                shown[f"{spec.name}_currency"] = value.get("currency") if value else None
            if spec.type in V2_CUSTOM_SHAPES and value:  # an amount, an address by its value
                value = ",".join(map(str, value)) if spec.type == "set" else value.get("value")
            shown[spec.name] = value if value or spec.type not in V2_CUSTOM_SHAPES else None
        for key in ("add_time", "update_time"):  # leads are newer: ISO times, v1 only
            iso = record[key].replace("Z", ".000Z")
            shown[key] = iso if collection == "leads" else _v1_time(record[key])
        if collection == "leads":
            return shown
        shown["active_flag"] = not shown.pop("is_deleted", False)
        owner = self.users.get(record.get("owner_id") or 0)
        if collection in ("persons", "organizations", "deals") and owner is not None:
            brief = {k: owner[k] for k in ("id", "name", "email")}
            shown["owner_id"] = brief | {"value": owner["id"]}
        if collection in OWNER_IS_USER_ID:
            shown["user_id"] = shown.pop("owner_id", None)
        if collection == "activities":
            location = record.get("location")
            shown["location"] = location.get("value") if isinstance(location, dict) else None
            shown["person_id"] = self._link(collection, shown, "person_id")
            shown.pop("participants", None)
        for key, target in (("org_id", "organizations"), ("person_id", "persons")):
            linked = self.records[target].get(str(record.get(key)))
            if linked is not None and collection in ("persons", "deals"):
                shown[key] = {"name": linked.get("name"), "value": linked["id"]}
        if collection == "persons":
            shown["email"], shown["phone"] = shown.pop("emails", []), shown.pop("phones", [])
            primary = (e["value"] for e in shown["email"] if e.get("primary"))
            shown["primary_email"] = next(primary, None)
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
            found = self.filters.get(whole(filter_id) or 0)
            if found is None or found["type"] != OBJECTS[collection][1]:
                raise refused(404, "Filter not found")
            return [r for r in rows if self._passes(collection, r, found["conditions"])]
        keys = V2_PARAMETERS[collection] if v2 else V1_PARAMETERS + V1_OWN.get(collection, ())
        for key, wanted in ((k, request.query.get(k)) for k in keys):
            if key == "ids" and wanted:
                rows = [r for r in rows if str(r["id"]) in wanted.split(",")]
            elif key != "ids" and wanted is not None:
                rows = [r for r in rows if str(self._link(collection, r, key)) == wanted]
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
        for group in conditions.get("conditions") or []:
            results = [
                self._condition(collection, record, c) for c in group.get("conditions") or []
            ]
            if results and not (any if group.get("glue") == "or" else all)(results):
                return False
        return True

    def _condition(
        self, collection: str, record: dict[str, Any], condition: dict[str, Any]
    ) -> bool:
        """One filter condition, as Pipedrive's SQL holds it: case-insensitive text, numbers
        as numbers, dates by day; a list field holds when one of its values does."""
        spec = self._field_by_id(collection, condition.get("field_id"))
        if spec is None:
            return False
        operator, wanted = str(condition.get("operator")), str(condition.get("value"))
        texts = self._texts(collection, record, spec)
        if operator in ("IS NULL", "IS NOT NULL"):
            return bool(texts) == (operator == "IS NOT NULL")
        if not texts:  # SQL would say unknown; Pipedrive shows empty ones as not equal
            return operator == "!="
        if operator in _LIKE:
            pattern = like(_LIKE[operator].format(wanted))
            hit = any(pattern.fullmatch(text) for text in texts)
            return hit != operator.startswith("NOT")
        if operator not in ("=", "!=", "<", ">", "<=", ">="):
            raise refused(400, f"Unknown operator {operator}")
        kind = "number" if spec.type in _NUMERIC else "text"
        holds = [test(operator, text, wanted, kind) for text in texts]
        return all(holds) if operator == "!=" else any(holds)

    def _texts(self, collection: str, record: dict[str, Any], spec: Field) -> list[str]:
        """A field's values as Pipedrive's filters see them: none when empty, a list's items,
        an address or money by its text, a date or datetime by its day, a boolean as 1 or 0."""
        if spec.name in ("email", "phone"):
            return [str(e.get("value")) for e in record.get(spec.name + "s") or []]
        raw = self._link(collection, record, spec.name)
        if spec.type in ("address", "monetary") and isinstance(raw, dict):
            raw = raw.get("value")
        if isinstance(raw, list):
            return [str(v) for v in raw]
        if raw is None or raw == "":
            return []
        if spec.type == "date":  # a date or time by its day
            return [str(raw)[:10]]
        return [str(int(raw)) if isinstance(raw, bool) else str(raw)]

    def _sorted_v1(
        self, collection: str, rows: list[dict[str, Any]], sort: str
    ) -> list[dict[str, Any]]:
        """``sort=field ASC|DESC, ...``; ties by id."""
        keys = []
        for name, *direction in (part.split() for part in sort.split(",") if part.strip()):
            if self._field(collection, name) is None:
                raise refused(400, f"Invalid sort field: {name}")
            if name == "user_id" and collection in OWNER_IS_USER_ID:
                name = "owner_id"
            keys.append(_by(name, bool(direction) and direction[0].upper() == "DESC"))
        rows = sorted(
            rows, key=lambda r: (r["id"] if isinstance(r["id"], int) else 0, str(r["id"]))
        )
        return order(rows, *keys)

    # ---- v1 routes ----------------------------------------------------------------------------

    async def _v1_list(self, request: web.Request, token: Token) -> web.Response:
        collection = _collection(request)
        rows = self._selected(collection, request)
        if collection == "activities":
            # v1 activities: no sort; the token's user's own unless user_id (0: everyone's)
            wanted = request.query.get("user_id")
            user = token.subject if wanted is None else whole(wanted)
            rows = sorted(rows, key=lambda r: int(r["id"]))
            rows = [r for r in rows if user in (0, r.get("owner_id"))]
        else:
            rows = self._sorted_v1(collection, rows, request.query.get("sort", ""))
        start, limit = _paging(request)
        shown, more = page(rows, start, limit)
        data = [self._v1(collection, r) for r in shown]
        if collection == "leads":  # the leads API pages without the pagination object
            return _ok(data, {"start": start, "limit": limit, "more_items_in_collection": more})
        return _ok(data or None, _pagination(start, limit, len(shown), more))

    # ---- one record, in v1 or v2 (the path says) -------------------------------------------------

    def _addressed(self, request: web.Request, collection: str, v2: bool) -> dict[str, Any]:
        if v2 and not request.match_info["id"].isdigit():
            raise _invalid(["id: Expected number, received string"])
        return self._record(collection, request.match_info["id"])

    def _shown(self, v2: bool, collection: str, record: dict[str, Any]) -> web.Response:
        return _ok((self._v2 if v2 else self._v1)(collection, record))

    async def _get(self, request: web.Request, token: Token) -> web.Response:
        collection, v2 = _collection(request), _is_v2(request)
        return self._shown(v2, collection, self._addressed(request, collection, v2))

    async def _create_route(self, request: web.Request, token: Token) -> web.Response:
        collection, v2 = _collection(request), _is_v2(request)
        self._write_allowed(token)
        body = await _json(request)
        values = body if v2 or collection == "leads" else self._v1_body(collection, body)
        shown = self._shown(v2, collection, self._create(collection, values, token.subject))
        shown.set_status(200 if v2 else 201)
        return shown

    async def _update(self, request: web.Request, token: Token) -> web.Response:
        collection, v2 = _collection(request), _is_v2(request)
        self._write_allowed(token)
        record = self._addressed(request, collection, v2)
        body = await _json(request)
        self._apply(collection, record, body if v2 else self._v1_body(collection, body))
        return self._shown(v2, collection, record)

    async def _delete(self, request: web.Request, token: Token) -> web.Response:
        collection = _collection(request)
        self._write_allowed(token)
        record = self._record(collection, request.match_info["id"], live=True)
        if collection not in V2_OBJECTS:
            del self.records[collection][str(record["id"])]
        else:  # marked as deleted; Pipedrive removes it for good after 30 days
            self.records.change(collection, record, {"is_deleted": True})
        return _ok({"id": record["id"]})

    # ---- v2 routes ----------------------------------------------------------------------------

    async def _v2_list(self, request: web.Request, token: Token) -> web.Response:
        collection = _collection(request)
        query = request.query
        sort_by = query.get("sort_by", "id")
        direction = query.get("sort_direction", "asc")
        problems = []
        if sort_by not in V2_SORTS[collection]:
            problems.append(f"sort_by: Invalid enum value, expected {V2_SORTS[collection]}")
        if direction not in ("asc", "desc"):
            problems.append("sort_direction: Invalid enum value, expected 'asc' | 'desc'")
        limit = whole(query.get("limit", "100"))
        if limit is None or not 1 <= limit <= MAX_LIMIT:
            problems.append(f"limit: Number must be between 1 and {MAX_LIMIT}")
        if problems:
            raise _invalid(problems)
        assert limit is not None
        offset = 0
        if query.get("cursor"):
            state = uncursor(query["cursor"])
            if not isinstance(state, dict) or not isinstance(state.get("offset"), int):
                raise refused(400, "Invalid cursor")
            offset = state["offset"]
        rows = sorted(self._selected(collection, request, v2=True), key=lambda r: int(r["id"]))
        rows = order(rows, _by(sort_by, direction == "desc"))
        shown, more = page(rows, offset, limit)
        following = cursor({"offset": offset + limit}) if more else None
        return _ok([self._v2(collection, r) for r in shown], {"next_cursor": following})

    # ---- filters ------------------------------------------------------------------------------

    def _filter(self, request: web.Request) -> dict[str, Any]:
        found = self.filters.get(whole(request.match_info["id"]) or 0)
        if found is None:
            raise refused(404, "Filter not found")
        return found

    async def _filters(self, request: web.Request, token: Token) -> web.Response:
        kind = request.query.get("type")
        listed = [f for f in self.filters.values() if kind is None or f["type"] == kind]
        return _ok([{k: v for k, v in f.items() if k != "conditions"} for f in listed])

    async def _filter_get(self, request: web.Request, token: Token) -> web.Response:
        return _ok(self._filter(request))

    def _checked_conditions(self, kind: Any, conditions: Any) -> dict[str, Any]:
        collection = next((c for c, spec in OBJECTS.items() if spec[1] == kind), None)
        if collection is None:
            raise refused(400, "Invalid filter type")
        if isinstance(conditions, str):
            try:
                conditions = json.loads(conditions)
            except ValueError:
                raise refused(400, "Invalid conditions JSON") from None
        groups = conditions.get("conditions") if isinstance(conditions, dict) else None
        if (
            not isinstance(groups, list)
            or conditions.get("glue") != "and"
            or len(groups) != 2
            or [g.get("glue") if isinstance(g, dict) else None for g in groups] != ["and", "or"]
        ):
            raise refused(400, "Invalid conditions structure")
        lines = [c for g in groups for c in g.get("conditions") or []]
        if len(lines) > MAX_CONDITIONS:
            raise refused(400, f"A filter may have at most {MAX_CONDITIONS} conditions")
        operators = {"=", "!=", "<", ">", "<=", ">=", "IS NULL", "IS NOT NULL", *_LIKE}
        for line in lines:
            if not isinstance(line, dict) or line.get("operator") not in operators:
                raise refused(400, "Invalid condition operator")
            if line.get("object") != OBJECTS[collection][0]:
                raise refused(400, f"Invalid condition object {line.get('object')!r}")
            spec = self._field_by_id(collection, line.get("field_id"))
            if spec is None:
                raise refused(400, f"Invalid field_id {line.get('field_id')!r}")
            if spec.type == "date" and line["operator"] not in ("IS NULL", "IS NOT NULL"):
                if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", str(line.get("value"))):
                    raise refused(400, "Date values must be in the YYYY-MM-DD format")
        return dict(conditions)

    async def _filter_create(self, request: web.Request, token: Token) -> web.Response:
        body = await _json(request)
        if not isinstance(body.get("name"), str) or not body["name"]:
            raise refused(400, "Name must be given")
        conditions = self._checked_conditions(body.get("type"), body.get("conditions"))
        filter_id = next(self._filter_ids)
        now = _v1_time(_now())
        self.filters[filter_id] = {
            "id": filter_id,
            "name": body["name"],
            "active_flag": True,
            "type": body["type"],
            "temporary_flag": None,
            "user_id": token.subject,
            "add_time": now,
            "update_time": now,
            "visible_to": "7",
            "custom_view_id": None,
            "conditions": conditions,
        }
        return _ok(self.filters[filter_id])

    async def _filter_update(self, request: web.Request, token: Token) -> web.Response:
        found = self._filter(request)
        body = await _json(request)
        if "conditions" in body:
            found["conditions"] = self._checked_conditions(found["type"], body["conditions"])
        if isinstance(body.get("name"), str):
            found["name"] = body["name"]
        return _ok(found)

    async def _filter_delete(self, request: web.Request, token: Token) -> web.Response:
        found = self._filter(request)
        del self.filters[found["id"]]
        return _ok({"id": found["id"]})


# ---- helpers -------------------------------------------------------------------------------


def _shaped(spec: Field, value: Any) -> Any:
    """A v2 custom field value of a monetary (``{"value": 2300, "currency": "EUR"}``),
    multiple options (``[1, 2]``) or address (``{"value": ...}``) field, or `Invalid`."""
    if spec.type == "monetary" and not (
        isinstance(value, dict)
        and conforms(value.get("value"), "number")
        and isinstance(value.get("currency"), str)
        and not set(value) - {"value", "currency"}
    ):
        raise Invalid('Expected object {"value": number, "currency": string}')
    options = range(1, len(spec.options) + 1)
    if spec.type == "set" and not (
        isinstance(value, list) and all(conforms(v, "integer") and v in options for v in value)
    ):
        raise Invalid("Expected array of option ids")
    if spec.type == "address" and not (
        isinstance(value, dict) and isinstance(value.get("value"), str)
    ):
        raise Invalid('Expected object {"value": string, ...}')
    return value


def _contact(text: str) -> dict[str, Any]:
    """An email address or phone number as a person's ``emails``/``phones`` item."""
    return {"value": text, "primary": True, "label": "work"}


async def _json(request: web.Request) -> dict[str, Any]:
    return await json_object(request, lambda message: refused(400, message))


def _ok(data: Any, additional: dict[str, Any] | None = None, status: int = 200) -> web.Response:
    body: dict[str, Any] = {"success": True, "data": data}
    if additional is not None:
        body["additional_data"] = additional
    return web.json_response(body, status=status)


def _number(value: Any) -> bool:
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def _paging(request: web.Request) -> tuple[int, int]:
    start = whole(request.query.get("start", "0"))
    limit = whole(request.query.get("limit", "100"))
    if start is None or limit is None:
        raise refused(400, "start and limit must be whole numbers")
    return start, min(max(limit, 1), MAX_LIMIT)


def _pagination(start: int, limit: int, count: int, more: bool) -> dict[str, Any]:
    pagination = {"start": start, "limit": limit, "more_items_in_collection": more}
    return {"pagination": pagination | ({"next_start": start + count} if more else {})}


def _is_v2(request: web.Request) -> bool:
    return request.path.startswith("/api/v2/")


def _collection(request: web.Request) -> str:
    """The collection a route's path names (``persons``, or its fields endpoint's name)."""
    named = request.match_info["collection"]
    return next((c for c, spec in OBJECTS.items() if named in (c, spec[2])), named)


def _by(name: str, descending: bool) -> Sort:
    """A list's order by a field, as Pipedrive's: empty values ("" too) last either way, an
    address or money by its text."""

    def value(row: dict[str, Any]) -> Any:
        found = row.get(name)
        found = str(found.get("value") or "") if isinstance(found, dict) else found
        return None if found == "" else found

    return Sort(value, descending, nulls_last=True)


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point Pipedrive at a simulator running at ``base_url``
    (the simulator plays both the company domain and oauth.pipedrive.com)."""
    oauth = {"authorize_url": "/oauth/authorize", "token_url": "/oauth/token"}
    return overrides("Pipedrive", base_url, oauth)


def seed_pipedrive(sim: PipedriveSimulator) -> None:
    """A small, believable Pipedrive company (crmsim.seed's business): organizations with their
    people, deals, activities, leads and notes."""
    tier = sim.add_custom_field("persons", "Loyalty tier", "enum", ("Gold", "Silver", "Bronze"))
    orgs = [
        sim.insert("organizations", {"name": name, "address": {"value": f"{city}, {country}"}})
        for name, _, _, city, country in ACCOUNTS
    ]
    people = []
    for n, (first, last, title, org) in enumerate(CONTACTS[:5]):
        email = {"value": f"{first}.{last}@example.com".lower(), "primary": True, "label": "work"}
        phone = {"value": f"+1 206 555 01{n:02d}", "primary": True, "label": "work"}
        person = {"name": f"{first} {last}", "job_title": title, "org_id": int(orgs[org])}
        person |= {"emails": [email], "phones": [phone], "custom_fields": {tier: n % 3 + 1}}
        people.append(sim.insert("persons", person))
    deals = []
    for n, (title, value) in enumerate(
        (("Northwind renewal", 12000), ("Contoso pilot", 45000), ("Fabrikam tractors", 8000))
    ):
        deal = {"title": title, "value": value, "org_id": int(orgs[n])}
        deal |= {"person_id": int(people[(0, 2, 4)[n]]), "expected_close_date": f"2027-0{n + 3}-15"}
        deals.append(sim.insert("deals", deal))
    for n, (subject, kind) in enumerate(
        (("Call about renewal", "call"), ("Pilot kick-off", "meeting"), ("Send quote", "task"))
    ):
        activity = {"subject": subject, "type": kind, "due_date": "2027-02-01"}
        sim.insert("activities", {**activity, "deal_id": int(deals[n])})
    for (_, _, company, _), contact in zip(LEADS[:2], people[3:], strict=True):
        sim.insert("leads", {"title": f"{company} lead", "person_id": int(contact)})
    sim.insert("notes", {"content": "Prefers email to calls.", "person_id": int(people[0])})
    sim.insert("notes", {"content": "Budget approved for Q2.", "deal_id": int(deals[1])})
