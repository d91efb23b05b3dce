"""A Kommo (amoCRM) account: the subset of REST API v4 (https://{subdomain}.kommo.com/api/v4/)
that crmgate uses, as developers.kommo.com documents it.

- Auth: ``Authorization: Bearer`` with an OAuth access token or a long-lived token of a private
  integration; else 401 problem+json. OAuth: ``/oauth`` on www.kommo.com (the user picks the
  account; the callback adds ``referer``, the account's host) and each account's
  ``/oauth2/access_token`` (form or JSON), access tokens a day, the refresh token rotated on
  every use (the old one refused after) and a refresh repeating the integration's
  ``redirect_uri``.
- Entities: ``contacts``, ``companies``, ``leads``, ``tasks`` (GET list and one, POST and PATCH
  of an array, PATCH of one; no DELETE: API v4 has none for them) and the notes of each of
  leads, contacts and companies, the same methods under ``/api/v4/<type>/notes`` and a list of
  one parent's at ``/api/v4/<type>/<id>/notes`` (one id space; a note is found under its own
  parent's type only). A contact's ``name`` is its ``first_name`` and ``last_name`` joined.
  Lists are HAL: ``{"_page", "_links": {"self", "next"}, "_embedded": {"<entity>": [...]}}``,
  ``page`` and ``limit`` (at most 250), ``filter[id]``, ``filter[name]``,
  ``filter[created_at|updated_at][from|to]`` (Unix seconds), tasks
  ``filter[responsible_user_id]``, ``order[id|created_at|updated_at]=asc|desc``, ``query`` (a
  search of the filled fields). An empty list, and a record not found, is 204 with no body.
- Custom fields: ``/api/v4/{contacts|companies|leads}/custom_fields``; a record carries them in
  ``custom_fields_values: [{"field_id", "values": [{"value"}]}]``.
- ``/api/v4/account`` (with ``current_user_id``), ``/api/v4/users`` (read only here).
- Errors: problem+json ``{"title", "type", "status", "detail"}``, a validation failure 400 with
  ``validation-errors: [{"request_id", "errors": [{"code", "path", "detail"}]}]``.
- Rate limit: 7 calls a second per account; beyond, 429 (problem+json) with Retry-After.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from crmsim.app import Route, Simulator, UserTokens, one_of, overrides
from crmsim.guard import Answer, Guard, RateWindow, Verdict, bearer, json_body
from crmsim.oauth import AuthorizationServer, OAuthError, Pending
from crmsim.records import Sort, Store, order
from crmsim.tokens import AccessToken, Client, TokenStore

Token = AccessToken[int]  # its subject: the user id
NOTES = "notes"  # one table; each parent type serves its own at /api/v4/<type>/notes
NOTED = ("leads", "contacts", "companies")  # the types with notes
ENTITIES = ("contacts", "companies", "leads", "tasks", NOTES)
CUSTOMIZABLE = ("contacts", "companies", "leads")
MAX_LIMIT = 250
# the fields a write takes, and their JSON kinds (text unless said)
WRITABLE = {
    "contacts": ("name", "first_name", "last_name", "responsible_user_id", "_embedded"),
    "companies": ("name", "responsible_user_id", "_embedded"),
    "leads": (
        "name",
        "price",
        "status_id",
        "pipeline_id",
        "closed_at",
        "responsible_user_id",
        "_embedded",
    ),
    NOTES: ("entity_id", "note_type", "params", "responsible_user_id"),
    "tasks": (
        "text",
        "complete_till",
        "entity_id",
        "entity_type",
        "responsible_user_id",
        "is_completed",
        "task_type_id",
    ),
}
INTEGERS = {
    "price",
    "status_id",
    "pipeline_id",
    "closed_at",
    "responsible_user_id",
    "complete_till",
    "entity_id",
    "task_type_id",
}
REQUIRED = {"tasks": ("text", "complete_till"), NOTES: ("entity_id", "note_type", "params")}
NOTE_TYPES = ("common", "call_in", "call_out", "service_message", "extended_service_message")
# what each list sorts by and takes date ranges of (developers.kommo.com's list methods)
ORDERS = {"tasks": ("id", "created_at", "complete_till"), NOTES: ("id", "updated_at")}
RANGES = {
    "tasks": ("updated_at",),
    NOTES: ("updated_at",),
    "leads": ("created_at", "updated_at", "closed_at"),
}
PROBLEM = "application/problem+json"


class Problem(Answer):
    """An RFC 7807 problem answer, as Kommo's errors are (``application/problem+json``)."""

    def response(self) -> web.Response:
        return web.json_response(
            self.body, status=self.status, headers=self.headers, content_type=PROBLEM
        )


