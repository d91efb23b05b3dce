"""A Keap application (formerly Infusionsoft): the subset of Keap's REST API v2
(https://api.infusionsoft.com/crm/rest/v2/) that crmgate and Keap's official Python SDK
(``keap-core-v2-sdk``) use, as developer.keap.com documents it.

- Auth: an OAuth access token (``Authorization: Bearer``, 24 hours) or a personal access token /
  service account key (``X-Keap-API-Key``); else 401 with the gateway's (Apigee) ``fault`` body.
  OAuth 2 (``/app/oauth/authorize``, ``/token``): the authorization code grant and the refresh
  token grant; a refresh token is single-use: each refresh answers a new one and the old one is
  gone (``invalid_grant`` when reused).
- Objects: ``contacts``, ``companies``, ``opportunities``, ``tasks`` (POST, GET, PATCH, DELETE),
  ``notes`` (under their contact: ``/contacts/{contact_id}/notes[/{id}]``, and all of them at
  ``/notes``; every write names its ``user_id``) and ``users`` (read; ``email_addresses`` only,
  100 a page). Lists take ``page_size`` (at most 1000), ``page_token``, ``filter``
  (``field==value`` terms joined by ``;``, a trailing ``*`` for a prefix, ``>``/``<``/``>=``/
  ``<=`` where documented), ``order_by`` (``field [asc|desc]``) and answer ``{"<object>": [...],
  "next_page_token": ...}`` (empty on the last page). A contact shows its company as
  ``company: {id, company_name}``; an opportunity its ``contact``, ``stage`` and ``user``.
- Custom fields: ``/<object>/model`` lists them (``custom_fields``); a record shows them as
  ``custom_fields: [{id, content}]`` and takes them so.
- Errors: ``{"code": <status>, "message": ..., "status": "NOT_FOUND", "details": []}``.
- Rate limits: ``burst`` calls per credential per minute; every answer carries the
  ``x-keap-product-throttle-*`` and ``x-keap-product-quota-*`` headers; beyond, 429 with the
  gateway's ``fault`` body and Retry-After.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections import deque
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from crmsim.app import Route, Simulator, UserTokens, cursor, one_of, uncursor, whole
from crmsim.guard import Answer, Guard, RateWindow, Verdict, bearer, header, json_object
from crmsim.oauth import AuthorizationServer, Issued
from crmsim.records import Sort, Store, compare, order, page
from crmsim.tokens import AccessToken, TokenStore

Token = AccessToken[str]  # its subject: the user id
API = "/crm/rest/v2/"
TABLES = ("contacts", "companies", "opportunities", "tasks")  # each at /<table>/{id}
MAX_PAGE = {"users": 100}  # else 1000
WINDOW = 60  # seconds of the throttle window
# What each list filters by: the filter's name -> the row's column ("*": takes a prefix).
FILTERS: dict[str, dict[str, str]] = {
    "contacts": {
        "family_name": "family_name*",
        "given_name": "given_name*",
        "email": "email*",
        "company_id": "company_id",
        "contact_id": "id",
    },
    "companies": {"company_name": "company_name", "name": "company_name*", "company_id": "id"},
    "opportunities": {
        "contact_id": "contact_id",
        "stage_id": "stage_id",
        "user_id": "user_id",
        "opportunity_title": "opportunity_title*",
        "opportunity_id": "id",
    },
    "tasks": {
        "contact_id": "contact_id",
        "user_id": "assigned_to_user_id",
        "opportunity_id": "opportunity_id",
        "title": "title*",
        "id": "id",
    },
    "notes": {
        "id": "id",
        "title": "title*",
        "contact_id": "contact_id",
        "assigned_to_user_id": "user_id",
    },
    "users": {"email": "email", "given_name": "given_name"},
}
ORDER_BY: dict[str, dict[str, str]] = {
    "contacts": {
        "id": "id",
        "create_time": "create_time",
        "email": "email",
        "update_time": "update_time",
    },
    "companies": {
        "id": "id",
        "create_time": "create_time",
        "name": "company_name",
        "email": "email",
    },
    "opportunities": {
        "next_action_time": "next_action_time",
        "opportunity_title": "opportunity_title",
        "created_time": "created_time",
        "update_time": "last_updated_time",
    },
    "tasks": {
        "id": "id",
        "create_time": "create_time",
        "due_time": "due_time",
        "update_time": "modification_time",
    },
    "notes": {"id": "id", "create_time": "create_time", "update_time": "update_time"},
    "users": {"create_time": "create_time", "email": "email", "name": "family_name"},
}
# the time columns each object shows (the store keeps them all)
TIMES = {
    "opportunities": ("created_time", "last_updated_time"),
    "tasks": ("create_time", "modification_time"),
}
# the writable fields of each object (their JSON kinds: text unless KINDS says)
WRITABLE = {
    "contacts": "given_name family_name middle_name job_title website email_addresses"
    " phone_numbers company owner_id custom_fields",
    "companies": "company_name notes website email_address phone_number custom_fields",
    "opportunities": "opportunity_title opportunity_notes projected_revenue_low"
    " projected_revenue_high estimated_close_time contact_id stage_id user_id custom_fields",
    "tasks": "title description priority due_time completed contact_id opportunity_id"
    " assigned_to_user_id custom_fields",
    "notes": "title text type user_id is_pinned custom_fields contact_id",  # (moves it)
}
REQUIRED = {
    "opportunities": ("opportunity_title", "contact_id", "stage_id"),
    "tasks": ("title", "assigned_to_user_id"),  # (the SDK's CreateTaskRequest requires it)
    "notes": ("user_id",),  # on every write, PATCH included
}
KINDS: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(("email_addresses", "phone_numbers", "custom_fields"), list),
    **dict.fromkeys(("company", "email_address", "phone_number"), dict),
    **dict.fromkeys(("projected_revenue_low", "projected_revenue_high"), (int, float)),
    **dict.fromkeys(("completed", "is_pinned"), bool),
}
STAGES = {"1": "New Opportunity", "2": "Proposal", "3": "Won"}
_TERM = re.compile(r"^([A-Za-z_]+)(==|!=|>=|<=|>|<)(.*)$", re.S)
_STATUS = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND"}


def refused(status: int, message: str) -> Answer:
    """Keap's error answer (Google's API style)."""
    body = {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}
    return Answer(status, {**body, "details": []})


def fault(status: int, text: str, code: str) -> web.Response:
    """The API gateway's own refusals (credentials, throttles): an Apigee ``fault``."""
    body = {"fault": {"faultstring": text, "detail": {"errorcode": code}}}
    return web.json_response(body, status=status)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Guard(Guard[str]):
    """OAuth tokens (Bearer) and PATs / service account keys (X-Keap-API-Key); ``burst`` calls
    per credential per minute, with Keap's throttle and quota headers on every answer."""

    def __init__(self, sim: KeapSimulator) -> None:
        window = RateWindow(lambda: sim.burst, WINDOW)
        super().__init__(sim.tokens, [bearer(), header("X-Keap-API-Key")], window, sim.faults)
        self.sim = sim

    def unauthorized(self, request: web.Request, token: Token | None) -> web.Response:
        code = "keymanagement.service.invalid_access_token"
        text = "Access Token expired" if token is not None else "Invalid Access Token"
        return fault(401, text, code)

    def limited(self, verdict: Verdict) -> web.Response:
        text = f"Rate limit quota violation. Quota limit exceeded. Identifier : {self.sim.tenant}"
        response = fault(429, text, "policies.ratelimit.QuotaViolation")
        response.headers["Retry-After"] = str(verdict.retry_after)
        return response

    def rate_headers(self, verdict: Verdict) -> dict[str, str]:
        self.sim.quota_used += 1
        return {
            "x-keap-product-throttle-limit": str(verdict.limit),
            "x-keap-product-throttle-time-unit": "minute",
            "x-keap-product-throttle-interval": "1",
            "x-keap-product-throttle-available": str(verdict.remaining),
            "x-keap-product-throttle-used": str(verdict.limit - verdict.remaining),
            "x-keap-product-quota-limit": str(self.sim.quota),
            "x-keap-product-quota-time-unit": "day",
            "x-keap-product-quota-interval": "1",
            "x-keap-product-quota-available": str(max(0, self.sim.quota - self.sim.quota_used)),
            "x-keap-product-quota-used": str(self.sim.quota_used),
            "x-keap-tenant-id": self.sim.tenant,
        }