def problem(status: int, title: str, detail: str, **more: Any) -> Problem:
    body = {
        "title": title,
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
        **more,
    }
    return Problem(status, body)


def invalid(request_id: int, path: str, detail: str, code: str = "InvalidType") -> Problem:
    errors = [
        {"request_id": str(request_id), "errors": [{"code": code, "path": path, "detail": detail}]}
    ]
    return problem(400, "Bad Request", "Request validation failed", **{"validation-errors": errors})


class _Guard(Guard[int]):
    """Bearer tokens; 7 calls a second per account, beyond them 429."""

    def __init__(self, sim: AmoSimulator) -> None:
        window = RateWindow(lambda: sim.per_second, 1)
        super().__init__(sim.tokens, [bearer()], window, sim.faults)

    def unauthorized(self, request: web.Request, token: Token | None) -> web.Response:
        return problem(401, "Unauthorized", "Unauthorized").response()

    def limited(self, verdict: Verdict) -> web.Response:
        refusal = problem(429, "Too Many Requests", "Too Many Requests")
        refusal.headers["Retry-After"] = str(verdict.retry_after)
        return refusal.response()

    def rate_key(self, text: str, token: Token) -> Any:
        return "account"  # the limit is the account's, whatever the token


class _OAuth(AuthorizationServer[int]):
    """The account's token endpoint; the callback names the account (``referer``)."""

    refresh_rotation = "rotate"

    def __init__(self, sim: AmoSimulator) -> None:
        super().__init__(sim.tokens, lambda: sim.admin)
        self.sim = sim

    def redirect_params(self, pending: Pending) -> dict[str, str]:
        host = self.sim.referer or self.sim.base_url.removeprefix("https://")
        return {"referer": host, "from_widget": "0"}

    def check_token_request(
        self, grant_type: str, params: Mapping[str, str], client: Client
    ) -> None:
        """A refresh repeats the integration's redirect URI, as the code exchange does
        (developers.kommo.com/reference/get-token); without it, or with another, refused."""
        given = params.get("redirect_uri", "")
        if grant_type == "refresh_token" and not (given and client.allows_redirect(given)):
            raise OAuthError("invalid_request", "Check the `redirect_uri` parameter", "redirect")


class AmoSimulator(Simulator[int], UserTokens[int]):
    def __init__(self, name: str = "Acme (sim)", per_second: int = 7) -> None:
        super().__init__()
        self.account_id = 30_000_000 + secrets.randbelow(1_000_000)
        self.name = name
        self.per_second = per_second
        self.referer = ""  # the account host OAuth callbacks name (a test's other): this one
        self.next_id = 1000
        self.users: dict[int, dict[str, Any]] = {}
        self.custom_fields: dict[str, list[dict[str, Any]]] = {t: [] for t in CUSTOMIZABLE}
        self.tokens = TokenStore(
            access_format=lambda: "eyJ0eXAiOiJKV1Qi." + secrets.token_urlsafe(40),
            key_format=lambda: "eyJ0eXAiOiJKV1Qi.lt." + secrets.token_urlsafe(40),
            refresh_format=lambda subject: "def50200" + secrets.token_hex(40),
            access_lifetime=86_400.0,
        )
        self.store = Store(
            ENTITIES,
            key=lambda table: "id",
            new_id=self._new_id,
            now=lambda: str(int(time.time())),
            derive=self._derive,
        )
        self.guard = _Guard(self)
        self.oauth = _OAuth(self)
        self.admin = self.add_user("Ada Admin", "ada@acme.example")

    # ---- state ------------------------------------------------------------------------------

    def _new_id(self, table: str) -> int:
        self.next_id += 1
        return self.next_id

    def add_user(self, name: str, email: str) -> int:
        user_id = self._new_id("users")
        self.users[user_id] = {
            "id": user_id,
            "name": name,
            "email": email,
            "lang": "en",
            "rights": {"is_admin": not self.users, "is_active": True},
        }
        return user_id

    def add_api_key(self) -> str:
        return self.issue_key()

    def add_custom_field(self, entity: str, name: str, kind: str = "text") -> int:
        field_id = self._new_id("custom_fields")
        self.custom_fields[entity].append(
            {
                "id": field_id,
                "name": name,
                "type": kind,
                "entity_type": entity,
                "is_api_only": False,
            }
        )
        return field_id

    def insert(self, table: str, values: dict[str, Any]) -> str:
        """A record made through the same checks as the API's (notes: ``<type>/notes``)."""
        parent, _, notes = table.partition("/")
        if notes:
            return str(self._create(notes, values, 0, self.admin, parent)["id"])
        return str(self._create(table, values, 0, self.admin)["id"])

    def _derive(self, table: str, row: dict[str, Any]) -> None:
        row["account_id"] = self.account_id
        row.setdefault("responsible_user_id", self.admin)
        row["created_at"] = int(row.get("created_at") or time.time())
        row["updated_at"] = int(time.time())
        if table == "leads":
            row.setdefault("price", 0)
            row.setdefault("status_id", 142 if row.get("closed_at") else 7_000_001)
            row.setdefault("pipeline_id", 7_000_000)
        if table == "tasks":
            row.setdefault("is_completed", False)
            row.setdefault("task_type_id", 1)

    # ---- HTTP -------------------------------------------------------------------------------

    def routes(self) -> Iterable[Route]:
        entity = one_of("entity", ENTITIES[:-1])
        custom, parent = one_of("entity", CUSTOMIZABLE), one_of("parent", NOTED)
        return [
            Route("GET", f"/api/v4/{parent}/{{entity_id:[0-9]+}}/{NOTES}", self._list),
            Route("GET", "/oauth", self.oauth.authorize, guarded=False),
            Route("POST", "/oauth2/access_token", self.oauth.token, guarded=False),
            Route("GET", "/api/v4/account", self._account),
            Route("GET", "/api/v4/users", self._users),
            Route("GET", "/api/v4/users/{id}", self._user),
            Route("GET", f"/api/v4/{custom}/custom_fields", self._fields),
        ] + [
            route
            # the notes' first: /api/v4/{entity}/{id} would take /api/v4/<type>/notes too
            for path in (f"/api/v4/{parent}/{NOTES}", f"/api/v4/{entity}")
            for route in (
                Route("GET", path, self._list),
                Route("POST", path, self._add),
                Route("PATCH", path, self._change_many),
                Route("GET", path + "/{id}", self._get),
                Route("PATCH", path + "/{id}", self._change_one),
            )
        ]

    def _link(self, path: str, query: dict[str, str] | None = None) -> dict[str, str]:
        url = f"{self.base_url}{path}"
        if query:
            url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        return {"href": url}

    async def _account(self, request: web.Request, token: Token) -> web.Response:
        host = self.base_url.removeprefix("https://")
        answer = {
            "id": self.account_id,
            "name": self.name,
            "subdomain": host.split(".")[0],
            "current_user_id": token.subject,
            "currency": "USD",
            "country": "US",
            "_links": {"self": self._link("/api/v4/account")},
        }
        return web.json_response(answer)

    def _hal(self, request: web.Request, name: str, rows: list[dict[str, Any]]) -> web.Response:
        page, limit = _whole(request, "page", 1), _whole(request, "limit", 50)
        if not 1 <= limit <= MAX_LIMIT or page < 1:
            raise invalid(0, "limit", f"Limit must be between 1 and {MAX_LIMIT}")
        chosen = rows[(page - 1) * limit : page * limit]
        if not chosen:
            return web.Response(status=204)
        query = {k: v for k, v in request.query.items() if k != "page"}
        links = {"self": self._link(request.path, {**query, "page": str(page)})}
        if len(rows) > page * limit:
            links["next"] = self._link(request.path, {**query, "page": str(page + 1)})
        body = {"_page": page, "_links": links, "_embedded": {name: chosen}}
        return web.json_response(body, content_type="application/hal+json")

    async def _users(self, request: web.Request, token: Token) -> web.Response:
        return self._hal(request, "users", list(self.users.values()))

    async def _user(self, request: web.Request, token: Token) -> web.Response:
        user = (
            self.users.get(int(request.match_info["id"]))
            if request.match_info["id"].isdigit()
            else None
        )
        return web.json_response(user) if user else web.Response(status=204)

    async def _fields(self, request: web.Request, token: Token) -> web.Response:
        return self._hal(request, "custom_fields", self.custom_fields[request.match_info["entity"]])

    # ---- records ----------------------------------------------------------------------------

    def _shown(self, table: str, row: dict[str, Any]) -> dict[str, Any]:
        shown = {k: v for k, v in row.items() if not k.startswith(("cf_", "_"))}
        values = [
            {"field_id": int(k[3:]), "values": [{"value": v}]}
            for k, v in row.items()
            if k.startswith("cf_") and v is not None
        ]
        shown["custom_fields_values"] = values or None
        if table in CUSTOMIZABLE:
            companies = [{"id": c} for c in row.get("_links_to", ())]
            shown["_embedded"] = {"tags": [], "companies": companies}
        path = f"{row['_parent']}/{table}" if table == NOTES else table
        shown["_links"] = {"self": self._link(f"/api/v4/{path}/{row['id']}")}
        return shown

    def _row(self, request: web.Request, record_id: str) -> dict[str, Any] | None:
        """The record of the route's table, a note only under its own parent's type."""
        row = self.store[_table(request)].get(record_id) if record_id.isdigit() else None
        return row if row is None or row.get("_parent") == _parent(request) else None

    async def _list(self, request: web.Request, token: Token) -> web.Response:
        table, query, parent = _table(request), request.query, _parent(request)
        rows = [r for r in self.store[table].values() if r.get("_parent") == parent]
        if "entity_id" in request.match_info:  # one parent's notes
            rows = [r for r in rows if str(r["entity_id"]) == request.match_info["entity_id"]]
        for key, wanted in query.items():
            if key in ("page", "limit", "with") or key.startswith("order["):
                continue
            rows = [
                r
                for r in rows
                if (_searched if key == "query" else _matches)(table, key, wanted, r)
            ]
        sorts = [(k[6:-1], v) for k, v in query.items() if k.startswith("order[")]
        for column, direction in sorts:
            orders = ORDERS.get(table, ("id", "created_at", "updated_at"))
            if column not in orders or direction not in ("asc", "desc"):
                raise invalid(0, f"order[{column}]", "This value is not valid.")
        keys = [Sort(c, descending=d == "desc") for c, d in sorts] or [Sort("id")]
        shown = [self._shown(table, r) for r in order(rows, *keys)]
        return self._hal(request, table, shown)

    async def _get(self, request: web.Request, token: Token) -> web.Response:
        table = _table(request)
        row = self._row(request, request.match_info["id"])
        if row is None:
            return web.Response(status=204)  # amo's answer for a record it has not
        return web.json_response(self._shown(table, row), content_type="application/hal+json")

    def _check(
        self, table: str, values: Any, index: int, creating: bool, parent: str | None = None
    ) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise invalid(index, "", "This value should be of type array.")
        clean: dict[str, Any] = {}
        for key, value in values.items():
            if key == "custom_fields_values" and table in CUSTOMIZABLE:
                clean |= self._custom(table, value, index)
                continue
            if key not in WRITABLE[table]:
                continue  # read-only and unknown fields are ignored
            if key == "_embedded":
                companies = value.get("companies") if isinstance(value, dict) else None
                ids = [c.get("id") for c in companies or () if isinstance(c, dict)]
                for company in ids:
                    if str(company) not in self.store["companies"]:
                        raise invalid(
                            index, "_embedded.companies.0.id", "Company not found", "NotFound"
                        )
                clean["_links_to"] = ids
            elif key in INTEGERS and (isinstance(value, bool) or not isinstance(value, int)):
                raise invalid(index, key, "This value should be of type int.")
            elif key == "params":
                text = value.get("text") if isinstance(value, dict) else None
                if not isinstance(text, str) or not text:
                    raise invalid(
                        index, "params.text", "This value should not be blank.", "NotBlank"
                    )
                clean[key] = {"text": text}
            elif key == "note_type" and value not in NOTE_TYPES:
                raise invalid(index, key, "The value you selected is not a valid choice.")
            elif key not in INTEGERS and key != "is_completed" and not isinstance(value, str):
                raise invalid(index, key, "This value should be of type string.")
            else:
                clean[key] = value
        if table == NOTES and "entity_id" in clean and parent is not None:
            if str(clean["entity_id"]) not in self.store[parent]:
                raise invalid(index, "entity_id", "Entity not found", "NotFound")
        for key in REQUIRED.get(table, ()) if creating else ():
            if clean.get(key) in (None, ""):
                raise invalid(index, key, "This value should not be blank.", "NotBlank")
        return clean

    @staticmethod
    def _named(table: str, clean: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
        """A contact's name is its first and last names joined; a name alone is its first name
        (developers.kommo.com's contact: name "Sam", first_name "Sam", last_name "")."""
        if table != "contacts":
            return clean
        if "first_name" in clean or "last_name" in clean:
            halves = (clean.get(k, row.get(k)) for k in ("first_name", "last_name"))
            clean["name"] = " ".join(h for h in halves if h)
        elif "name" in clean:
            clean |= {"first_name": clean["name"], "last_name": ""}
        return clean

    def _custom(self, table: str, value: Any, index: int) -> dict[str, Any]:
        known = {f["id"] for f in self.custom_fields[table]}
        clean: dict[str, Any] = {}
        for n, entry in enumerate(value or ()):
            field_id = entry.get("field_id") if isinstance(entry, dict) else None
            if field_id not in known:
                raise invalid(
                    index,
                    f"custom_fields_values.{n}.field_id",
                    "The value you selected is not a valid choice.",
                    "NotSupportedChoice",
                )
            found = entry.get("values") or [{}]
            clean[f"cf_{field_id}"] = found[0].get("value") if isinstance(found[0], dict) else None
        return clean

    def _create(
        self, table: str, values: Any, index: int, user: int, parent: str | None = None
    ) -> dict[str, Any]:
        clean = self._named(table, self._check(table, values, index, True, parent), {})
        made = {**clean, "created_by": user, "updated_by": user}
        return self.store.insert(table, made | ({"_parent": parent} if parent else {}))

    async def _add(self, request: web.Request, token: Token) -> web.Response:
        table, parent = _table(request), _parent(request)
        items = await self._items(request)
        checked = [
            self._named(table, self._check(table, item, n, True, parent), {})
            for n, item in enumerate(items)
        ]
        user = {"created_by": token.subject, "updated_by": token.subject}
        made = [
            self.store.insert(table, {**c, **user} | ({"_parent": parent} if parent else {}))
            for c in checked
        ]  # every item checked before any is made: a refused request makes none
        shown = [
            {"id": r["id"], "request_id": str(n), "_links": self._shown(table, r)["_links"]}
            for n, r in enumerate(made)
        ]
        return web.json_response(
            {"_links": {"self": self._link(request.path)}, "_embedded": {table: shown}}
        )

    async def _change_many(self, request: web.Request, token: Token) -> web.Response:
        table = _table(request)
        items = await self._items(request)
        return self._change(request, table, items, token)

    async def _change_one(self, request: web.Request, token: Token) -> web.Response:
        table = _table(request)
        item = await json_body(request, lambda m: problem(400, "Bad Request", m))
        if not isinstance(item, dict):
            raise invalid(0, "", "This value should be of type array.")
        answer = self._change(
            request, table, [{**item, "id": _int(request.match_info["id"])}], token, one=True
        )
        return answer

    def _change(
        self, request: web.Request, table: str, items: list[Any], token: Token, one: bool = False
    ) -> web.Response:
        pairs = []
        for n, item in enumerate(items):
            row = self._row(request, str(item.get("id"))) if isinstance(item, dict) else None
            if row is None:
                if one:
                    raise problem(404, "Not Found", "Not Found")
                raise invalid(n, "id", "Entity not found", "NotFound")
            checked = self._check(table, item, n, False, _parent(request))
            pairs.append((row, self._named(table, checked, row)))
        for row, changes in pairs:
            self.store.change(table, row, {**changes, "updated_by": token.subject})
        shown = [
            {"id": r["id"], "updated_at": r["updated_at"], "request_id": str(n)}
            for n, (r, _) in enumerate(pairs)
        ]
        if one:
            return web.json_response(shown[0])
        return web.json_response(
            {"_links": {"self": self._link(request.path)}, "_embedded": {table: shown}}
        )

    async def _items(self, request: web.Request) -> list[Any]:
        items = await json_body(request, lambda m: problem(400, "Bad Request", m))
        if not isinstance(items, list) or not items:
            raise invalid(0, "", "This value should not be blank.", "NotBlank")
        if len(items) > MAX_LIMIT:
            raise invalid(0, "", f"This collection should contain {MAX_LIMIT} elements or less.")
        return items


def _table(request: web.Request) -> str:
    """The entity a route serves: named in its path, or notes (of the type ``_parent`` names)."""
    return request.match_info.get("entity") or NOTES


def _parent(request: web.Request) -> str | None:
    """The type whose notes a notes route serves (None: not a notes route)."""
    return request.match_info.get("parent")


def _whole(request: web.Request, name: str, default: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit():
        raise invalid(0, name, "This value should be of type int.")
    return int(text)


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _searched(table: str, key: str, wanted: str, row: dict[str, Any]) -> bool:
    """``query``: the search "through the filled fields of the entity" (any case, any part)."""
    text = wanted.casefold()
    return any(isinstance(v, str) and text in v.casefold() for v in row.values())


def _matches(table: str, key: str, wanted: str, row: dict[str, Any]) -> bool:
    """One ``filter[...]`` parameter: ``filter[id]``, ``filter[name]`` (whole, any case),
    ``filter[<date>][from|to]`` (Unix seconds), ``filter[<id field>]``."""
    parts = key.removeprefix("filter[").rstrip("]").split("][")
    if not key.startswith("filter[") or not parts[0]:
        raise invalid(0, key, "This field was not expected.", "UnexpectedField")
    column = parts[0]
    if column in RANGES.get(table, ("created_at", "updated_at")) and len(parts) == 2:
        if not wanted.isdigit() or parts[1] not in ("from", "to"):
            raise invalid(0, key, "This value should be of type int.")
        have = int(row.get(column) or 0)
        return have >= int(wanted) if parts[1] == "from" else have <= int(wanted)
    if column == "name" and table in CUSTOMIZABLE:  # contacts, companies, leads
        return str(row.get("name") or "").casefold() == wanted.casefold()
    if column in ("id", "responsible_user_id", "entity_id", "created_by", "updated_by"):
        return str(row.get(column)) == wanted
    raise invalid(0, key, "This field was not expected.", "UnexpectedField")


def platform_overrides(base_url: str) -> dict[str, dict[str, Any]]:
    """CRMGATE_PLATFORM_OVERRIDES that point AmoCRM at a simulator running at ``base_url`` (it
    plays both www.kommo.com's OAuth page and the account's host)."""
    return overrides(
        "AmoCRM", base_url, {"authorize_url": "/oauth", "token_url": "/oauth2/access_token"}
    )


def seed_amocrm(sim: AmoSimulator) -> None:
    """A small Kommo account: companies with their contacts, leads (deals) and tasks."""
    tier = sim.add_custom_field("companies", "Tier", "select")
    sim.add_custom_field("contacts", "Position", "text")
    for n, (company, (first, last), price) in enumerate(
        (
            ("Northwind Traders", ("Nancy", "Davolio"), 12_000),
            ("Contoso", ("Janet", "Leverling"), 45_000),
            ("Fabrikam Farms", ("Steven", "Buchanan"), 8_000),
        )
    ):
        person = f"{first} {last}"
        values = [{"field_id": tier, "values": [{"value": "Gold" if n else "Silver"}]}]
        made = sim.insert("companies", {"name": company, "custom_fields_values": values})
        linked = {"_embedded": {"companies": [{"id": int(made)}]}}
        contact = sim.insert("contacts", {"first_name": first, "last_name": last, **linked})
        sim.insert("leads", {"name": f"{company.split()[0]} deal", "price": price, **linked})
        due = int(time.time()) + 86_400 * (n + 1)
        sim.insert(
            "tasks",
            {
                "text": f"Call {person}",
                "complete_till": due,
                "entity_id": int(contact),
                "entity_type": "contacts",
            },
        )