class _OAuth(AuthorizationServer[str]):
    """Keap's OAuth: the client in the form (or HTTP Basic, which its docs show for refresh),
    single-use refresh tokens, 24-hour access tokens, the tenant in the scope."""

    client_authentication = "either"
    refresh_rotation = "rotate"

    def __init__(self, sim: KeapSimulator) -> None:
        super().__init__(sim.tokens, lambda: sim.admin)
        self.sim = sim

    def token_answer(self, issued: Issued[str], request: web.Request) -> dict[str, Any]:
        answer = super().token_answer(issued, request)
        return {**answer, "token_type": "bearer", "scope": f"full|{self.sim.tenant}"}


class KeapSimulator(UserTokens[str], Simulator[str]):
    def __init__(self, tenant: str = "ab123.infusionsoft.com", burst: int = 1500) -> None:
        super().__init__()
        self.tenant, self.burst = tenant, burst
        self.quota, self.quota_used = 150_000, 0
        self.tokens: TokenStore[str] = TokenStore(
            access_format=lambda: "KeapAT-" + secrets.token_urlsafe(24),
            key_format=lambda: "KeapAK-" + secrets.token_urlsafe(24),
            access_lifetime=86_400.0,  # 24 hours
        )
        ids = itertools.count(1)
        self.store = Store(
            (*TABLES, "notes", "users"),
            key=lambda table: "id",
            new_id=lambda table: str(next(ids)),
            now=_now,
            created=("create_time", "created_time"),
            modified=("update_time", "last_updated_time", "modification_time"),
            derive=self._derive,
        )
        self.custom_fields: dict[str, list[dict[str, Any]]] = {t: [] for t in (*TABLES, "notes")}
        self.auth: deque[tuple[str, str, str]] = deque(maxlen=100_000)
        self.filters: deque[str] = deque(maxlen=100_000)  # each list call's filter=, for tests
        self.guard = _Guard(self)
        self.oauth = _OAuth(self)
        self.admin = self.add_user("Ada", "Admin", "ada@acme.example")

    # ---- state ------------------------------------------------------------------------------

    def add_user(self, given: str, family: str, email: str) -> str:
        row = {"given_name": given, "family_name": family, "email": email, "status": "ACTIVE"}
        # the user's global id (its Keap identity, across applications) is not its id here
        row["global_user_id"] = str(90_000_000 + len(self.store["users"]))
        return str(self.store.insert("users", row)["id"])

    add_api_key = UserTokens.issue_key

    def add_custom_field(self, table: str, label: str, kind: str = "TEXT") -> str:
        field_id = str(len(self.custom_fields[table]) + 1)
        name = re.sub(r"\W", "", label) + field_id
        self.custom_fields[table].append(
            {"id": field_id, "label": label, "field_name": name, "field_type": kind, "options": []}
        )
        return f"custom.{field_id}"

    def insert(self, table: str, values: dict[str, Any]) -> str:
        """A record made through the same checks as the API's."""
        return str(self.store.insert(table, self._check(table, values, creating=True))["id"])

    def seen(self, request: web.Request) -> None:
        if "filter" in request.query:
            self.filters.append(request.query["filter"])
        how = "bearer" if request.headers.get("Authorization") else "none"
        self.auth.append(
            (request.method, request.path, "key" if "X-Keap-API-Key" in request.headers else how)
        )

    # ---- HTTP -------------------------------------------------------------------------------

    def routes(self) -> Iterable[Route]:
        table = API + one_of("table", TABLES)
        notes = API + "contacts/{contact_id}/notes"  # v2's notes live under their contact
        return [
            Route("GET", "/app/oauth/authorize", self.oauth.authorize, guarded=False),
            Route("POST", "/token", self.oauth.token, guarded=False),
            Route("GET", API + "oauth/connect/userinfo", self._userinfo),
            Route("GET", API + "users", self._list("users")),
            Route("GET", API + "users/{id}", self._get_user),
            Route("GET", API + "opportunities/stages", self._stages),
            Route("GET", API + "notes", self._list("notes")),
            Route("GET", API + one_of("table", (*TABLES, "notes")) + "/model", self._model),
            Route("GET", notes, self._list("notes")),
            Route("POST", notes, self._create),
            Route("GET", notes + "/{id}", self._get),
            Route("PATCH", notes + "/{id}", self._update),
            Route("DELETE", notes + "/{id}", self._delete),
            Route("GET", table, self._list()),
            Route("POST", table, self._create),
            Route("GET", table + "/{id}", self._get),
            Route("PATCH", table + "/{id}", self._update),
            Route("DELETE", table + "/{id}", self._delete),
        ]

    async def _userinfo(self, request: web.Request, token: Token) -> web.Response:
        user = self.store["users"][token.subject]
        info = {k: user[k] for k in ("given_name", "family_name", "email")}
        identity = user["global_user_id"]  # userinfo names the global user, not the tenant's
        info |= {"id": identity, "sub": identity, "keap_id": user["email"], "is_admin": True}
        return web.json_response({**info, "tenant_id": self.tenant})

    async def _get_user(self, request: web.Request, token: Token) -> web.Response:
        return web.json_response(self._shown("users", self._row("users", request.match_info["id"])))

    def _target(self, request: web.Request) -> tuple[str, str]:
        """The table of a record route, and the contact its path names (notes' only)."""
        contact = request.match_info.get("contact_id", "")
        if contact:
            self._row("contacts", contact)
            return "notes", contact
        return request.match_info["table"], ""

    async def _stages(self, request: web.Request, token: Token) -> web.Response:
        stages = [{"id": i, "name": n} for i, n in STAGES.items()]
        return web.json_response({"stages": stages, "next_page_token": ""})

    async def _model(self, request: web.Request, token: Token) -> web.Response:
        table = request.match_info["table"]
        records = {
            "contacts": "CONTACT",
            "companies": "COMPANY",
            "opportunities": "OPPORTUNITY",
            "notes": "NOTE",
        }
        fields = [
            {**f, "record_type": records.get(table, "TASK_NOTE_APPOINTMENT")}
            for f in self.custom_fields[table]
        ]
        return web.json_response({"custom_fields": fields, "optional_properties": []})

    # ---- records ----------------------------------------------------------------------------

    def _derive(self, table: str, row: dict[str, Any]) -> None:
        if table in ("contacts", "users"):
            emails = row.get("email_addresses") or []
            row["email"] = row.get("email") or next((e.get("email") for e in emails), None)
        if table == "contacts":
            company = row.get("company") or {}
            row["company_id"] = company.get("id")
        if table == "tasks":
            row.setdefault("completed", False)

    def _row(self, table: str, record_id: str, contact: str = "") -> dict[str, Any]:
        row = self.store[table].get(record_id)
        if row is None or (contact and row.get("contact_id") != contact):
            noun = table.removesuffix("s").removesuffix("ie") + (
                "y" if table.endswith("ies") else ""
            )
            raise refused(404, f"{noun.capitalize()} with ID {record_id[:40]} not found")
        return row

    def _check(self, table: str, values: dict[str, Any], creating: bool) -> dict[str, Any]:
        """The values as stored, or Keap's 400 naming the first wrong field."""
        writable, clean = WRITABLE[table].split(), dict[str, Any]()
        for key, value in values.items():
            if key not in writable:
                continue  # read-only and unknown fields are ignored
            wanted = KINDS.get(key, str)
            if value is not None and (
                not isinstance(value, wanted) or isinstance(value, bool) != (wanted is bool)
            ):
                raise refused(400, f"Invalid value for field '{key}'")
            clean[key] = value
        for reference, target in (
            ("contact_id", "contacts"),
            ("opportunity_id", "opportunities"),
            ("user_id", "users"),
            ("assigned_to_user_id", "users"),
        ):
            if clean.get(reference) and str(clean[reference]) not in self.store[target]:
                raise refused(400, f"Invalid {reference}: {str(clean[reference])[:40]}")
        company = clean.get("company")
        if isinstance(company, dict) and company.get("id"):
            found = self.store["companies"].get(str(company["id"]))
            if found is None:
                raise refused(400, f"Invalid company id: {str(company['id'])[:40]}")
            clean["company"] = {"id": found["id"], "company_name": found.get("company_name")}
        if clean.get("stage_id") and str(clean["stage_id"]) not in STAGES:
            raise refused(400, "Invalid stage_id")
        known = {f["id"] for f in self.custom_fields.get(table, ())}
        for item in clean.get("custom_fields") or ():
            if not isinstance(item, dict) or str(item.get("id")) not in known:
                raise refused(400, f"Invalid custom field: {str(item)[:40]}")
        for key in REQUIRED.get(table, ()) if creating else ():
            if not clean.get(key):
                raise refused(400, f"Required field '{key}' is missing")
        if (
            table == "contacts"
            and creating
            and not (
                clean.get("given_name") or clean.get("family_name") or clean.get("email_addresses")
            )
        ):
            raise refused(400, "A contact needs a name or an email address")
        if table == "notes" and creating and not (clean.get("title") or clean.get("type")):
            raise refused(400, "A value for either title or type is required")
        return clean

    def _shown(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        times = TIMES.get(table, ("create_time", "update_time"))
        shown = {
            k: v
            for k, v in row.items()
            if (k in times or not k.endswith("_time") or k in WRITABLE.get(table, "").split())
            and (not k.endswith("_id") or table != "opportunities")
        }
        users = self.store["users"]
        if table == "notes":
            user = users.get(str(shown.pop("user_id", None)), {})
            shown["assigned_to_user"] = {
                "id": user.get("id"),
                "given_name": user.get("given_name"),
                "family_name": user.get("family_name"),
                "email_address": user.get("email"),
            }
        if table == "opportunities":
            contact = self.store["contacts"].get(str(row.get("contact_id")), {})
            shown["contact"] = {
                "id": row.get("contact_id"),
                "first_name": contact.get("given_name"),
                "last_name": contact.get("family_name"),
            }
            shown["stage"] = {
                "id": row.get("stage_id"),
                "name": STAGES.get(str(row.get("stage_id"))),
            }
            if row.get("user_id"):
                user = users.get(str(row["user_id"]), {})
                shown["user"] = {
                    "id": row["user_id"],
                    "first_name": user.get("given_name"),
                    "last_name": user.get("family_name"),
                }
        if table in ("contacts", "users"):
            shown.pop("company_id", None)
            shown.pop("email", None)  # v2 shows email_addresses only
            if table == "users":
                shown["email_addresses"] = [{"email": row["email"], "field": "EMAIL1"}]
        return shown

    def _list(self, fixed: str = "") -> Any:
        async def handler(request: web.Request, token: Token) -> web.Response:
            table = fixed or request.match_info["table"]
            contact = request.match_info.get("contact_id", "")  # a contact's notes
            if contact:
                self._row("contacts", contact)
            rows = [
                r
                for r in self.store[table].values()
                if self._matches(table, r, request.query.get("filter", ""))
                and (not contact or r.get("contact_id") == contact)
            ]
            ordering = request.query.get("order_by", "").split()
            if ordering:
                column = ORDER_BY[table].get(ordering[0])
                direction = ordering[1].lower() if len(ordering) > 1 else "asc"
                if column is None or direction not in ("asc", "desc") or len(ordering) > 2:
                    raise refused(400, f"Invalid order_by: {' '.join(ordering)[:60]}")
                kind = "number" if column == "id" else None
                by = Sort(column, direction == "desc", kind=kind)
                rows = order(rows, by, Sort("id", kind="number"))
            else:
                rows = order(rows, Sort("id", kind="number"))
            most = MAX_PAGE.get(table, 1000)
            size = whole(request.query.get("page_size"), most)
            if size is None or not 0 < size <= most:
                raise refused(400, f"page_size must be between 1 and {most}")
            signature = [request.query.get("filter", ""), request.query.get("order_by", "")]
            start = 0
            if request.query.get("page_token"):
                state = uncursor(request.query["page_token"])
                if not isinstance(state, list) or state[:2] != signature:
                    raise refused(400, "Invalid page_token")
                start = int(state[2])
            chosen, more = page(rows, start, size)
            following = cursor([*signature, start + size]) if more else ""
            shown = [self._shown(table, r) for r in chosen]
            return web.json_response({table: shown, "next_page_token": following})

        return handler

    def _matches(self, table: str, row: dict[str, Any], expression: str) -> bool:
        for term in filter(None, expression.split(";")):
            found = _TERM.match(term)
            if found is None:
                raise refused(400, f"Invalid filter: {term[:60]}")
            name, op, wanted = found.groups()
            column = FILTERS[table].get(name)
            if column is None:
                raise refused(400, f"Invalid filter field: {name[:40]}")
            prefix = column.endswith("*")
            column = column.rstrip("*")
            if op != "==" and column != "id":
                raise refused(400, f"Filter field {name} supports == only")
            have = row.get(column)
            if column == "id":
                if not wanted.isdigit():
                    raise refused(400, f"Invalid filter value for {name}")
                held = compare(int(str(have)), int(wanted), "number")
                test = {
                    "==": held == 0,
                    "!=": held != 0,
                    ">": held > 0,
                    "<": held < 0,
                    ">=": held >= 0,
                    "<=": held <= 0,
                }
                if not test[op]:
                    return False
            elif prefix and wanted.endswith("*"):
                if not str(have or "").casefold().startswith(wanted[:-1].casefold()):
                    return False
            elif (table, column) == ("notes", "title"):  # a bare title matches anywhere in it
                if wanted.casefold() not in str(have or "").casefold():
                    return False
            elif str(have if have is not None else "").casefold() != wanted.casefold():
                return False
        return True

    async def _get(self, request: web.Request, token: Token) -> web.Response:
        table, contact = self._target(request)
        row = self._row(table, request.match_info["id"], contact)
        return web.json_response(self._shown(table, row))

    async def _create(self, request: web.Request, token: Token) -> web.Response:
        table, contact = self._target(request)
        values = await json_object(request, lambda m: refused(400, m))
        clean = self._check(table, values, creating=True)
        row = self.store.insert(table, {**clean, "contact_id": contact} if contact else clean)
        return web.json_response(self._shown(table, row), status=201)

    async def _update(self, request: web.Request, token: Token) -> web.Response:
        table, contact = self._target(request)
        row = self._row(table, request.match_info["id"], contact)
        values = await json_object(request, lambda m: refused(400, m))
        changes = self._check(table, values, creating=False)
        for key in REQUIRED.get(table, ()):
            if (key in changes or table == "notes") and not changes.get(key):
                raise refused(400, f"Required field '{key}' is missing")
        self.store.change(table, row, changes)
        return web.json_response(self._shown(table, row))

    async def _delete(self, request: web.Request, token: Token) -> web.Response:
        table, contact = self._target(request)
        row = self._row(table, request.match_info["id"], contact)
        del self.store[table][row["id"]]
        return web.Response(status=204)


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point Keap at a simulator running at ``base_url`` (it
    plays both api.infusionsoft.com and accounts.infusionsoft.com's OAuth pages)."""
    oauth = {"authorize_url": f"{base_url}/app/oauth/authorize", "token_url": f"{base_url}/token"}
    host = base_url.removeprefix("https://")
    return {"Infusionsoft": {"api_url": base_url, "instance_hosts": [host], "oauth": oauth}}


def seed_keap(sim: KeapSimulator) -> None:
    """A small, believable Keap application: companies with their contacts, opportunities and
    tasks."""
    sim.add_custom_field("contacts", "Shoe size", "WHOLE_NUMBER")
    for n, (company, given, family, title) in enumerate(
        (
            ("Northwind Traders", "Nancy", "Davolio", "Sales Representative"),
            ("Contoso Pharmaceuticals", "Janet", "Leverling", "Head of Research"),
            ("Fabrikam Farms", "Steven", "Buchanan", "Farm Manager"),
        )
    ):
        firm = sim.insert(
            "companies",
            {"company_name": company, "website": f"https://{company.split()[0].lower()}.example"},
        )
        email = f"{given}.{family}@example.com".lower()
        contact = sim.insert(
            "contacts",
            {
                "given_name": given,
                "family_name": family,
                "job_title": title,
                "company": {"id": firm},
                "email_addresses": [{"email": email, "field": "EMAIL1"}],
                "phone_numbers": [{"number": f"+1 206 555 01{n:02d}", "field": "PHONE1"}],
            },
        )
        deal = {
            "opportunity_title": f"{company.split()[0]} deal",
            "contact_id": contact,
            "stage_id": "1",
        }
        opportunity = sim.insert(
            "opportunities", {**deal, "projected_revenue_high": 12_000.0 * (n + 1)}
        )
        note = {"title": "First call", "text": f"{given} wants a quote", "type": "Call"}
        sim.store.insert("notes", {**note, "user_id": sim.admin, "contact_id": contact})
        sim.insert(
            "tasks",
            {
                "title": f"Follow up with {given}",
                "assigned_to_user_id": sim.admin,
                "contact_id": contact,
                "opportunity_id": opportunity,
            },
        )
